"""Start a plan from the cockpit: its path and the mode, checked before anything runs.

The dialog asks the app for a RunPlan; an invalid plan keeps it open with the checker's
one-line message, so the operator fixes the file and presses enter again; a started run
dismisses it with the request.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select, Static

from ..requests import Ask, RunPlan
from .safe import literal

MODES = (("build: each step type's rule", "build"), ("fast: fastest healthy provider", "fast"),
         ("double-check: a second provider audits each result", "double-check"))


class RunPlanModal(ModalScreen[RunPlan | None]):
    BINDINGS = [
        Binding("escape", "dismiss_modal", "Close", id="run_modal.close",
                tooltip="Close without starting anything"),
    ]

    def __init__(self, ask: Ask, mode: str, last_path: str = "") -> None:
        """mode: the one selected at first (the bouquet's routing mode)."""
        super().__init__()
        self.ask = ask
        self.mode = mode
        self.last_path = last_path

    def compose(self) -> ComposeResult:
        with Vertical(id="run-dialog", classes="dialog"):
            yield Label("Run a plan", classes="dialog-title")
            yield Input(value=self.last_path, placeholder="path to plan.json",
                        id="plan-path")
            yield Select(MODES, value=self.mode, allow_blank=False,
                         id="plan-mode")
            yield Static(id="run-status")
            yield Static(Text("enter run · tab mode · esc close", style="dim"),
                         classes="dialog-keys")

    def on_mount(self) -> None:
        self.query_one("#plan-path", Input).focus()

    @on(Input.Submitted, "#plan-path")
    def submitted(self) -> None:
        path = self.query_one("#plan-path", Input).value.strip()
        if not path:
            self._status(Text("give the path of a plan.json", style="red"))
            return
        mode = self.query_one("#plan-mode", Select).value
        self._status(Text("checking the plan...", style="dim"))
        self.ask(RunPlan(Path(path), str(mode)), self)

    def refused(self, message: str) -> None:
        self._status(literal(message, limit=400, style="red"))

    def _status(self, text: Text) -> None:
        self.query_one("#run-status", Static).update(text)

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)
