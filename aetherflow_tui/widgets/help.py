"""`?`: every binding of the cockpit, with its key and what it does."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss_help", "Close", id="help.close",
                        tooltip="Close the help")]

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog", classes="dialog"):
            yield Label("Keys — esc closes · ctrl+p finds any action by name",
                        classes="dialog-title")
            yield DataTable(id="help-table", cursor_type="row", show_cursor=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("key", "action", "what it does")
        for key, description, tooltip in self.rows:
            table.add_row(Text(key, style="bold"), Text(description), Text(tooltip, style="dim"))

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
