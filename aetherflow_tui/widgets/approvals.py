"""Pending approvals: what would change, why, and y or n."""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from ..engine.approvals import Approval
from ..requests import Ask, Decide, LoadApprovals
from .safe import literal


class ApprovalsScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("y", "decide(True)", "Approve", id="approvals.approve",
                tooltip="Approve the selected change"),
        Binding("n", "decide(False)", "Reject", id="approvals.reject",
                tooltip="Reject the selected change"),
        Binding("escape", "dismiss_screen", "Back", id="approvals.back",
                tooltip="Back to the cockpit"),
    ]

    def __init__(self, ask: Ask) -> None:
        super().__init__()
        self.ask = ask
        self._approvals: dict[str, Approval] = {}
        self._loaded = asyncio.Event()  # set once the table shows the queue

    def compose(self) -> ComposeResult:
        with Vertical(id="approvals-dialog", classes="dialog"):
            yield Label("Pending approvals", classes="dialog-title")
            yield DataTable(id="approvals-table", cursor_type="row")
            yield Static(id="approval-detail")
            yield Static(id="approvals-status")
            yield Static(Text("y approve · n reject · esc back", style="dim"),
                         classes="dialog-keys")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in (("id", "#"), ("kind", "kind"), ("summary", "summary")):
            table.add_column(label, key=key)
        self.reload()

    def reload(self) -> None:
        self.ask(LoadApprovals(), self)

    def show(self, pending: list[Approval]) -> None:
        """The app's answer to LoadApprovals: the queue as it stands."""
        table = self.query_one(DataTable)
        table.clear()
        self._approvals = {str(a.id): a for a in pending}
        for approval in pending:
            table.add_row(Text(str(approval.id)), Text(approval.kind.replace("_", " ")),
                          literal(approval.summary, 70), key=str(approval.id))
        self._show_detail()
        status = self.query_one("#approvals-status", Static)
        status.update(Text("" if pending else "nothing waiting for you", style="dim"))
        self._loaded.set()

    def on_data_table_row_highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        """Evidence and proposed action of the highlighted item, in full, below the list."""
        table = self.query_one(DataTable)
        detail = self.query_one("#approval-detail", Static)
        if not table.row_count:
            detail.update("")
            return
        row_key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        approval = self._approvals.get(str(row_key.value))
        if approval is None:
            return
        # A veille report is several facts, one a line; each line is untrusted and capped.
        evidence = Text("\n          ").join(
            literal(line, 200) for line in approval.evidence.splitlines()[:12])
        text = Text.assemble(("evidence  ", "bold"), evidence,
                             "\n", ("proposed  ", "bold"),
                             literal(approval.proposed_action, 200))
        detail.update(text)

    @work(exclusive=True, group="approvals-wait")
    async def action_decide(self, approve: bool) -> None:
        await self._loaded.wait()  # a y typed right after a must not see an empty table
        table = self.query_one(DataTable)
        status = self.query_one("#approvals-status", Static)
        if not table.row_count:
            status.update(Text("nothing to decide", style="yellow"))
            return
        row_key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        approval = self._approvals[str(row_key.value)]
        self.ask(Decide(approval.id, approve), self)

    def decided(self) -> None:
        self._loaded.clear()
        self.reload()

    def refused(self, message: str) -> None:
        self.query_one("#approvals-status", Static).update(literal(message, style="red"))

    def action_dismiss_screen(self) -> None:
        self.dismiss(None)
