"""Start a plan from the cockpit: its path and the mode, checked before anything runs.

An invalid plan keeps the dialog open with the checker's one-line message, so the
operator fixes the file and presses enter again.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select, Static

from ..engine import Engine, PlanRun
from ..engine.errors import OperatorError
from .safe import literal

MODES = (("build: each step type's rule", "build"), ("fast: fastest healthy provider", "fast"),
         ("double-check: a second provider audits each result", "double-check"))


class RunPlanModal(ModalScreen[PlanRun | None]):
    BINDINGS = [
        Binding("escape", "dismiss_modal", "Close", id="run_modal.close",
                tooltip="Close without starting anything"),
    ]

    def __init__(self, engine: Engine, last_path: str = "") -> None:
        super().__init__()
        self.engine = engine
        self.last_path = last_path

    def compose(self) -> ComposeResult:
        with Vertical(id="run-dialog", classes="dialog"):
            yield Label("Run a plan", classes="dialog-title")
            yield Input(value=self.last_path, placeholder="path to plan.json",
                        id="plan-path")
            yield Select(MODES, value=self.engine.bouquet.routing.mode, allow_blank=False,
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
        self.start(path)

    @work(exclusive=True, group="run-plan")
    async def start(self, path: str) -> None:
        mode = self.query_one("#plan-mode", Select).value
        self._status(Text("checking the plan...", style="dim"))
        try:
            run = await self.engine.start_run(Path(path), mode=str(mode))
        except OperatorError as exc:
            self._status(literal(str(exc), limit=400, style="red"))
            return
        self.dismiss(run)

    def _status(self, text: Text) -> None:
        self.query_one("#run-status", Static).update(text)

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)
