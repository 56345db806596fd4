"""The cockpit: five panes on the live engine, driven from the keyboard.

Handlers never do I/O: they call engine methods in workers, and the engine's events come
back through one subscription, posted as messages, to the pane that shows them (routing.py).
Panes and dialogs read view objects only; a dialog asks for what it wants done with a
request (requests.py), which the app carries out on the engine.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult, ScreenStackError, SystemCommand
from textual.binding import Binding
from textual.containers import Grid
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Header, Input

from .engine import Engine, PlanRun, ResponseMode
from .engine.approvals import OPPORTUNITY
from .engine.canary import probed_by_canary
from .engine.errors import ConfigError, OperatorError
from .engine.events import (
    AlertRaised,
    ApprovalDecided,
    ApprovalRequested,
    DispatchHoldChanged,
    Event,
    ResponseModeChanged,
)
from .engine.keys import REDACTOR
from .engine.text import excerpt, neutralise
from .request_handler import Requests
from .routing import Routes, handles
from .widgets.approvals import ApprovalsScreen
from .widgets.confirm import ConfirmScreen
from .widgets.cost import CostPane
from .widgets.help import HelpScreen
from .widgets.key_modal import KeyModal
from .widgets.pane import Pane
from .widgets.providers import ProvidersPane, ProviderTable, light
from .widgets.run_modal import RunPlanModal
from .widgets.steps import StepsPane
from .widgets.system import SystemPane
from .widgets.throttle_modal import ThrottleModal
from .widgets.veille import VeilleItemScreen, VeillePane

REFRESH_S = 1.0
SEVERITIES = ("information", "warning", "error")  # AlertRaised's, and Textual's
NARROW_BELOW = 120  # columns: below this the provider table takes the whole top row

BINDINGS = [
    Binding("k", "inject_key", "Key", id="inject_key",
            tooltip="Inject an API key for the selected provider, then test it"),
    Binding("t", "test_key", "Test", id="test_key",
            tooltip="Run the sandbox test again on the selected provider's key"),
    Binding("g", "acquire_key", "Get key", id="acquire_key",
            tooltip="Show the selected provider's key page and copy its URL (OSC 52)"),
    Binding("r", "run_plan", "Run plan", id="run_plan",
            tooltip="Start a plan.json: pick the file and the mode"),
    Binding("x", "cancel_run", "Cancel run", id="cancel_run",
            tooltip="Cancel the current run: in-flight calls are cut and recorded"),
    Binding("m", "cycle_mode", "Mode", id="cycle_mode",
            tooltip="Pin the response mode: auto → bouquet → hybrid → survival → auto"),
    Binding("z", "zoom", "Zoom", id="zoom",
            tooltip="Fill the screen with the focused pane; z again to go back"),
    Binding("a", "approvals", "Approvals", id="approvals",
            tooltip="Pending changes waiting for your y or n"),
    Binding("slash", "filter", "Filter", id="filter",
            tooltip="Filter the provider table by name or model"),
    Binding("o", "force_optimisation", "Optimise", id="force_optimisation", show=False,
            tooltip="Re-judge the machine now, lift your throttle, unload idle models"),
    Binding("h", "emergency_throttle", "Throttle", id="emergency_throttle", show=False,
            tooltip="Cap the calls in flight (over the regulator's cap); empty lifts it"),
    Binding("c", "reset_circuit", "Reset circuit", id="reset_circuit", show=False,
            tooltip="Close the selected provider's open circuit: traffic may go there again"),
    Binding("C", "reset_all_circuits", "Reset all circuits", id="reset_all_circuits",
            show=False, tooltip="Close every provider's circuit (asks first)"),
    Binding("exclamation_mark", "emergency_stop", "Emergency stop", id="emergency_stop",
            show=False, tooltip="Cancel every run and hold all dispatch until R (asks first)"),
    Binding("R", "resume_dispatch", "Resume", id="resume_dispatch", show=False,
            tooltip="Lift the emergency stop: dispatch may go again"),
    Binding("p", "probe_provider", "Probe", id="probe_provider", show=False,
            tooltip="Send the canary to the selected provider now and show the answer"),
    Binding("question_mark", "help", "Help", id="help", tooltip="Every key, on one screen"),
    Binding("q", "quit_cockpit", "Quit", id="quit",
            tooltip="Quit (asks first while calls are in flight)"),
    Binding("escape", "back", "Back", id="back", show=False,
            tooltip="Close the filter and return to the provider table"),
    *(Binding(str(n), f"focus_pane({n})", f"Pane {n}", id=f"focus_{n}", show=False,
              tooltip=f"Focus pane {n}") for n in range(1, 6)),
]
BINDING_IDS = frozenset(b.id for b in BINDINGS if b.id)


def check_keymap(keymap: dict[str, str]) -> None:
    unknown = sorted(set(keymap) - BINDING_IDS)
    if unknown:
        raise ConfigError(f"cockpit.keymap: unknown binding id {unknown[0]!r}",
                          fix=f"use one of: {', '.join(sorted(BINDING_IDS))}")


def write_crash_log(home: Path, text: str) -> Path:
    """The traceback in the data dir (the temp dir if that cannot be written)."""
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        home.mkdir(parents=True, exist_ok=True)
        path = home / name
        path.write_text(text, encoding="utf-8")
    except OSError:
        fd, where = tempfile.mkstemp(prefix="aetherflow-" + name[:-4], suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as log:
            log.write(text)
        path = Path(where)
    return path


class EngineEvent(Message):
    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class CockpitApp(App[None]):
    CSS_PATH = "styles/cockpit.tcss"
    TITLE = "Aetherflow"
    BINDINGS = BINDINGS
    # Under 120 columns the screen gets the -narrow class and the layout stacks (tcss).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW_BELOW, "-wide")]

    def __init__(self, engine: Engine, *, keymap: dict[str, str] | None = None,
                 start_watch: Callable[[], Awaitable[object]] | None = None) -> None:
        """start_watch: what starts the engine's background work (vigilance, veille), run
        once the first frame is on screen: the operator sees the cockpit before it."""
        super().__init__()
        self.engine = engine
        self.requests = Requests(self)  # what the dialogs ask for, done on the engine
        self._start_watch = start_watch
        self._keymap = dict(keymap or {})
        self._owns_engine = False
        self.events_seen = 0
        self._pump: asyncio.Task[None] | None = None
        self._last_plan_path = ""
        self.crash_log: Path | None = None  # where an unhandled exception's traceback went
        self.crash_report: str | None = None  # and the one line that says so

    def get_default_screen(self) -> Screen:
        # The breakpoint class from the start: set on the first resize instead, it restyles
        # every widget once more before the first frame.
        width = self.size.width
        return Screen(id="_default", classes=next(
            c for w, c in sorted(self.HORIZONTAL_BREAKPOINTS, reverse=True) if width >= w))

    def compose(self) -> ComposeResult:
        yield Header()
        now = self.engine.clock.now
        with Grid(id="panes"):
            yield ProvidersPane(self.engine.bouquet.providers, self.engine.provider_view,
                                id="providers")
            yield CostPane(id="cost")
            yield StepsPane(now, id="steps")
            yield SystemPane(self.engine.system_view, now, starting=self._start_watch is not None,
                             id="system")
            yield VeillePane(now, id="veille")
        yield Input(placeholder="filter providers (esc closes)", id="filter-input")
        yield Footer()

    async def on_mount(self) -> None:
        if not self.engine.started:  # started here, it lives and dies with the screen
            await self.engine.start()
            self._owns_engine = True
        if self._keymap:
            self.set_keymap(self._keymap)
        self.show_mode()
        self.query_one("#filter-input", Input).display = False
        self.query_one(ProviderTable).focus()
        # Each engine event to the pane that owns it; what is global, to the app.
        self.routes = Routes(*(self.query_one(pane) for pane in (
            ProvidersPane, CostPane, StepsPane, SystemPane, VeillePane)), self)
        self.pump_events()
        # Textual paints once on_mount returns: the panes fill in a worker, after that first
        # frame, so `workers.wait_for_complete()` still waits for them.
        painted = asyncio.Event()
        self.call_after_refresh(painted.set)
        self._fill(painted)

    @work(group="startup")
    async def _fill(self, painted: asyncio.Event) -> None:
        await painted.wait()
        # The first price read imports genai-prices' table (~150 ms): on a thread, so the loop
        # is free meanwhile to paint what the first frame did not have yet (the footer keys).
        await asyncio.to_thread(self.engine.warm_prices)
        await self.load_providers()
        self.show_mode()  # the key states are known now, and so is the mode
        await self.refresh_spend()
        await self.load_last_run()
        await self.load_veille()
        self.set_timer(REFRESH_S, self.tick)
        if self._start_watch is not None:
            try:
                await self._start_watch()
            except OperatorError as exc:
                self.notify(str(exc), title="Vigilance", severity="error", markup=False,
                            timeout=15)
            self.query_one(SystemPane).watch_started()

    async def on_unmount(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        if self._owns_engine:
            await self.engine.stop()

    def _handle_exception(self, error: Exception) -> None:
        """An unhandled exception: Textual exits with return code 1; the traceback goes
        to a file, and the operator gets one line (the CLI prints it once the terminal is
        restored) instead of Textual's dump, whose locals may hold a key."""
        super()._handle_exception(error)
        self._exit_renderables.clear()  # Textual 8.2's queue of what it prints on exit
        text = "".join(traceback.format_exception(error))
        if self.crash_log is not None:  # a second one: the same file, below the first
            with open(self.crash_log, "a", encoding="utf-8") as log:
                log.write("\n" + REDACTOR.redact(text))
            return
        self.crash_log = write_crash_log(self.engine.home, REDACTOR.redact(text))
        self.crash_report = (f"the cockpit crashed ({type(error).__name__}: "
                             f"{excerpt(str(error), 160)}); full traceback in {self.crash_log}")

    # -- engine -> panes -----------------------------------------------------------------

    def pump_events(self) -> None:
        # A task, not a worker: it never ends, and `workers.wait_for_complete()` (what tests
        # and snapshots wait on) must return once the real work is done.
        self._pump = asyncio.create_task(self._pump_events(), name="engine-events")
        self._pump.add_done_callback(self._pump_ended)

    async def _pump_events(self) -> None:
        subscription = self.engine.bus.subscribe()
        try:
            async for event in subscription:
                self.post_message(EngineEvent(event))
        finally:
            subscription.close()

    def _pump_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            self._handle_exception(error)  # as a failed worker would: the app exits with it

    async def on_engine_event(self, message: EngineEvent) -> None:
        self.events_seen += 1
        await self.routes.dispatch(message.event)

    # -- what is global: the header, notifications, approvals ------------------------------

    @handles(ResponseModeChanged)
    def mode_changed(self, event: ResponseModeChanged) -> None:
        self.show_mode()
        self.notify(f"{event.mode.upper()}: {excerpt(event.reason, 120)}",
                    title="Response mode", markup=False,
                    severity="warning" if event.mode != "bouquet" else "information")

    @handles(DispatchHoldChanged)
    def hold_changed(self, event: DispatchHoldChanged) -> None:
        self.show_mode()

    @handles(ApprovalRequested)
    def approval_requested(self, event: ApprovalRequested) -> None:
        self.notify(f"approval waiting: {excerpt(event.approval.summary, 120)} (press a)",
                    title="Approval", markup=False)
        for screen in self.screen_stack:
            if isinstance(screen, ApprovalsScreen):
                screen.reload()

    @handles(ApprovalDecided)
    def approval_decided(self, event: ApprovalDecided) -> None:
        approval = event.approval
        self.notify(f"{approval.status}: {excerpt(approval.summary, 120)}", markup=False)
        if (approval.kind == OPPORTUNITY and approval.status == "approved"
                and approval.payload.get("report", {}).get("funnel")):
            self.walk_funnel(str(approval.payload["provider"]))

    @handles(AlertRaised)
    def alert_raised(self, event: AlertRaised) -> None:
        severity = event.severity if event.severity in SEVERITIES else "warning"
        self.notify(excerpt(event.message, 300), title=excerpt(event.title, 80),
                    severity=severity, markup=False,  # type: ignore[arg-type]
                    timeout=10 if severity == "error" else 5)

    async def load_last_run(self) -> None:
        last = await self.engine.last_run()
        if last is None:
            return
        run, steps = last
        pane = self.query_one(StepsPane)
        now = self.engine.clock.now()
        with self.batch_update():
            pane.show_run(run)
            for step in steps:
                pane.show_step(run.run_id, step, now)
            pane.refresh_detail()

    async def load_veille(self) -> None:
        pane = self.query_one(VeillePane)
        now = self.engine.clock.now()
        with self.batch_update():
            pane.add(await self.engine.veille_items(limit=300), now)
            pane.polled(await self.engine.veille_sources(), now)

    async def load_providers(self) -> None:
        self.query_one(ProvidersPane).show_all(await self.engine.provider_views())

    async def refresh_spend(self) -> None:
        view = await self.engine.spend_view()
        cost = self.query_one(CostPane)
        with self.batch_update():
            cost.show(view)
        cost.stale = False
        cost.minute = int(self.engine.clock.now() // 60)

    async def tick(self) -> None:
        # Re-armed after each run, so a slow refresh never overlaps the next one; skipped
        # while a modal is up (nothing behind it is visible anyway).
        try:
            screen = self.screen
        except ScreenStackError:
            return  # shutting down: the screens are gone, and so is the refresh
        try:
            minute = int(self.engine.clock.now() // 60)
            if not isinstance(screen, ModalScreen):
                if self.query_one(CostPane).due(minute):
                    await self.refresh_spend()
                self.query_one(StepsPane).tick(self.engine.clock.now())
                self.query_one(VeillePane).tick(self.engine.clock.now())
                self.query_one(SystemPane).flush()  # what came in while a dialog was up
        finally:
            self.set_timer(REFRESH_S, self.tick)

    # -- actions -------------------------------------------------------------------------

    def _selected(self) -> str | None:
        view = self.query_one(ProviderTable).selected
        if view is None:
            self.notify("no provider selected", severity="warning")
            return None
        return view.id

    def action_inject_key(self) -> None:
        provider = self._selected()
        if provider is None:
            return
        spec = self.engine.bouquet.providers[provider]
        if spec.key == "none":
            self.notify(f"{provider} needs no key (key = \"none\" in the config)",
                        severity="warning", markup=False)
            return
        if spec.key != "keyring":
            self.notify(f"{provider} takes its key from the environment ({spec.key}), not "
                        "the keychain: set key = \"keyring\" in the config to inject one "
                        "here", severity="warning", markup=False)
            return
        self.push_screen(KeyModal(provider, self.requests.carry_out))

    @work(exclusive=True, group="key-test")
    async def action_test_key(self) -> None:
        provider = self._selected()
        if provider is None:
            return
        view = await self.engine.provider_view(provider)
        if not view.usable:
            self.notify(f"{provider} has no usable key to test: press k to add one",
                        severity="warning", markup=False)
            return
        self.notify(f"testing the key for {provider}...", markup=False)
        check = await self.engine.test_key(provider)
        self.notify(f"{provider}: {check.state.value}: {check.reason}", markup=False,
                    severity="information" if check.state.value != "failed" else "error")

    def action_acquire_key(self) -> None:
        provider = self._selected()
        if provider is None:
            return
        url = self.engine.bouquet.providers[provider].console_url
        if not url:
            self.notify(f"no console_url for {provider} in the config", severity="warning",
                        markup=False)
            return
        # OSC 52 goes through the terminal, so it works over SSH where no browser opens.
        self.copy_to_clipboard(url)
        self.notify(f"copied to your clipboard: {url}\nopen it, create a key, then press k",
                    title=f"Get a key for {provider}", markup=False, timeout=10)

    def walk_funnel(self, provider: str) -> None:
        """An approved offer: its billing page to the clipboard, then the key dialog."""
        spec = self.engine.bouquet.providers.get(provider)
        if spec is None:
            return
        if spec.console_url:
            self.copy_to_clipboard(spec.console_url)  # OSC 52: works over SSH
            self.notify(f"copied to your clipboard: {spec.console_url}\nsign up, create a "
                        "key, paste it here: the sandbox test checks the bill against the "
                        "announced price", title=f"Get a key for {provider}", markup=False,
                        timeout=15)
        self.push_screen(KeyModal(provider, self.requests.carry_out))

    @work(exclusive=True, group="veille-poll")
    async def action_poll_veille(self) -> None:
        self.notify("reading the feeds and status pages...", markup=False)
        try:
            summary = await self.engine.poll_veille()
        except OperatorError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self.notify(f"{len(summary.items)} new item(s); {summary.errors} source(s) failed",
                    title="Veille", markup=False,
                    severity="warning" if summary.errors else "information")

    def action_run_plan(self) -> None:
        self.push_screen(RunPlanModal(self.requests.carry_out, self.engine.bouquet.routing.mode,
                                      self._last_plan_path))

    def run_started(self, run: PlanRun) -> None:
        """The run dialog's RunPlan is under way: show it."""
        self._last_plan_path = str(run.plan_path)  # a Path: the Input takes text
        steps = self.query_one(StepsPane)
        steps.show_run(run.view())
        for step in run.steps():
            steps.show_step(run.run_id, step, self.engine.clock.now())
        self.notify(f"run {run.run_id} started: {neutralise(run.plan.task_id)}", markup=False)
        # Watching it is what comes next; after the dialog hands focus back.
        self.call_after_refresh(self.action_focus_pane, 2)

    def action_cancel_run(self) -> None:
        runs = self.engine.active_runs()
        if not runs:
            self.notify("no run in progress", severity="warning")
            return
        run = max(runs, key=lambda r: r.started)
        view = run.view()

        def answered(yes: bool | None) -> None:
            if yes:
                run.cancel()
                self.notify(f"run {run.run_id} cancelled", markup=False)

        self.push_screen(ConfirmScreen(
            f"Cancel run {run.run_id}?",
            f"{view.running} step(s) in flight will be cut and recorded; {view.pending} "
            f"pending step(s) stay pending. Resume later with: aetherflow run "
            f"{run.plan_path} --resume {run.run_id}"), answered)

    def action_approvals(self) -> None:
        self.push_screen(ApprovalsScreen(self.requests.carry_out))

    def action_filter(self) -> None:
        box = self.query_one("#filter-input", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter-input")
    def filter_changed(self, event: Input.Changed) -> None:
        self.query_one(ProviderTable).set_filter(event.value)

    @on(Input.Submitted, "#filter-input")
    def filter_done(self) -> None:
        self.query_one("#filter-input", Input).display = False
        self.query_one(ProviderTable).focus()

    def action_back(self) -> None:
        box = self.query_one("#filter-input", Input)
        if box.display:
            box.value = ""
            box.display = False
        self.query_one(ProviderTable).focus()

    def show_mode(self) -> None:
        """The response mode in the header, with why; plain text (the title is not markup)."""
        control = self.engine.control_view()
        pinned = " (pinned)" if control.pinned is not None else ""
        held = control.held
        self.sub_title = ((f"DISPATCH HELD: {excerpt(held, 60)} · " if held is not None
                           else "")
                          + f"{control.mode.value.upper()}{pinned}: {control.mode_reason} · "
                          f"bouquet: {self.engine.bouquet.source_label}")

    def action_cycle_mode(self) -> None:
        order = [None, *ResponseMode]
        current = self.engine.control_view().pinned
        pin = order[(order.index(current) + 1) % len(order)]
        self.engine.pin_mode(pin)
        self.show_mode()
        self.notify("response mode: automatic" if pin is None
                    else f"response mode pinned to {pin.value.upper()}", markup=False)

    def action_zoom(self) -> None:
        screen = self.screen
        if screen.maximized is not None:
            screen.minimize()
            return
        focused = self.focused
        if focused is None or not screen.maximize(focused):
            self.notify("focus a pane first (its digit), then z", severity="warning")

    def action_focus_pane(self, number: int) -> None:
        for pane in self.query(Pane):
            if pane.number == number:
                focusable = [w for w in pane.query("*") if w.can_focus]
                (focusable[0] if focusable else pane).focus()
                return

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_rows()))

    def help_rows(self) -> list[tuple[str, str, str]]:
        """Every binding: the cockpit's (with the operator's keymap), then each dialog's."""
        rows = [(self._key_of(b), b.description, b.tooltip) for b in BINDINGS]
        rows.append(("ctrl+p", "Palette", "Find any action by name"))
        for where, screen in (("veille pane", VeillePane), ("veille item", VeilleItemScreen),
                              ("key dialog", KeyModal), ("approvals", ApprovalsScreen),
                              ("run dialog", RunPlanModal), ("throttle dialog", ThrottleModal)):
            rows += [(self._key_of(b), f"{b.description} ({where})", b.tooltip)
                     for b in screen.BINDINGS if isinstance(b, Binding)]
        return rows

    def _key_of(self, binding: Binding) -> str:
        key = self._keymap.get(binding.id or "", binding.key)
        return ", ".join(self.get_key_display(binding.with_key(k)) for k in key.split(","))

    # -- the operator's manual actions on the engine ------------------------------------------

    @work(exclusive=True, group="force-optimisation")
    async def action_force_optimisation(self) -> None:
        self.notify("optimising...", markup=False)
        try:
            done = await self.engine.force_optimisation()
        except OperatorError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self.notify(excerpt(done, 300), title="Force optimisation", markup=False)

    def action_emergency_throttle(self) -> None:
        self.push_screen(ThrottleModal(self.engine.control_view(), self.requests.carry_out))

    def action_reset_circuit(self) -> None:
        provider = self._selected()
        if provider is None:
            return
        if provider not in self.engine.control_view().unclosed_circuits:
            self.notify(f"{provider}'s circuit is closed: nothing to reset", markup=False,
                        severity="warning")
            return
        self.engine.reset_circuits(provider)  # its alert tells the operator

    def action_reset_all_circuits(self) -> None:
        unwell = self.engine.control_view().unclosed_circuits
        if not unwell:
            self.notify("every circuit is closed: nothing to reset", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.engine.reset_circuits(None)

        self.push_screen(ConfirmScreen(
            "Reset every provider's circuit?",
            f"Not closed now: {', '.join(unwell)}. Real traffic may go to providers that "
            "are failing until their calls and probes say otherwise; every light turns "
            "orange until calls pass again."), answered)

    async def action_emergency_stop(self) -> None:
        held = self.engine.control_view().held
        if held is not None:
            self.notify(f"dispatch is already held: {excerpt(held, 120)}; "
                        "R resumes it", severity="warning", markup=False)
            return
        # Every live process's runs: a CLI run started elsewhere is stopped too.
        runs = len(await self.engine.runs_in_flight())

        def answered(yes: bool | None) -> None:
            if yes:
                self._emergency_stop()

        self.push_screen(ConfirmScreen(
            "EMERGENCY STOP?",
            f"Cancel {runs} run(s) in progress (in-flight calls are cut and recorded), stop "
            "local generation and hold all dispatch until you press R."), answered)

    @work(group="emergency")
    async def _emergency_stop(self) -> None:
        try:
            await self.engine.emergency_stop("emergency stop by the operator (cockpit)")
        except OperatorError as exc:
            self.notify(str(exc), severity="error", markup=False)
        # Its alert and DispatchHoldChanged tell the operator and repaint the header.

    @work(group="emergency")
    async def action_resume_dispatch(self) -> None:
        if self.engine.control_view().held is None:
            self.notify("dispatch is not held", severity="warning")
            return
        try:
            await self.engine.resume_dispatch()
        except OperatorError as exc:
            self.notify(str(exc), severity="error", markup=False)

    @work(exclusive=True, group="probe")
    async def action_probe_provider(self) -> None:
        provider = self._selected()
        if provider is None:
            return
        spec = self.engine.provider_spec(provider)
        if not probed_by_canary(spec):
            why = ("an in-process model: its health is this machine's"
                   if spec.kind == "llama_cpp" else "the canary is off for it in the config"
                   if not spec.canary else "it is disabled in the config")
            self.notify(f"{provider} is not probed: {why}", severity="warning", markup=False)
            return
        if not (await self.engine.provider_view(provider)).usable:
            self.notify(f"{provider} has no usable key to probe: press k to add one",
                        severity="warning", markup=False)
            return
        self.notify(f"probing {provider}...", markup=False)
        try:
            (result,) = await self.engine.probe([provider])
        except OperatorError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        verdict = "ok" if result.ok else "not probed" if result.skipped else "FAIL"
        self.notify(f"{provider}/{result.model}: {verdict}: {excerpt(result.reason, 200)}",
                    title="Canary", markup=False,
                    severity="information" if result.ok
                    else "warning" if result.skipped else "error")

    async def action_quit_cockpit(self) -> None:
        busy = self.engine.control_view().in_flight
        runs = self.engine.active_runs()
        if not busy and not runs:
            self.exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.exit()

        detail = f"{busy} call(s) in flight will be cut."
        if runs:
            detail += (f" {len(runs)} run(s) will be cancelled; resume with `aetherflow run "
                       "PLAN --resume RUN_ID`.")
        self.push_screen(ConfirmScreen("Quit the cockpit?", detail), answered)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in BINDINGS:
            if binding.id and not binding.id.startswith("focus_") and binding.id != "back":
                yield SystemCommand(binding.description, binding.tooltip,
                                    self._palette_action(binding.action))
        for n, name in ((1, "providers"), (2, "steps"), (3, "cost"), (4, "veille"),
                        (5, "system")):
            yield SystemCommand(f"Focus {name}", f"Focus pane {n}",
                                self._palette_action(f"focus_pane({n})"))

    def _palette_action(self, action: str):
        async def run() -> None:
            await self.run_action(action)

        return run

    def provider_light(self, provider_id: str) -> str:
        """The light of one row, as text: for tests and the e2e check."""
        view = self.query_one(ProviderTable).view(provider_id)
        return light(view)[0].value
