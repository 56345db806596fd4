"""The step monitor: the current run's steps live, its progress and ETA.

One keyed row per step; a cell is repainted only when its text changes. Running steps'
elapsed time moves with the cockpit's one-second tick. Provider text (errors, routing
reasons) is shown literally.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, ProgressBar, Static

from ..engine.events import RunUpdated, StepUpdated
from ..engine.progress import RunStatus, RunView, StepState, StepView
from ..formatting import usd
from ..palette import STEP as STATE_STYLE
from ..palette import run_style
from ..routing import handles
from .pane import Pane
from .providers import same_look
from .safe import literal

COLUMNS = (("state", ""), ("step", "step"), ("who", "provider/model"), ("elapsed", "elapsed"),
           ("tokens", "tokens"), ("cost", "cost"), ("ttft", "TTFT"))
IDLE = "no run yet · press r to run a plan"


def headline(run: RunView) -> Text:
    finished = run.done + run.failed + run.skipped
    style = run_style(run.status)
    text = literal(run.task_id, limit=80, style=style)  # plan text: untrusted
    text.append(f" · {run.mode} · {finished}/{run.total}")
    if run.running:
        text.append(f" · {run.running} running", style="cyan")
    if run.failed:
        text.append(f" · {run.failed} failed", style="red")
    if run.skipped:
        text.append(f" · {run.skipped} skipped", style="dark_orange")
    text.append(f" · {usd(run.usd)}")
    if run.status is RunStatus.RUNNING:
        text.append(f" · ETA {_duration(run.eta_s)}" if run.eta_s is not None else " · ETA —")
    else:
        text.append(f" · {run.status.value}", style=style)
    return text


def cells(step: StepView, now: float) -> dict[str, Text]:
    style = STATE_STYLE[step.state]
    elapsed = step.elapsed(now)
    return {
        "state": Text(step.state.glyph, style=style),
        "step": Text(step.step_id, style=style),
        "who": Text("waiting for budget", style=style) if step.state is StepState.WAITING
        else literal(f"{step.provider}/{step.model}" if step.provider else "", limit=40),
        "elapsed": Text(_duration(elapsed) if elapsed is not None else "", justify="right"),
        "tokens": Text(f"{step.input_tokens}→{step.output_tokens}" if step.attempts else "",
                       justify="right"),
        "cost": Text(usd(step.usd) if step.attempts else "", justify="right"),
        "ttft": Text(f"{step.ttft_s * 1000:.0f} ms" if step.ttft_s is not None else "",
                     justify="right"),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


class StepTable(DataTable[Text]):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self.steps: dict[str, StepView] = {}
        self._shown: dict[str, dict[str, Text]] = {}
        self.repaints = 0

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def reset(self) -> None:
        self.clear()
        self.steps.clear()
        self._shown.clear()

    def show(self, step: StepView, now: float) -> None:
        self.steps[step.step_id] = step
        new = cells(step, now)
        old = self._shown.get(step.step_id)
        if old is None:
            self.add_row(*(new[k] for k, _ in COLUMNS), key=step.step_id)
        else:
            for key, _ in COLUMNS:
                if not same_look(old[key], new[key]):
                    self.update_cell(step.step_id, key, new[key], update_width=True)
                    self.repaints += 1
        self._shown[step.step_id] = new

    def tick(self, now: float) -> None:
        for step in self.steps.values():
            if step.state in (StepState.RUNNING, StepState.WAITING):
                self.show(step, now)

    @property
    def selected(self) -> StepView | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return self.steps.get(key or "")


class StepsPane(Pane):
    """now: the engine's clock, for the running steps' elapsed time."""

    def __init__(self, now: Callable[[], float], **kwargs: object) -> None:
        super().__init__("Steps", 2, **kwargs)
        self.run: RunView | None = None
        self._now = now

    def compose(self) -> ComposeResult:
        yield Static(Text(IDLE, style="dim"), id="run-headline")
        yield ProgressBar(total=1, show_eta=False, show_percentage=True, id="run-progress")
        yield StepTable(id="step-table")
        yield Static(id="step-detail")

    @property
    def table(self) -> StepTable:
        return self.query_one(StepTable)

    def show_run(self, run: RunView) -> None:
        if self.run is None or self.run.run_id != run.run_id:
            self.table.reset()
        self.run = run
        self.border_subtitle = f"run {run.run_id}"
        self.query_one("#run-headline", Static).update(headline(run))
        bar = self.query_one("#run-progress", ProgressBar)
        bar.update(total=max(1, run.total), progress=run.done + run.failed + run.skipped)

    def show_step(self, run_id: str, step: StepView, now: float) -> None:
        if self.run is None or self.run.run_id != run_id:
            return
        self.table.show(step, now)
        selected = self.table.selected
        if selected is not None and selected.step_id == step.step_id:
            self.refresh_detail()

    def tick(self, now: float) -> None:
        self.table.tick(now)

    # -- events in -------------------------------------------------------------------------

    @handles(RunUpdated)
    def run_updated(self, event: RunUpdated) -> None:
        run, shown = event.run, self.run
        # A run that is not the one on screen takes over only if it is newer.
        if shown is None or shown.run_id == run.run_id or run.started >= shown.started:
            self.show_run(run)

    @handles(StepUpdated)
    def step_updated(self, event: StepUpdated) -> None:
        self.show_step(event.run_id, event.step, self._now())

    def on_data_table_row_highlighted(self) -> None:
        self.refresh_detail()

    def refresh_detail(self) -> None:
        step = self.table.selected
        detail = self.query_one("#step-detail", Static)
        if step is None:
            detail.update("")
            return
        text = Text(f"{step.step_id}: ", style="bold")
        note = step.error or step.flag or step.reason or step.state.value
        style = "red" if step.error else "dark_orange" if step.flag else "dim"
        text.append_text(literal(note, limit=300, style=style))
        detail.update(text)
