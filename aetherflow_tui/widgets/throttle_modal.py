"""The emergency throttle: at most N calls in flight, over the regulator's cap; empty lifts.

A bad number keeps the dialog open with the reason, so the operator types it again.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from ..engine import Engine
from ..engine.errors import OperatorError
from ..engine.views import ControlView
from .safe import literal


def current(control: ControlView) -> Text:
    cap = control.manual_cap
    mine = f"your throttle: {cap}" if cap is not None else "no throttle of yours"
    return Text(f"now: at most {control.concurrency} call(s) in flight · {mine}",
                style="dim")


class ThrottleModal(ModalScreen[str | None]):
    """Dismissed with what the engine did (for a notification), or None when closed."""

    BINDINGS = [
        Binding("escape", "dismiss_modal", "Close", id="throttle_modal.close",
                tooltip="Close without changing the throttle"),
    ]

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine

    def compose(self) -> ComposeResult:
        with Vertical(id="throttle-dialog", classes="dialog"):
            yield Label("Emergency throttle", classes="dialog-title")
            yield Static(current(self.engine.control_view()))
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
            if self.engine.control_view().manual_cap is None:
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
        try:
            done = self.engine.emergency_throttle(limit)
        except OperatorError as exc:
            self._status(literal(str(exc), limit=200, style="red"))
            return
        self.dismiss(done)

    def _status(self, text: Text) -> None:
        self.query_one("#throttle-status", Static).update(text)

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)
