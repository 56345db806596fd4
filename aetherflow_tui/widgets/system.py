"""The machine as the regulator sees it: its state, the last samples as sparklines, the
figures now, and the last decision with its reasoning and actions.

The pane keeps its own history from the engine's events (seeded from the regulator's when
it is already running), so it shows exactly what was published. Repaints are coalesced:
a burst of events (a sample, then the decision it caused) is one repaint, and none while
a dialog covers the screen. Reasoning and actions are shown literally.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult, ScreenStackError
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Sparkline, Static

from ..engine.events import DispatchHoldChanged, RegulatorDecided, SystemSampled
from ..engine.regulator import SystemSample, SystemState
from ..engine.views import SystemView
from ..engine.vigilance import HISTORY, MIN_ERROR_CALLS, RegulatorDecision
from ..formatting import ago, percent
from ..palette import SYSTEM as STATE_STYLE
from ..palette import SYSTEM_BADGE as BADGE_STYLE
from ..routing import handles
from .pane import Pane
from .safe import literal

HELD_STYLE = "bold white on red"
NOT_RUNNING = "regulator not running"
NO_TEMPERATURE = "temperature: not reported by this OS"
# (id, label, sample field, unit) of each sparkline row.
SPARKS = (("cpu", "CPU", "cpu_pct", "%"), ("ram", "RAM", "memory_pct", "%"),
          ("temp", "temp", "temperature_c", " °C"))


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def badge(state: SystemState | None, held: str | None, *, running: bool) -> Text:
    """The state as a coloured badge; DISPATCH HELD beside it, with why, when held."""
    # Styles go on the spans, not the Text: a base style would colour what follows too.
    text = Text()
    if state is not None:
        text.append(f" {state.value.upper()} ", style=BADGE_STYLE[state])
    else:
        text.append("waiting for the first sample" if running else NOT_RUNNING,
                    style="italic")
    if held is not None:
        text.append("  ")
        text.append(" DISPATCH HELD ", style=HELD_STYLE)
        text.append("\n")
        text.append_text(literal(held, limit=80, style="red"))
        text.append(" · R resumes", style="dim")
    if state is None and not running:
        text.append("\nno machine figures until it runs", style="dim")
    return text


def figures(sample: SystemSample) -> Text:
    """The latest reading: the machine's line, then the engine's; — where none was taken."""
    machine: list[tuple[str, str]] = [("CPU", percent(sample.cpu_pct))]
    if sample.load_per_core is not None:
        machine.append(("load", f"{sample.load_per_core:.2f}/core"))
    machine += [("memory", percent(sample.memory_pct)), ("swap", percent(sample.swap_pct))]
    if sample.battery_pct is not None:
        where = " on battery" if sample.on_battery else ""
        machine.append(("battery", f"{sample.battery_pct:.0f}%{where}"))
    engine = [("loop lag", "—" if sample.loop_lag_ms is None
               else f"{sample.loop_lag_ms:.0f} ms"),
              ("errors", f"— (under {MIN_ERROR_CALLS} calls this minute)"
               if sample.error_rate_pct is None
               else f"{sample.error_rate_pct:.1f}%")]
    if sample.latency_p50_s is not None:
        engine.append(("p50", f"{sample.latency_p50_s * 1000:.0f} ms"
                       if sample.latency_p50_s < 1 else f"{sample.latency_p50_s:.1f} s"))
    text = Text()
    for line, parts in enumerate((machine, engine)):
        if line:
            text.append("\n")
        for index, (label, value) in enumerate(parts):
            if index:
                text.append(" · ", style="dim")
            text.append(f"{label} ", style="bold")
            text.append(value)
    return text


def compact(state: SystemState | None, held: str | None, sample: SystemSample | None,
            *, running: bool) -> Text:
    """One line for the narrow layout: the badge and the three figures that matter most."""
    text = badge(state, None, running=running).split("\n")[0]
    if held is not None:
        text.append(" ")
        text.append(" HELD ", style=HELD_STYLE)
    if sample is not None:
        text.append(f" CPU {percent(sample.cpu_pct)} RAM {percent(sample.memory_pct)}")
        if sample.loop_lag_ms is not None:
            text.append(f" lag {sample.loop_lag_ms:.0f} ms")
    return text


def decision_text(decision: RegulatorDecision, now: float) -> Text:
    """When, what, how sure; then why and what was done, literally."""
    when = datetime.fromtimestamp(decision.ts).strftime("%H:%M:%S")
    text = Text.assemble(("last decision ", "bold"), f"at {when} ({ago(now - decision.ts)})")
    if decision.manual:
        text.append(" · forced by the operator", style="dim")
    text.append("\n")
    text.append(decision.state.value.upper(), style=STATE_STYLE[decision.state])
    if decision.previous is not decision.state:
        text.append(f" from {decision.previous.value.upper()}", style="dim")
    text.append(f" · confidence {decision.confidence:.0%}\n")
    text.append_text(literal(decision.reasoning, limit=400))
    for action in decision.actions:
        text.append("\n→ ", style="dim")
        text.append_text(literal(action, limit=160))
    return text


class SystemPane(Pane):
    can_focus = True  # nothing inside takes the focus; 5 and z act on the pane itself
    # On a short screen the last decision runs past the pane's bottom: it scrolls.
    BINDINGS = [
        Binding("up", "scroll_up", "Scroll up", show=False, id="system.scroll_up",
                tooltip="Scroll the system pane up"),
        Binding("down", "scroll_down", "Scroll down", show=False, id="system.scroll_down",
                tooltip="Scroll the system pane down"),
        Binding("pageup", "page_up", "Page up", show=False, id="system.page_up",
                tooltip="Scroll the system pane up a page"),
        Binding("pagedown", "page_down", "Page down", show=False, id="system.page_down",
                tooltip="Scroll the system pane down a page"),
    ]

    def __init__(self, system: Callable[[], SystemView], now: Callable[[], float], *,
                 starting: bool = False, **kwargs: object) -> None:
        """system: the regulator's view now; now: the engine's clock; starting: the
        cockpit starts the vigilance just after its first frame."""
        super().__init__("System", 5, **kwargs)
        self._system = system
        self._now = now
        self.starting = starting
        self.samples: deque[SystemSample] = deque(maxlen=HISTORY)
        self.decision: RegulatorDecision | None = None
        self.repaints = 0
        self._dirty = False

    def compose(self) -> ComposeResult:
        yield Static(id="system-compact")
        yield Static(id="system-badge")
        with Vertical(id="system-full"):
            for key, label, _, _ in SPARKS:
                with Horizontal(classes="sparks", id=f"{key}-row"):
                    yield Label(label, classes="system-label", id=f"{key}-label")
                    yield Sparkline([], id=f"{key}-spark", summary_function=max)
                    yield Label("", classes="spark-range", id=f"{key}-range")
            yield Static(Text(NO_TEMPERATURE, style="dim"), id="temp-missing")
            yield Static(id="system-figures")
            yield Static(id="system-decision")

    def on_mount(self) -> None:
        view = self._system()
        if view.running:
            self.samples.extend(view.samples)
            self.decision = view.decision
        self.repaint()

    # -- events in -------------------------------------------------------------------------

    @handles(SystemSampled)
    def sampled(self, event: SystemSampled) -> None:
        self.samples.append(event.sample)
        self._mark()

    @handles(RegulatorDecided)
    def decided(self, event: RegulatorDecided) -> None:
        self.decision = event.decision
        self._mark()

    @handles(DispatchHoldChanged)
    def hold_changed(self, event: DispatchHoldChanged) -> None:
        self._mark()

    def watch_started(self) -> None:
        self.starting = False
        self._mark()

    def _mark(self) -> None:
        if not self._dirty:
            self._dirty = True
            self.call_after_refresh(self.flush)

    def flush(self) -> None:
        """Repaint if something changed, unless a dialog covers the screen (the cockpit's
        tick calls this again, so the pane catches up once the dialog closes)."""
        if not self._dirty:
            return
        try:
            if isinstance(self.app.screen, ModalScreen):
                return
        except ScreenStackError:
            return
        self._dirty = False
        self.repaint()

    # -- painting --------------------------------------------------------------------------

    @property
    def state(self) -> SystemState | None:
        return self._state(self._system())

    def _state(self, view: SystemView) -> SystemState | None:
        if self.decision is not None:
            return self.decision.state
        return view.state if self.samples else None  # None too when it does not run

    def repaint(self) -> None:
        self.repaints += 1
        view = self._system()
        if view.decision is not None and (
                self.decision is None or view.decision.ts >= self.decision.ts):
            self.decision = view.decision
        running = view.running or self.starting
        held = view.held
        sample = self.samples[-1] if self.samples else None
        state = self._state(view)
        self.query_one("#system-badge", Static).update(badge(state, held, running=running))
        self.query_one("#system-compact", Static).update(
            compact(state, held, sample, running=running))
        # A class, not `display`: the narrow layout's CSS hides this part too.
        self.set_class(sample is None and self.decision is None, "-empty")
        if sample is None:
            self.border_subtitle = ""
        else:
            span = sample.ts - self.samples[0].ts
            self.border_subtitle = (f"last {len(self.samples)} samples · {_span(span)}"
                                    if len(self.samples) > 1 else "1 sample")
        self._paint_sparks()
        self.query_one("#system-figures", Static).update(
            figures(sample) if sample is not None else "")
        self.query_one("#system-decision", Static).update(
            decision_text(self.decision, self._now())
            if self.decision is not None
            else Text("no decision yet" if running else "", style="dim"))

    def _paint_sparks(self) -> None:
        for key, label, field, unit in SPARKS:
            values = [v for s in self.samples if (v := getattr(s, field)) is not None]
            row = self.query_one(f"#{key}-row")
            if key == "temp":
                row.display = bool(values)
                self.query_one("#temp-missing").display = bool(self.samples) and not values
            self.query_one(f"#{key}-spark", Sparkline).data = values
            now = getattr(self.samples[-1], field) if self.samples else None
            shown = "—" if now is None else f"{now:.0f}{unit}"
            self.query_one(f"#{key}-label", Label).update(Text(f"{label} {shown}"))
            low, high = (f"{min(values):.0f}", f"{max(values):.0f}") if values else ("", "")
            # The sparkline spans its own min to max: say what that range is, if any.
            self.query_one(f"#{key}-range", Label).update(Text(
                f"{low}–{high}{unit}" if low != high else ""))
