"""The emergency throttle: at most N calls in flight, over the regulator's cap; empty lifts.

The dialog asks the app for a Throttle; a bad number keeps it open with the reason, so
the operator types it again; a throttle applied dismisses it with the request.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from ..engine.views import ControlView
from ..requests import Ask, Throttle
from .safe import literal


def current(control: ControlView) -> Text:
    cap = control.manual_cap
    mine = f"your throttle: {cap}" if cap is not None else "no throttle of yours"
    return Text(f"now: at most {control.concurrency} call(s) in flight · {mine}",
                style="dim")


class ThrottleModal(ModalScreen[Throttle | None]):
    """Dismissed with the throttle once applied (the engine's alert says what it did), or
    None when closed."""

    BINDINGS = [
        Binding("escape", "dismiss_modal", "Close", id="throttle_modal.close",
                tooltip="Close without changing the throttle"),
    ]

    def __init__(self, control: ControlView, ask: Ask) -> None:
        """control: the controls as the dialog opens."""
        super().__init__()
        self.control = control
        self.ask = ask

    def compose(self) -> ComposeResult:
        with Vertical(id="throttle-dialog", classes="dialog"):
            yield Label("Emergency throttle", classes="dialog-title")
            yield Static(current(self.control))
            yield Input(placeholder="calls in flight: 1 or more; empty lifts it",
                        id="throttle-limit", restrict=r"[0-9a-z ]*")
            yield Static(id="throttle-status")
            yield Static(Text("enter apply · esc close", style="dim"), classes="dialog-keys")

    def on_mount(self) -> None:
        self.query_one("#throttle-limit", Input).focus()

    @on(Input.Submitted, "#throttle-limit")
    def submitted(self, event: Input.Submitted) -> None:
        typed = event.value.strip().lower()
        if typed in ("", "off"):
            if self.control.manual_cap is None:
                self._status(Text("there is no throttle to lift: type a number",
                                  style="yellow"))
                return
            limit = None
        else:
            try:
                limit = int(typed)
            except ValueError:
                self._status(Text("type a whole number of calls (at least 1), or leave it "
                                  "empty to lift the throttle", style="red"))
                return
        self.ask(Throttle(limit), self)

    def refused(self, message: str) -> None:
        self._status(literal(message, limit=200, style="red"))

    def _status(self, text: Text) -> None:
        self.query_one("#throttle-status", Static).update(text)

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)
