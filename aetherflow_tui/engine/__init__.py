"""The engine: the one owner of state and I/O. The cockpit and the CLI only call it.

Never imports textual (tests/unit/test_engine_boundary.py enforces it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import statistics
import time
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config as config_mod
from . import plan as plan_mod
from .approvals import ACTIVATE_KEY, OPPORTUNITY, PRICE_UPDATE, Approval, ApprovalQueue
from .budget import (
    BudgetGuard,
    Full,
    Refusal,
    Reservation,
    SharedBudget,
    process_alive,
    this_process,
    worst_cost,
    worst_input_tokens,
)
from .bus import EventBus
from .clock import Clock, SystemClock, local_day
from .config import Bouquet, ModelSpec, ProviderSpec
from .errors import (
    BudgetRefused,
    DispatchHeld,
    OperatorError,
    PlanError,
    UsageError,
)
from .events import (
    AlertRaised,
    CallRecorded,
    CanaryProbed,
    ConcurrencyChanged,
    DispatchHoldChanged,
    KeyCheckUpdated,
    KeyStateChanged,
    ProviderHealthChanged,
    RegulatorDecided,
    ResponseModeChanged,
    SystemSampled,
)
from .gates import ConcurrencyCap, ProviderGate
from .health import HealthBook, Light, ProbeResult, ProviderHealth, StatusSignal
from .keycheck import (
    SANDBOX_MAX_TOKENS,
    SANDBOX_PROMPT,
    KeyCheck,
    KeyCheckState,
    judge,
)
from .keys import KeyState, KeyStatus, KeyVault, check_key_text
from .ledger import NOT_BILLED, UNKNOWN_ENERGY, Cost, EnergyEstimator, PriceTable, Rates
from .modes import LOGIC_ROLES, ModeController, ModeSignals, ResponseMode
from .paths import Paths
from .probes import Prober
from .progress import RunStatus, RunView, StepState, StepView
from .providers import build_provider
from .providers.base import (
    ChatRequest,
    ChatResult,
    ConnectionFailed,
    MalformedResponse,
    OnToken,
    Provider,
    ProviderError,
    ProviderTimeout,
    Unreachable,
    Usage,
)
from .records import CallRecord, ProviderTotals
from .router import Mode, Router
from .scheduler import PlanRun
from .store import INSERT_ALERT, INSERT_DECISION, INSERT_MODE_CHANGE, Store
from .text import excerpt

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from .metrics import MetricsSnapshot
    from .regulator import Actions, SystemSample, SystemState
    from .veille.item import VeilleItem
    from .veille.matrix import MatrixRow
    from .veille.watch import VeilleWatch
    from .vigilance import Canaries, RegulatorDecision, Vigilance

__all__ = ["CallOutcome", "Engine", "Mode", "ModelView", "PlanRun", "ProviderView",
           "ResponseMode", "SpendView", "load_bouquet"]

# An answer with no cap would make its worst-case cost unbounded.
DEFAULT_MAX_TOKENS = 1024
# How often the budget re-reads today's spend, which other processes may have added to.
BUDGET_SYNC_S = 5.0
# A call waiting for budget re-checks at least this often: other processes' calls settle
# in their own process, unseen here until the store is read again.
BUDGET_WAIT_POLL_S = 0.25
# A failed call the provider may have billed (it took the request, then timed out, cut the
# stream or sent garbage): charged what it delivered and every input token, estimated.
BILLED_FAILURE = "estimated:billed-failure"
# An approved veille offer, per provider, until its key passes the sandbox and is activated.
ANNOUNCED = "announced:"
HOLD_SETTING = "dispatch_hold"  # the emergency stop, in the store: every process obeys it
# Controls one process writes and every live one applies (`aetherflow stop` and friends).
CONTROL_ACTIONS = ("emergency_stop", "resume", "throttle", "reset_circuits",
                   "force_optimisation")


@dataclass(frozen=True, slots=True)
class ModelView:
    id: str
    roles: tuple[str, ...]
    rates: Rates | None  # None: unpriced


@dataclass(frozen=True, slots=True)
class ProviderView:
    """A provider as the operator sees it in `providers` and the health pane."""

    id: str
    kind: str
    base_url: str | None
    zone: str
    rpm: int | None
    tpm: int | None
    key: KeyStatus
    console_url: str | None
    models: tuple[ModelView, ...]
    check: KeyCheck  # the sandbox test of the current key
    health: ProviderHealth

    @property
    def usable(self) -> bool:
        return self.key.state in (KeyState.PRESENT, KeyState.NOT_NEEDED)

    @property
    def routable(self) -> bool:
        """Automatic routing may use it: a key that is there and passed its test."""
        return routable(self.key, self.check)


@dataclass(frozen=True, slots=True)
class SpendView:
    """Today's money and energy, for the cost pane and `aetherflow spend`."""

    day: str
    budget_usd: float
    totals: tuple[ProviderTotals, ...]
    minutes: tuple[tuple[float, float, float], ...]  # last 60 minutes: usd, wh, gco2e

    @property
    def spent_usd(self) -> float:
        return sum(t.usd for t in self.totals)

    @property
    def wh(self) -> float:
        return sum(t.wh for t in self.totals)

    @property
    def measured_wh(self) -> float:
        return sum(t.measured_wh for t in self.totals)

    @property
    def gco2e(self) -> float:
        return sum(t.gco2e for t in self.totals)

    @property
    def unpriced_calls(self) -> int:
        return sum(t.unpriced_calls for t in self.totals)


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """A finished call: its ledger row, and the answer or the typed error.

    `durable` resolves with the committed row (energy filled in); `Engine.settled()` waits
    for it, which is what every caller that reports the result to the operator does.
    """

    record: CallRecord
    result: ChatResult | None
    error: ProviderError | None
    durable: asyncio.Future[CallRecord] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def routable(key: KeyStatus, check: KeyCheck) -> bool:
    """A key that is there and, when it came from the keychain, passed its sandbox test."""
    usable = key.state in (KeyState.PRESENT, KeyState.NOT_NEEDED)
    return usable and (key.source != "keyring" or check.active)


def _billed_failure(error: BaseException) -> bool:
    """Failures after the provider took the request: it may have billed them."""
    if isinstance(error, ConnectionFailed):
        return not isinstance(error, Unreachable)
    return isinstance(error, ProviderTimeout | MalformedResponse)


def _bounded(usage: Usage, worst_in: int, max_tokens: int) -> Usage:
    """Usage within what the call could have used, never past its worst case. A negative
    count would credit the budget, and says nothing of what was billed: it counts at the
    bound. Marked estimated when it was moved."""
    tin = worst_in if usage.input_tokens < 0 else min(usage.input_tokens, worst_in)
    tout = max_tokens if usage.output_tokens < 0 else min(usage.output_tokens, max_tokens)
    cached = min(max(0, usage.cached_input_tokens), tin)
    if (tin, tout, cached) == (usage.input_tokens, usage.output_tokens,
                               usage.cached_input_tokens):
        return usage
    return Usage(tin, tout, cached, estimated=True)


def _origin() -> str:
    """Who wrote a control: a process skips the ones it wrote itself."""
    return f"pid {os.getpid()}"


def _freeze_long_lived() -> None:
    """The price table, EcoLogits' models and the config are loaded by now and live as long
    as the process: move them out of the cyclic GC's scans (gc.freeze), so a full collection
    during a run walks only the run's own objects. Unfrozen, one gen-2 pass took ~30 ms and
    stalled every step finishing at that moment (benchmarks/scheduler.py, makespan)."""
    gc.collect()
    gc.freeze()


def load_bouquet(paths: Paths) -> Bouquet:
    return config_mod.load(paths.config, required=paths.config_explicit)


class Engine:
    def __init__(self, bouquet: Bouquet, home: Path, *, vault: KeyVault | None = None,
                 clock: Clock | None = None) -> None:
        self.bouquet = bouquet
        self.home = home
        self.vault = vault or KeyVault()
        self.clock = clock or SystemClock()
        self.bus = EventBus()
        self.prices = PriceTable(self.clock.now)
        self.energy = EnergyEstimator()
        self.health = HealthBook(self.clock, bouquet.health)
        self._store: Store | None = None
        self._approvals: ApprovalQueue | None = None
        self._checks: dict[str, KeyCheck] = {}
        self._providers: dict[str, Provider] = {}
        self._provider_lock = asyncio.Lock()
        self._in_flight = 0
        self._key_status: dict[str, KeyStatus] = {}
        self.guard = BudgetGuard(bouquet.budget)
        self.concurrency = ConcurrencyCap(bouquet.routing.max_concurrency)
        self._gates: dict[str, ProviderGate] = {}
        self._router: Router | None = None
        self._energy_ready = False
        self._runs: dict[str, PlanRun] = {}
        self._budget_sync: asyncio.Task[None] | None = None
        self._expired_at = -1e9  # when dead processes' reservations were last expired
        self.modes = ModeController(bouquet.modes, self.clock.now())
        self.prober = Prober(self)
        self.vigilance: Vigilance | None = None
        self._veille: VeilleWatch | None = None
        self.metrics_port: int | None = None  # where Prometheus scrapes, when serving
        self.held: str | None = None  # why dispatch is held (emergency stop), or None
        self.manual_cap: int | None = None  # the operator's emergency throttle
        self._regulated_cap = bouquet.routing.max_concurrency
        self._spare_local = False
        self._local_paused = False
        self._lights: dict[str, Light] = {}
        # (ts, ok, duration) of real calls: the regulator's error rate and latency.
        self._recent: deque[tuple[float, bool, float]] = deque(maxlen=2000)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Engine:
        self._store = await Store.open(self.home / "aetherflow.db")
        self._store.prepare = self._estimate_energy
        self._store.on_committed = self._publish_calls
        self.shared = SharedBudget(self._store, this_process(), self.bouquet.budget.daily_usd)
        self._approvals = ApprovalQueue(self._store, self.bus, self.clock)
        self._approvals.handle(ACTIVATE_KEY, self._on_activation_decided)
        self._approvals.handle(PRICE_UPDATE, self._on_price_update_decided)
        self._approvals.handle(OPPORTUNITY, self._on_opportunity_decided)
        for row in await self._store.price_updates():
            self.prices.approve(row["provider"], row["model"], row["input_per_mtok"],
                                row["output_per_mtok"])
        for provider, row in (await self._store.latest_key_checks()).items():
            _, ts, _, state, reason, latency, usd, billed = row
            self._checks[provider] = KeyCheck(provider, KeyCheckState(state), reason, ts,
                                              latency, usd, billed)
        # Health starts from the recent past, not from nothing, after a restart. Circuits
        # start closed (a failure days ago says nothing now) unless the light ends red.
        for record in reversed(await self._store.recent_calls(500)):
            self.health.observe(record, circuit=False)
        await self.prober.load()
        for provider in self.health.providers():
            health = self.health.health(provider)
            self._lights[provider] = health.light
            if health.light is Light.RED and not health.reason.startswith("the key"):
                self.health.circuit(provider).trip()
        hold = await self._store.setting(HOLD_SETTING)
        if hold is not None:
            self.held = str(hold.get("reason", "emergency stop"))
        await self.sync_budget()
        self._budget_sync = asyncio.create_task(self._keep_budget_synced(),
                                                name="budget-sync")
        return self

    async def stop(self) -> None:
        if self._veille is not None:
            with contextlib.suppress(Exception):
                await self._veille.aclose()
            self._veille = None
        if self.vigilance is not None:
            with contextlib.suppress(Exception):
                await self.vigilance.stop()
            self.vigilance = None
        await self.prober.aclose()
        for run in list(self._runs.values()):
            run.cancel()
            with contextlib.suppress(Exception):
                await run.wait()
        if self._budget_sync is not None:
            self._budget_sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._budget_sync
            self._budget_sync = None
        for provider in self._providers.values():
            with contextlib.suppress(Exception):
                await provider.aclose()
        self._providers.clear()
        if self._store is not None:
            # Left behind, what this process holds would count as spend once it is gone.
            with contextlib.suppress(Exception):
                await self._store.flush()
            with contextlib.suppress(Exception):  # even when the flush failed
                await self.shared.drop()
            await self._store.close()
            self._store = None

    async def __aenter__(self) -> Engine:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def started(self) -> bool:
        return self._store is not None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the engine is not started")
        return self._store

    @property
    def approvals(self) -> ApprovalQueue:
        if self._approvals is None:
            raise RuntimeError("the engine is not started")
        return self._approvals

    def check_dispatch(self) -> None:
        """DispatchHeld (exit 3) while an emergency stop holds dispatch."""
        if self.held is not None:
            raise DispatchHeld(f"dispatch is held: {self.held}",
                               fix="resume with `aetherflow resume` or R in the cockpit")

    def busy(self) -> int:
        """Calls in flight: quitting now would cut them."""
        return self._in_flight

    @property
    def router(self) -> Router:
        if self._router is None:
            self._router = Router(self.bouquet, self.prices, self.health, self.guard)
            self._router.routable = {pid for pid, status in self._key_status.items()
                                     if routable(status, self.key_check(pid))}
        return self._router

    def gate(self, spec: ProviderSpec) -> ProviderGate:
        gate = self._gates.get(spec.id)
        if gate is None:
            gate = self._gates[spec.id] = ProviderGate(spec)
        return gate

    def set_concurrency(self, limit: int, reason: str) -> None:
        """The global cap on calls in flight; the regulator moves it under load."""
        self.concurrency.set_limit(limit)
        self.bus.publish(ConcurrencyChanged(self.clock.now(), self.concurrency.limit, reason))

    async def sync_budget(self) -> None:
        self._expired_at = -1e9
        await self._expire_dead_reservations()
        day = local_day(self.clock.now())
        self.guard.sync(day, await self.store.day_spend(day))

    async def _keep_budget_synced(self) -> None:
        """Every few seconds: today's spend, the response mode (a better mode is only taken
        after it has held a while), and idle local models."""
        while True:
            await asyncio.sleep(BUDGET_SYNC_S)
            with contextlib.suppress(Exception):  # a busy database: try again next time
                await self.sync_budget()
            self.update_mode()
            await self._local_housekeeping()

    # -- response mode ---------------------------------------------------------------------

    @property
    def response_mode(self) -> ResponseMode:
        return self.modes.mode

    def mode_signals(self) -> ModeSignals:
        apis = [s for s in self.bouquet.providers.values() if s.enabled and not s.local]
        usable = [s for s in apis if s.id in self.router.routable]
        up = [s for s in usable if self.health.circuit(s.id).allows_traffic()]
        logic_up = any(LOGIC_ROLES & set(m.roles) for s in up for m in s.models)
        prices = [(r.input + r.output) / 2 for s in up for m in s.models
                  if (r := self.prices.rates(s, m)) is not None]
        daily = self.bouquet.budget.daily_usd
        spent_pct = 100.0 * self.guard.spent / daily if daily > 0 else 100.0
        has_local = any(s.enabled and s.local for s in self.bouquet.providers.values())
        return ModeSignals(has_local, len(usable), len(up), logic_up, spent_pct,
                           min(prices) if prices else None, self._spare_local)

    def update_mode(self) -> None:
        """Re-read the signals; publish and record a switch. Cheap: called on every call."""
        if not self._key_status:
            return  # which keys are usable is not known yet (provider_views reads it)
        decision = self.modes.update(self.mode_signals(), self.clock.now())
        if decision is not None:
            self._mode_switched(decision.mode, decision.reason, decision.pinned)

    def pin_mode(self, mode: ResponseMode | str | None) -> None:
        """The operator's choice of mode; None gives the choice back to the signals."""
        pinned = ResponseMode(mode) if mode is not None else None
        decision = self.modes.pin(pinned, self.clock.now())
        if decision is not None:
            self._mode_switched(decision.mode, decision.reason, True)
        elif pinned is None:
            self.update_mode()
        else:
            self._mode_switched(pinned, "pinned by the operator", True)

    def _mode_switched(self, mode: ResponseMode, reason: str, pinned: bool) -> None:
        now = self.clock.now()
        if self._store is not None:
            self._store.enqueue(INSERT_MODE_CHANGE, (now, mode.value, reason, int(pinned)))
        self.bus.publish(ResponseModeChanged(now, mode.value, reason, pinned))

    async def local_providers(self) -> list[Any]:
        """The llama_cpp providers, built (not loaded) on demand: the local stack."""
        return [await self._provider_for(spec) for spec in self.bouquet.providers.values()
                if spec.enabled and spec.kind == "llama_cpp"]

    async def throttle_local(self, *, threads: int | None = None, duty: float | None = None
                             ) -> None:
        """The regulator's throttle on local inference: threads and duty cycle, at once for
        generations in progress (they read it between two tokens)."""
        for provider in await self.local_providers():
            provider.set_throttle(threads=threads, duty=duty)

    async def _local_housekeeping(self) -> None:
        import psutil

        available_mb = psutil.virtual_memory().available / 2**20
        for provider in list(self._providers.values()):
            housekeeping = getattr(provider, "housekeeping", None)
            if housekeeping is not None:
                with contextlib.suppress(Exception):
                    await housekeeping(available_mb)

    # -- vigilance: probes, regulator, alerts ------------------------------------------------

    async def start_vigilance(self, *, role: str, canaries: Canaries = "periodic",
                              status_pages: bool = True, metrics_port: int | None = None,
                              metrics_host: str = "127.0.0.1") -> Vigilance:
        """Watch this process's providers and machine until stop(): the cockpit and runs."""
        from .vigilance import Vigilance

        exporter = None
        if metrics_port is not None:
            from .metrics import MetricsExporter, MetricsPortError

            exporter = MetricsExporter(host=metrics_host, port=metrics_port)
            try:
                self.metrics_port = await asyncio.to_thread(exporter.start)
            except MetricsPortError as exc:
                raise UsageError(str(exc)) from None
        await self.provider_views()  # which providers the canary covers: tested keys
        self.vigilance = Vigilance(self, role=role, canaries=canaries,
                                   status_pages=status_pages, exporter=exporter)
        await self.vigilance.start()
        return self.vigilance

    async def probe(self, providers: list[str] | None = None) -> list[ProbeResult]:
        """Run the canaries now (every covered provider, or the ones named)."""
        await self.provider_views()
        await self.sync_budget()
        return await self.prober.probe_all(providers)

    async def read_status_pages(self) -> dict[str, StatusSignal]:
        return await self.prober.read_all_status()

    def probe_recorded(self, result: ProbeResult) -> None:
        now = self.clock.now()
        self.bus.publish(CanaryProbed(now, result))
        self._health_changed(self.health.probed(result))
        self.update_mode()

    def status_recorded(self, provider: str, signal: StatusSignal) -> None:
        self._health_changed(self.health.status_read(provider, signal))
        self.update_mode()

    def _health_changed(self, health: ProviderHealth) -> None:
        """Publish; a light turning red (or back) is an alert; held traffic gets a probe."""
        self.bus.publish(ProviderHealthChanged(self.clock.now(), health))
        before = self._lights.get(health.provider)
        self._lights[health.provider] = health.light
        if health.light is Light.RED and before is not Light.RED:
            self.raise_alert("error", f"{health.provider} is red", health.reason, "health")
        elif before is Light.RED and health.light in (Light.GREEN, Light.ORANGE):
            self.raise_alert("information", f"{health.provider} recovered",
                             f"{health.light.value}: {health.reason}", "health")

    def raise_alert(self, severity: str, title: str, message: str, source: str) -> None:
        now = self.clock.now()
        if self._store is not None:
            self._store.enqueue(INSERT_ALERT, (now, severity, title, message, source))
        self.bus.publish(AlertRaised(now, severity, title, message, source))

    def publish_sample(self, sample: SystemSample) -> None:
        self.bus.publish(SystemSampled(sample.ts, sample))

    def recent_error_rate(self, window_s: float, *, min_calls: int = 1
                          ) -> tuple[float | None, float | None]:
        """The share of real calls that failed in the last window_s (None with fewer than
        min_calls: one failure is not a rate), and their p50 latency."""
        since = self.clock.now() - window_s
        recent = self._recent
        while recent and recent[0][0] < since:
            recent.popleft()
        ok = [d for _, good, d in recent if good]
        p50 = statistics.median(ok) if ok else None
        if not recent or len(recent) < min_calls:
            return None, p50
        failed = len(recent) - len(ok)
        return 100.0 * failed / len(recent), p50

    async def apply_regulation(self, actions: Actions, state: SystemState) -> list[str]:
        """The regulator's actions, done; returns what was done, in the operator's words."""
        done = []
        self._regulated_cap = actions.concurrency
        limit = min(actions.concurrency, self.manual_cap or actions.concurrency)
        if limit != self.concurrency.limit:
            self.set_concurrency(limit, f"regulator: {state.value}")
        done.append(f"concurrency cap {limit}"
                    + (f" (operator's limit {self.manual_cap})" if self.manual_cap else ""))
        local = [p for p in self._providers.values() if hasattr(p, "set_throttle")]
        if local:
            for provider in local:
                provider.set_throttle(threads=actions.local_threads, duty=actions.local_duty)
        threads = "all cores" if actions.local_threads is None else (
            f"{actions.local_threads} thread(s)")
        done.append(f"local inference: {threads} at {actions.local_duty:.0%} duty")
        self.pause_local(actions.local_paused or self.held is not None)
        if actions.local_paused:
            done.append("local queue paused")
        if actions.prefer_apis != self._spare_local:
            self._spare_local = actions.prefer_apis
            self.update_mode()
        if actions.prefer_apis:
            done.append(f"response mode asked to spare local models (now "
                        f"{self.response_mode.value.upper()})")
        if actions.open_failing_circuits:
            opened = self.health.open_failing()
            for provider in opened:
                self._health_changed(self.health.health(provider))
            done.append("opened circuits: " + ", ".join(opened) if opened
                        else "no failing provider to cut off")
        return done

    def pause_local(self, paused: bool) -> None:
        """Hold (or release) local generations that have not started yet."""
        self._local_paused = paused
        for provider in self._providers.values():
            gate = getattr(provider, "paused", None)
            if gate is not None:
                gate.clear() if paused else gate.set()

    async def record_decision(self, decision: RegulatorDecision, *, shared: bool = True
                              ) -> None:
        """Publish the regulator's decision; `shared`: also the row and the alert, which
        every other process and `aetherflow status` read."""
        self.bus.publish(RegulatorDecided(decision.ts, decision))
        if not shared:
            return
        import json

        await self.store.enqueue(INSERT_DECISION, (
            decision.ts, "manual" if decision.manual else "regulator", decision.state.value,
            decision.confidence, decision.reasoning, json.dumps(decision.metrics),
            json.dumps(list(decision.actions))))
        if decision.state is not decision.previous:
            worse = decision.state.severity > decision.previous.severity
            self.raise_alert("warning" if worse else "information",
                             f"machine {decision.state.value.upper()}", decision.reasoning,
                             "regulator")

    # -- the operator's manual actions ---------------------------------------------------

    async def emergency_stop(self, reason: str = "emergency stop by the operator", *,
                             broadcast: bool = True) -> str:
        """Cancel every run, stop local generation, hold all dispatch until resume().
        broadcast: every other live process (runs started elsewhere) stops too."""
        self.held = reason  # first: no call may leave while the runs are counted
        runs = list(self._runs.values())
        elsewhere = [r for r in await self.runs_in_flight() if r not in self._runs] \
            if broadcast else []
        await self.store.set_setting(HOLD_SETTING, {"reason": reason}, self.clock.now())
        if broadcast:
            await self.store.add_control(self.clock.now(), "emergency_stop",
                                         {"reason": reason}, _origin())
        self.pause_local(True)
        for run in runs:
            run.cancel(held=reason)
        for run in runs:
            with contextlib.suppress(Exception):
                await run.wait()
        stopped = len(runs) + len(await self.wait_runs_stopped(elsewhere))
        self.bus.publish(DispatchHoldChanged(self.clock.now(), True, reason))
        detail = f"{stopped} run(s) cancelled, local generation stopped, dispatch held"
        if stopped < len(runs) + len(elsewhere):
            detail += (f"; {len(runs) + len(elsewhere) - stopped} run(s) in another process "
                       "not stopped yet")
        self.raise_alert("error", "EMERGENCY STOP", f"{reason}: {detail}", "operator")
        return detail

    async def wait_runs_stopped(self, run_ids: list[str], wait_s: float = 3.0) -> list[str]:
        """Wait until the processes running these runs have stopped them (they apply a
        control within a second); returns the ones that did."""
        deadline = time.monotonic() + wait_s
        while True:
            statuses = await self.store.run_statuses(run_ids)
            stopped = [r for r in run_ids if statuses.get(r) != RunStatus.RUNNING]
            if len(stopped) == len(run_ids) or time.monotonic() >= deadline:
                return stopped
            await asyncio.sleep(0.1)

    async def resume_dispatch(self, origin: str = "the operator", *,
                              broadcast: bool = True) -> str:
        was = self.held
        self.held = None
        await self.store.set_setting(HOLD_SETTING, None, self.clock.now())
        if broadcast:
            await self.store.add_control(self.clock.now(), "resume", {}, _origin())
        actions = self.vigilance.actions if self.vigilance is not None else None
        self.pause_local(bool(actions and actions.local_paused))
        if was is None:
            return "dispatch was not held"
        self.bus.publish(DispatchHoldChanged(self.clock.now(), False, f"resumed by {origin}"))
        self.raise_alert("information", "dispatch resumed", f"resumed by {origin}",
                         "operator")
        return "dispatch resumed"

    def emergency_throttle(self, limit: int | None) -> str:
        """The operator's cap on calls in flight, over the regulator's; None lifts it."""
        if limit is not None and limit < 1:
            raise UsageError(f"throttle limit {limit} is below 1",
                             fix="give at least 1, or use `off` to lift the throttle")
        self.manual_cap = limit
        cap = min(self._regulated_cap, limit) if limit is not None else self._regulated_cap
        reason = (f"emergency throttle by the operator: {limit}" if limit is not None
                  else "operator's throttle lifted")
        self.set_concurrency(cap, reason)
        self.raise_alert("warning" if limit is not None else "information",
                         "throttle", f"{reason}; concurrency cap {cap}", "operator")
        return f"concurrency cap {cap}"

    def reset_circuits(self, provider: str | None = None) -> list[str]:
        """Close one provider's circuit, or every one that holds traffic or is red; each
        gets a probe at once. Healthy providers are left as they are."""
        if provider:
            targets = [self.provider_spec(provider).id]
        else:
            targets = [pid for pid in self.bouquet.providers
                       if self.health.circuit(pid).is_open
                       or self.health.health(pid).light is Light.RED]
        if not targets:
            return []
        for pid in targets:
            health = self.health.reset_circuit(pid)
            self.bus.publish(ProviderHealthChanged(self.clock.now(), health))
            self._lights[pid] = health.light
            if self.vigilance is not None and self.vigilance.canaries != "off":
                self.prober.probe_soon(pid)
        self.update_mode()
        self.raise_alert("warning", "circuits reset", ", ".join(targets), "operator")
        return targets

    async def force_optimisation(self) -> str:
        """Lift the operator's throttle, unload idle local models, re-judge the machine now
        without waiting for the hold, and re-probe every provider that is unwell."""
        if self.manual_cap is not None:
            self.emergency_throttle(None)
        await self._local_housekeeping()
        if self.vigilance is not None:
            decision = await self.vigilance.force_now()
            for spec in self.prober.covered():
                if self.prober.interval(spec.id) < self.prober.spec.interval_s:
                    self.prober.probe_soon(spec.id)
            if decision is not None:
                return f"{decision.state.value.upper()}: " + "; ".join(decision.actions)
        return "optimised: throttle lifted, idle local models unloaded"

    async def apply_control(self, action: str, params: dict[str, Any], *, origin: str) -> str:
        """A control another process wrote to the store; returns what was done here."""
        try:
            if action == "emergency_stop":
                return await self.emergency_stop(str(params.get("reason") or
                                                     f"emergency stop from {origin}"),
                                                 broadcast=False)
            if action == "resume":
                return await self.resume_dispatch(origin, broadcast=False)
            if action == "throttle":
                limit = params.get("limit")
                return self.emergency_throttle(None if limit is None else int(limit))
            if action == "reset_circuits":
                reset = self.reset_circuits(params.get("provider"))
                return "reset: " + ", ".join(reset) if reset else "no circuit to reset"
            if action == "force_optimisation":
                return await self.force_optimisation()
        except OperatorError as exc:
            return f"not applied: {exc}"
        return f"unknown control {action!r}: ignored"

    async def send_control(self, action: str, params: dict[str, Any], *,
                           wait_s: float = 3.0) -> tuple[list[dict[str, Any]],
                                                         list[dict[str, Any]]]:
        """Write a control for every live process; wait for their acknowledgements.
        Returns (live processes, acknowledgements)."""
        assert action in CONTROL_ACTIONS, action
        now = self.clock.now()
        pid = os.getpid()
        if action == "emergency_stop":
            await self.store.set_setting(HOLD_SETTING, {"reason": params.get("reason")}, now)
        elif action == "resume":
            await self.store.set_setting(HOLD_SETTING, None, now)
        control = await self.store.add_control(now, action, params, _origin())
        from .vigilance import ALIVE_WITHIN_S

        live = [p for p in await self.store.processes(now - ALIVE_WITHIN_S) if p["pid"] != pid]
        deadline = time.monotonic() + wait_s
        acks: list[dict[str, Any]] = []
        while live and time.monotonic() < deadline:
            acks = await self.store.control_acks(control)
            if len(acks) >= len(live):
                break
            await asyncio.sleep(0.1)
        return live, acks

    async def metrics_snapshot(self) -> MetricsSnapshot:
        from .metrics import MetricsSnapshot, ProviderMetrics

        day = local_day(self.clock.now())
        totals = {t.provider: t for t in await self.store.totals_for_day(day)}
        providers = []
        for spec in self.bouquet.providers.values():
            health = self.health.health(spec.id)
            total = totals.get(spec.id)
            canary = health.canary
            providers.append(ProviderMetrics(
                spec.id, health.light.value, health.score, health.circuit.value,
                canary.latency_s if canary else None, canary.ok if canary else None,
                None if health.success_pct is None else health.success_pct / 100,
                health.latency_ewma_s, total.usd if total else 0.0,
                total.wh if total else 0.0))
        sample = self.vigilance.last_sample() if self.vigilance else None
        decision = self.vigilance.decision if self.vigilance else None
        state = self.vigilance.regulator.state.value if self.vigilance else "optimal"
        return MetricsSnapshot(
            self.clock.now(), tuple(providers), self.guard.spent if self.guard.day == day
            else 0.0, self.bouquet.budget.daily_usd, sum(t.wh for t in totals.values()),
            sum(t.gco2e for t in totals.values()), self.prober.budget.spent, state,
            decision.confidence if decision else None,
            sample.cpu_pct if sample else None, sample.memory_pct if sample else None,
            sample.swap_pct if sample else None, sample.temperature_c if sample else None,
            sample.loop_lag_ms if sample else None, self.concurrency.limit, self._in_flight,
            self.response_mode.value, self.held is not None)

    # -- the bouquet -----------------------------------------------------------------------

    def provider_spec(self, provider_id: str) -> ProviderSpec:
        spec = self.bouquet.providers.get(provider_id)
        if spec is None:
            known = ", ".join(sorted(self.bouquet.providers))
            raise UsageError(f"unknown provider {provider_id!r}",
                             fix=f"use one of: {known} (see `aetherflow providers`)")
        return spec

    def model_spec(self, provider: ProviderSpec, model_id: str) -> ModelSpec:
        """The declared model, or an ad-hoc one: OpenAI-compatible hosts serve many more."""
        return provider.model(model_id) or ModelSpec(id=model_id)

    async def provider_views(self) -> list[ProviderView]:
        specs = list(self.bouquet.providers.values())
        statuses = await asyncio.to_thread(lambda: [self.vault.status(s) for s in specs])
        self._key_status.update({spec.id: st for spec, st in zip(specs, statuses, strict=True)})
        self._refresh_routable()
        self.update_mode()
        return [self._view(spec, status) for spec, status in zip(specs, statuses, strict=True)]

    async def provider_view(self, provider_id: str) -> ProviderView:
        """One provider, with the key status last read (keychain reads block and may prompt)."""
        spec = self.provider_spec(provider_id)
        status = self._key_status.get(provider_id)
        if status is None:
            status = self._key_status[provider_id] = await asyncio.to_thread(
                self.vault.status, spec)
        return self._view(spec, status)

    def _view(self, spec: ProviderSpec, status: KeyStatus) -> ProviderView:
        models = tuple(ModelView(m.id, m.roles, self.prices.rates(spec, m)) for m in spec.models)
        return ProviderView(spec.id, spec.kind, spec.base_url, spec.zone, spec.rpm, spec.tpm,
                            status, spec.console_url, models, self.key_check(spec.id),
                            self.health.health(spec.id))

    def _refresh_routable(self) -> None:
        if self._router is not None:
            self._router.routable = {pid for pid, status in self._key_status.items()
                                     if routable(status, self.key_check(pid))}

    def key_check(self, provider_id: str) -> KeyCheck:
        return self._checks.get(provider_id) or KeyCheck(
            provider_id, KeyCheckState.UNTESTED, "not tested yet", 0.0)

    # -- keys ------------------------------------------------------------------------------

    async def set_key(self, provider_id: str, text: str) -> KeyStatus:
        spec = self.provider_spec(provider_id)
        if spec.key != "keyring":
            raise UsageError(f"{provider_id} reads its key from {spec.key!r}, not the keychain",
                             fix='set key = "keyring" for it in the config to store one')
        secret = check_key_text(provider_id, text)
        await asyncio.to_thread(self.vault.store, provider_id, secret)
        await self._record_check(KeyCheck(provider_id, KeyCheckState.UNTESTED,
                                          "new key, not tested yet", self.clock.now()))
        return await self._key_changed(spec)

    async def remove_key(self, provider_id: str) -> bool:
        spec = self.provider_spec(provider_id)
        removed = await asyncio.to_thread(self.vault.delete, provider_id)
        await self._record_check(KeyCheck(provider_id, KeyCheckState.UNTESTED, "key removed",
                                          self.clock.now()))
        await self._key_changed(spec)
        return removed

    async def inject_key(self, provider_id: str, text: str) -> KeyCheck:
        """Store a key, then test it at once; a pass asks the operator to activate it."""
        await self.set_key(provider_id, text)
        return await self.test_key(provider_id)

    async def test_key(self, provider_id: str, *, activate: bool = False) -> KeyCheck:
        """The sandbox test: one real minimal call. `activate` skips the approval (CLI).

        After an approved veille opportunity, the call goes to the announced model and
        what the provider bills is checked against the announced price.
        """
        spec = self.provider_spec(provider_id)
        await self._record_check(KeyCheck(provider_id, KeyCheckState.TESTING,
                                          "sandbox call in flight", self.clock.now()),
                                 persist=False)
        announced = await self.store.setting(ANNOUNCED + provider_id)
        model = self._sandbox_model(spec, announced)
        request = ChatRequest.ask(model.id, SANDBOX_PROMPT, max_tokens=SANDBOX_MAX_TOKENS,
                                  stream=False)
        try:
            outcome = await self.settled(await self.call(spec, request, purpose="sandbox"))
        except OperatorError as exc:
            outcome = None
            passed, reason = False, str(exc)
        else:
            passed, reason = judge(
                outcome.result, outcome.error, outcome.record.cost,
                None if announced is None
                else (announced["input_per_mtok"], announced["output_per_mtok"]))
        result = outcome.result if outcome else None
        if not passed:
            state = KeyCheckState.FAILED
        elif activate:
            state = KeyCheckState.ACTIVE
        else:
            state = KeyCheckState.AWAITING_APPROVAL
        check = KeyCheck(provider_id, state, reason, self.clock.now(),
                         result.duration_s if result else None,
                         outcome.record.cost.usd if outcome else None,
                         result.billed_usd if result else None)
        await self._record_check(check)
        if state is KeyCheckState.AWAITING_APPROVAL:
            await self.approvals.request(
                ACTIVATE_KEY,
                summary=f"Activate the new key for {provider_id}",
                evidence=f"sandbox test on {model.id}: {reason}",
                proposed_action=f"route real traffic to {provider_id}"
                                + (f" at the announced price for {model.id}"
                                   if announced is not None else ""),
                payload={"provider": provider_id},
            )
        elif state is KeyCheckState.ACTIVE:
            await self._adopt_announcement(provider_id)
        return check

    def _sandbox_model(self, spec: ProviderSpec, announced: dict[str, Any] | None = None
                       ) -> ModelSpec:
        if announced is not None and (model := spec.model(announced["model"])) is not None:
            return model

        def price(model: ModelSpec) -> float:
            rates = self.prices.rates(spec, model)
            return rates.input + rates.output if rates else float("inf")

        return min(spec.models, key=price)

    async def _on_activation_decided(self, approval: Approval, approved: bool) -> None:
        provider = str(approval.payload.get("provider"))
        current = self.key_check(provider)
        if current.state is not KeyCheckState.AWAITING_APPROVAL:
            return  # the key changed since: this decision is about a key that is gone
        state = KeyCheckState.ACTIVE if approved else KeyCheckState.REJECTED
        reason = "activated by the operator" if approved else "activation declined"
        await self._record_check(KeyCheck(provider, state, f"{reason}; {current.reason}",
                                          self.clock.now(), current.latency_s, current.usd,
                                          current.billed_usd))
        if approved:
            await self._adopt_announcement(provider)

    async def _adopt_announcement(self, provider: str) -> None:
        """The funnel's end: the announced price, verified by the sandbox, is the price."""
        announced = await self.store.setting(ANNOUNCED + provider)
        if announced is None:
            return
        await self.store.set_setting(ANNOUNCED + provider, None, self.clock.now())
        if self.provider_spec(provider).model(announced["model"]) is not None:
            await self.approve_price(provider, announced["model"],
                                     announced["input_per_mtok"],
                                     announced["output_per_mtok"], announced.get("item_id"))

    async def _record_check(self, check: KeyCheck, *, persist: bool = True) -> None:
        self._checks[check.provider] = check
        if persist:
            await self.store.add_key_check(check.ts, check.provider,
                                           check.state is KeyCheckState.ACTIVE
                                           or check.state is KeyCheckState.AWAITING_APPROVAL,
                                           check.state.value, check.reason, check.latency_s,
                                           check.usd, check.billed_usd)
        self._refresh_routable()
        self.bus.publish(KeyCheckUpdated(self.clock.now(), check))

    async def _key_changed(self, spec: ProviderSpec) -> KeyStatus:
        status = await asyncio.to_thread(self.vault.status, spec)
        self._key_status[spec.id] = status
        self._refresh_routable()
        provider = self._providers.pop(spec.id, None)
        if provider is not None:
            await provider.aclose()
        self.health.key_changed(spec.id)
        self.bus.publish(KeyStateChanged(self.clock.now(), spec.id, status))
        return status

    # -- veille ----------------------------------------------------------------------------

    @property
    def veille(self) -> VeilleWatch:
        if self._veille is None:
            from .veille.watch import VeilleWatch

            self._veille = VeilleWatch(self)
        return self._veille

    async def start_veille(self) -> None:
        """Watch the market every [veille] interval_s until stop() (the cockpit)."""
        if self.bouquet.veille.enabled:
            await self.provider_views()  # what is routable: the bar an offer must clear
            self.veille.start()

    async def veille_items(self, *, limit: int = 200, label: str | None = None
                           ) -> list[VeilleItem]:
        from .veille.item import VeilleItem

        return [VeilleItem.from_row(row)
                for row in await self.store.veille_items(limit=limit, label=label)]

    async def comparison_matrix(self) -> list[MatrixRow]:
        from .veille import matrix

        await self.provider_views()  # routable needs the keys' states
        return await asyncio.to_thread(matrix.build, self)

    async def approve_price(self, provider: str, model: str, input_per_mtok: float,
                            output_per_mtok: float, item_id: int | None) -> None:
        """The comparison matrix takes a price: routing and costs use it from now on."""
        await self.store.set_price_update(provider, model, input_per_mtok, output_per_mtok,
                                          item_id, self.clock.now())
        self.prices.approve(provider, model, input_per_mtok, output_per_mtok)
        self.router.reprice(self.prices)
        self.update_mode()  # the cheapest API price is one of the mode's signals

    async def _on_price_update_decided(self, approval: Approval, approved: bool) -> None:
        if approved:
            p = approval.payload
            await self.approve_price(p["provider"], p["model"], p["input_per_mtok"],
                                     p["output_per_mtok"], p.get("item_id"))

    async def _on_opportunity_decided(self, approval: Approval, approved: bool) -> None:
        p = approval.payload
        if approved and p.get("report", {}).get("funnel"):
            # The sandbox test of the key to come checks the bill against this.
            await self.store.set_setting(
                ANNOUNCED + p["provider"],
                {key: p.get(key) for key in ("model", "input_per_mtok", "output_per_mtok",
                                             "item_id")},
                self.clock.now())

    # -- calls -----------------------------------------------------------------------------

    async def choose(self, provider_id: str | None, model_id: str | None
                     ) -> tuple[ProviderSpec, ModelSpec]:
        """Until the router lands: the named pair, else the cheapest usable chat model."""
        if provider_id is not None:
            spec = self.provider_spec(provider_id)
            if model_id is not None:
                model = self.model_spec(spec, model_id)
                # An undeclared model is fine if its price is known (the budget can bound
                # it); otherwise it is a typo far more often than a model to call unpriced.
                if spec.model(model_id) is None and self.prices.rates(spec, model) is None:
                    raise UsageError(
                        f"unknown model {model_id!r} for {spec.id}",
                        fix=f"use one of: {', '.join(m.id for m in spec.models)} "
                            "(see `aetherflow providers`)")
                return spec, model
            chat = [m for m in spec.models if "chat" in m.roles]
            return spec, (chat or list(spec.models))[0]
        if model_id is not None and not any(
                spec.model(model_id) for spec in self.bouquet.providers.values()):
            known = ", ".join(f"{spec.id}/{m.id}" for spec in self.bouquet.providers.values()
                              if spec.enabled for m in spec.models)
            raise UsageError(f"unknown model {model_id!r}: no provider declares it",
                             fix=f"use one of: {known} (see `aetherflow providers`)")
        routable = [v for v in await self.provider_views() if v.routable]
        # An open circuit takes a provider out of automatic choice until its cool-down ends.
        views = [v for v in routable if self.health.circuit(v.id).allows_traffic()]
        if routable and not views:
            raise UsageError("every provider with a tested key has an open circuit",
                             fix="wait for the cool-down, or name one with --provider")
        best: tuple[float, ProviderSpec, ModelSpec] | None = None
        for view in views:
            spec = self.bouquet.providers[view.id]
            for model in spec.models:
                if model_id is not None and model.id != model_id:
                    continue
                rates = self.prices.rates(spec, model)
                price = rates.input + rates.output if rates else float("inf")
                if best is None or price < best[0]:
                    best = (price, spec, model)
        if best is None:
            which = f"serves {model_id!r}" if model_id else "has a tested key"
            raise UsageError(f"no provider {which}",
                             fix="add and test a key with `aetherflow key set PROVIDER`, or "
                                 "name one with --provider")
        return best[1], best[2]

    async def ask(self, prompt: str, *, provider: str | None = None, model: str | None = None,
                  max_tokens: int | None = None, stream: bool = True,
                  on_token: OnToken | None = None, purpose: str = "ask") -> CallOutcome:
        if not prompt.strip():
            raise UsageError("the prompt is empty", fix="give the question as an argument")
        spec, model_spec = await self.choose(provider, model)
        await self.sync_budget()
        request = ChatRequest.ask(model_spec.id, prompt, max_tokens=max_tokens, stream=stream)
        outcome = await self.call(spec, request, purpose=purpose, on_token=on_token)
        return await self.settled(outcome)

    async def call(self, spec: ProviderSpec, request: ChatRequest, *, purpose: str,
                   on_token: OnToken | None = None, run_id: str | None = None,
                   step_id: str | None = None,
                   on_wait: Callable[[str | None], None] | None = None) -> CallOutcome:
        """One provider call, priced and queued for the store.

        Before it goes out, the call's worst case must fit the hard limits (BudgetRefused
        otherwise) and is reserved, covered by what this process holds of the day in the
        store for every process to see (a disk write only when that holding must grow). A
        call that fits the day only once the calls in flight settle waits for them, telling
        `on_wait` why (and None when it stops waiting). The returned record has no energy
        yet; `settled()` waits for the durable row, which settles the reservation.
        """
        self.check_dispatch()
        self.store.check_writable()  # a call the store could not record must not go out
        provider = await self._provider_for(spec)
        model = self.model_spec(spec, request.model)
        if request.max_tokens is None:
            request = replace(request, max_tokens=DEFAULT_MAX_TOKENS)
        max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS
        rates = self.prices.rates(spec, model)
        worst_in = worst_input_tokens(request)
        refusal = self.guard.per_call(rates, worst_in, max_tokens)
        if refusal is not None:
            raise BudgetRefused(f"{spec.id}/{model.id}", refusal)
        assert rates is not None  # per_call refuses an unpriced model
        # Tiered prices charge more past a size: the table's own price of the worst usage
        # keeps the reservation an upper bound there too.
        worst = max(worst_cost(rates, worst_in, max_tokens),
                    self.prices.cost(spec, model, Usage(worst_in, max_tokens)).usd or 0.0)
        reservation = await self._reserve(spec, model, worst, on_wait)
        if self.held is not None:  # an emergency stop came while it waited
            self._release(reservation, spec.id)
            self.check_dispatch()
        now = self.clock.now()
        day = reservation.day
        real = purpose != "canary"  # a canary is judged on its answer (probes.py)
        # A key test is not traffic either: one refused key is no error rate.
        traffic = real and purpose != "sandbox"
        if real:
            self.health.circuit(spec.id).dispatching()
        started = time.perf_counter()
        delivered = 0  # bytes of answer streamed so far: what a cut call was billed for

        def count(token: str) -> Any:
            nonlocal delivered
            delivered += len(token.encode())
            return on_token(token) if on_token is not None else None

        self._in_flight += 1
        try:
            result = await provider.complete(request, count)
        except (ProviderError, asyncio.CancelledError) as error:
            cancelled = isinstance(error, asyncio.CancelledError)
            cost = (self.prices.cost(spec, model, Usage(worst_in, min(delivered, max_tokens)))
                    if cancelled or _billed_failure(error) else None)
            cost = NOT_BILLED if cost is None else Cost(cost.usd, BILLED_FAILURE)
            self._settle(reservation, spec.id, cost.usd or 0.0)
            record = CallRecord(
                ts=now, day=day, provider=spec.id, model=request.model,
                purpose=purpose, ok=False,
                error_kind="cancelled" if cancelled else error.kind,  # type: ignore[union-attr]
                error="cancelled by the operator" if cancelled else excerpt(str(error)),
                duration_s=time.perf_counter() - started, cost=cost,
                input_tokens=worst_in if cost.usd else 0,
                output_tokens=min(delivered, max_tokens) if cost.usd else 0,
                usage_estimated=bool(cost.usd), energy=UNKNOWN_ENERGY, run_id=run_id,
                step_id=step_id, reservation=reservation.row,
            )
            durable = self.store.record_call(record)
            if real:
                self.health.call_ended(spec.id, False, record.error_kind)
                if not cancelled and traffic:
                    self._recent.append((now, False, record.duration_s))
            if cancelled:
                raise
            return CallOutcome(record, None, error, durable)  # type: ignore[arg-type]
        except BaseException as bug:
            # Not the provider's failure (an on_token callback that raised, a bug): the
            # reservation must not stay held, and what the provider took is still charged.
            cost = self.prices.cost(spec, model, Usage(worst_in, min(delivered, max_tokens)))
            cost = Cost(cost.usd, BILLED_FAILURE)
            self._settle(reservation, spec.id, cost.usd or 0.0)
            self.store.record_call(CallRecord(
                ts=now, day=day, provider=spec.id, model=request.model, purpose=purpose,
                ok=False, error_kind="internal", error=excerpt(f"{type(bug).__name__}: {bug}"),
                duration_s=time.perf_counter() - started, cost=cost, input_tokens=worst_in,
                output_tokens=min(delivered, max_tokens), usage_estimated=True,
                energy=UNKNOWN_ENERGY, run_id=run_id, step_id=step_id,
                reservation=reservation.row))
            raise
        finally:
            self._in_flight -= 1
        if real:
            self.health.call_ended(spec.id, True, None)
        if traffic:
            self._recent.append((now, True, result.duration_s))
        usage = _bounded(result.usage, worst_in, max_tokens)
        cost = self.prices.cost(spec, model, usage)
        if cost.usd is not None and cost.usd < 0:
            cost = Cost(0.0, cost.method)
        self._settle(reservation, spec.id, cost.usd or 0.0)
        flag = None
        if usage != result.usage:
            flag = (f"the provider reported usage outside this call's bounds "
                    f"({result.usage.input_tokens} in, {result.usage.output_tokens} out for "
                    f"at most {worst_in} in, {max_tokens} out): counted within them")
        record = CallRecord(
            ts=now, day=day, provider=spec.id, model=model.id, purpose=purpose,
            ok=True, input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens, output_tokens=usage.output_tokens,
            usage_estimated=usage.estimated, ttft_s=result.ttft_s, duration_s=result.duration_s,
            tokens_per_s=result.tokens_per_s, cost=cost, run_id=run_id, step_id=step_id,
            energy=result.energy,  # measured for local models; else the writer estimates
            error=flag, reservation=reservation.row,
        )
        return CallOutcome(record, result, None, self.store.record_call(record))

    async def _reserve(self, spec: ProviderSpec, model: ModelSpec, usd: float,
                       on_wait: Callable[[str | None], None] | None) -> Reservation:
        """The call's worst case, reserved here and then against what this process holds
        of the day in the store; while it fits the day only beside the reservations in
        flight (here or in other processes), wait for them."""
        label = f"{spec.id}/{model.id}"
        waiting = False
        try:
            while True:
                day = local_day(self.clock.now())
                held = self.guard.reserve(day, usd)
                if isinstance(held, Refusal):
                    raise BudgetRefused(label, held)
                if isinstance(held, Reservation) and usd <= 0:
                    return held  # free (a local model): nothing to hold in the store
                if isinstance(held, Reservation):
                    try:
                        row, spent, reserved = await self.shared.take(
                            day, spec.id, usd, self.clock.now())
                    except BaseException:
                        self.guard.release(held)
                        raise
                    if row is not None:
                        held.row = row
                        return held
                    # Other processes' spend or holdings: what the store says wins.
                    self.guard.release(held)
                    self.guard.sync(day, spent)
                    refusal = self.guard.refuse(usd, spent)
                    if refusal is not None:
                        raise BudgetRefused(label, refusal)
                    held = Full(f"worst case ${usd:.4f} waits for ${reserved:.4f} reserved "
                                f"by calls in flight (${spent:.4f} spent, "
                                f"${self.bouquet.budget.daily_usd:g} a day)")
                    await self.shared.give_back()  # what this process holds may be theirs
                    await self._expire_dead_reservations()
                if not waiting and on_wait is not None:
                    on_wait(f"waiting for budget: {held.reason}")
                waiting = True
                await self.guard.changed(BUDGET_WAIT_POLL_S)
                self.check_dispatch()  # an emergency stop ends the wait: DispatchHeld
        finally:
            if waiting and on_wait is not None:
                on_wait(None)

    def _settle(self, reservation: Reservation, provider: str, usd: float) -> None:
        self.guard.settle(reservation, usd)
        self.shared.settle(reservation.day, provider, reservation.usd, usd)

    def _release(self, reservation: Reservation, provider: str) -> None:
        self._settle(reservation, provider, 0.0)

    async def _expire_dead_reservations(self) -> None:
        """Calls a dead process left in flight become spend at their worst case; at most
        once a second, since it asks the OS about every process holding a reservation."""
        now = time.monotonic()
        if now - self._expired_at < 1.0:
            return
        self._expired_at = now
        if await self.store.expire_reservations(process_alive):
            day = local_day(self.clock.now())
            self.guard.sync(day, await self.store.day_spend(day))

    async def settled(self, outcome: CallOutcome) -> CallOutcome:
        """The same outcome once its row is committed, with energy filled in."""
        if outcome.durable is None:
            return outcome
        return CallOutcome(await outcome.durable, outcome.result, outcome.error)

    async def _provider_for(self, spec: ProviderSpec) -> Provider:
        return self._providers.get(spec.id) or await self._provider(spec)

    async def _provider(self, spec: ProviderSpec) -> Provider:
        async with self._provider_lock:
            provider = self._providers.get(spec.id)
            if provider is None:
                key = await asyncio.to_thread(self.vault.get, spec)
                if key is None and spec.key != "none":
                    status = await asyncio.to_thread(self.vault.status, spec)
                    raise UsageError(f"no key for {spec.id}", fix=status.detail)
                provider = build_provider(spec, key, models_dir=self.home / "models")
                self._providers[spec.id] = provider
            return provider

    def _estimate_energy(self, record: CallRecord) -> CallRecord:
        spec = self.bouquet.providers.get(record.provider)
        if spec is None:
            return record.with_energy(UNKNOWN_ENERGY)
        model = self.model_spec(spec, record.model)
        return record.with_energy(
            self.energy.estimate(spec, model, record.output_tokens, record.duration_s))

    def _publish_calls(self, rows: Sequence[CallRecord]) -> None:
        for row in rows:
            self.guard.committed(row.day, row.cost.usd or 0.0)
            if row.reservation is not None:
                self.shared.written(row.day, row.provider, row.cost.usd or 0.0)
            self.bus.publish(CallRecorded(row.ts, row))
            if row.purpose == "canary":
                continue  # the prober publishes its verdict, answer checked
            health = self.health.observe(row, circuit=False)  # call() told it already
            self._health_changed(health)
            if (not row.ok and self.health.circuit(row.provider).is_open
                    and self.vigilance is not None and self.vigilance.canaries != "off"):
                self.prober.probe_soon(row.provider)  # the probe that lets traffic back
        self.update_mode()

    # -- totals ----------------------------------------------------------------------------

    async def totals_today(self) -> list[ProviderTotals]:
        return await self.store.totals_for_day(local_day(self.clock.now()))

    async def spend_view(self) -> SpendView:
        now = self.clock.now()
        this_minute = int(now // 60)
        series = {m: (usd, wh, g) for m, usd, wh, g in
                  await self.store.minute_series((this_minute - 59) * 60)}
        minutes = tuple(series.get(m, (0.0, 0.0, 0.0))
                        for m in range(this_minute - 59, this_minute + 1))
        return SpendView(local_day(now), self.bouquet.budget.daily_usd,
                         tuple(await self.totals_today()), minutes)

    # -- plans -----------------------------------------------------------------------------

    def load_plan(self, path: Path) -> plan_mod.Plan:
        """Read and validate a plan, pins checked against this bouquet (PlanError: exit 2)."""
        return self._read_plan(path)[0]

    def _read_plan(self, path: Path) -> tuple[plan_mod.Plan, str, str]:
        """The plan, its text and its digest: read once, on a thread (blocking work)."""
        known = {pid: tuple(m.id for m in spec.models)
                 for pid, spec in self.bouquet.providers.items()}
        text = plan_mod.read_text(path)
        plan = plan_mod.parse(text, path, known_providers=known)
        return plan, text, plan.digest()

    async def start_run(self, plan_path: Path, *, mode: Mode | str | None = None,
                        resume: str | None = None, output_dir: Path | None = None) -> PlanRun:
        """Validate the plan, record the run, start it; the run goes on in the background.

        resume: a run id of this plan; its finished steps keep their outputs and only the
        rest runs. output_dir: each step's output is written there as it finishes, plus
        run.json at the end (default: runs/RUN_ID under the data dir).
        """
        # realpath, not resolve(): on a symlink loop 3.11's resolve() raises RuntimeError,
        # where the read below gives the operator one line.
        plan_path = Path(os.path.realpath(plan_path.expanduser()))
        # The plan, the keys and today's spend are read side by side: the run's first
        # steps wait for all three, and none of them needs another.
        read, _, _ = await _all(asyncio.to_thread(self._read_plan, plan_path),
                                self.provider_views(), self.sync_budget())
        plan, plan_text, digest = read
        self.check_dispatch()
        mode = Mode(mode or self.bouquet.routing.mode)
        restored: dict[str, dict[str, Any]] = {}
        if resume is not None:
            row = await self.store.run(resume)
            if row is None:
                raise UsageError(f"no run {resume!r} in {self.store.path}",
                                 fix="list runs with `aetherflow runs`")
            if resume in self._runs:
                raise UsageError(f"run {resume} is still running", fix="wait for it or cancel it")
            if row["plan_digest"] != digest:
                raise PlanError(f"this plan is not the one run {resume} started with",
                                path=str(plan_path),
                                fix="resume with the same plan file, or start a new run")
            restored = {s["step_id"]: s for s in await self.store.steps(resume)}
            run_id = resume
            await self.store.update_run(run_id, status=RunStatus.RUNNING.value,
                                        mode=mode.value, finished=None, detail=None,
                                        pid=os.getpid())
        else:
            run_id = self._new_run_id()
            await self.store.create_run(run_id, plan.task_id, str(plan_path), mode.value,
                                        self.clock.now(), digest, plan_text, os.getpid())
        if not self._energy_ready:
            await asyncio.to_thread(self.router.estimate_energy, self._wh_per_1k)
            self._energy_ready = True
            _freeze_long_lived()
        if output_dir is None:
            output_dir = self.home / "runs" / run_id
        run = PlanRun(self, plan, plan_path, run_id, mode, restored, output_dir)
        self._runs[run_id] = run
        run.start()
        return run

    def active_runs(self) -> list[PlanRun]:
        return list(self._runs.values())

    async def runs_in_flight(self) -> list[str]:
        """The ids of the runs going on now, here or in any other live process (a CLI run
        while the cockpit is open): what an emergency stop cancels."""
        from .vigilance import ALIVE_WITHIN_S

        live = {p["pid"] for p in await self.store.processes(self.clock.now() - ALIVE_WITHIN_S)}
        live.discard(os.getpid())  # this process's runs are the ones it holds
        ids = list(self._runs)
        ids += [row["id"] for row in await self.store.running_runs()
                if row["pid"] in live and row["id"] not in self._runs]
        return ids

    def _run_finished(self, run: PlanRun) -> None:
        self._runs.pop(run.run_id, None)

    def _new_run_id(self) -> str:
        stamp = datetime.fromtimestamp(self.clock.now()).strftime("%Y%m%d-%H%M%S")
        return f"{stamp}-{secrets.token_hex(2)}"

    def _wh_per_1k(self, spec: ProviderSpec, model: ModelSpec) -> float | None:
        return self.energy.estimate(spec, model, 1000, 10.0).wh

    async def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Recent runs; one still marked running that this process does not hold was cut
        short (a crash or kill): it shows as interrupted, ready to resume."""
        rows = await self.store.runs(limit)
        for row in rows:
            if row["status"] == RunStatus.RUNNING and row["id"] not in self._runs:
                row["status"] = RunStatus.INTERRUPTED.value
        return rows

    async def last_run(self) -> tuple[RunView, list[StepView]] | None:
        """The run to show: the newest one here, else the newest in the store, as it stands."""
        if self._runs:
            run = max(self._runs.values(), key=lambda r: r.started)
            return run.view(), run.steps()
        rows = await self.runs(1)
        if not rows:
            return None
        row = rows[0]
        plan_text = (await self.store.run(row["id"]) or {}).get("plan_text") or ""
        types = _step_types(plan_text)
        saved = {s["step_id"]: s for s in await self.store.steps(row["id"])}
        steps = [_step_view(saved.get(step_id), step_id, step_type)
                 for step_id, step_type in types.items()]
        counts = {state: sum(1 for s in steps if s.state is state) for state in StepState}
        view = RunView(row["id"], row["task_id"] or "", row["mode"] or "",
                       RunStatus(row["status"]), len(steps), counts[StepState.DONE],
                       counts[StepState.FAILED], counts[StepState.SKIPPED],
                       counts[StepState.RUNNING], counts[StepState.CANCELLED], row["started"],
                       row["finished"], sum(s.usd for s in steps), None, row["detail"])
        return view, steps


async def _all(*steps: Awaitable[Any]) -> list[Any]:
    """Await every step together; then raise the first failure, in argument order (a bad
    plan before a keychain hiccup), once none of them is still running."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _step_types(plan_text: str) -> dict[str, str]:
    """Step ids and types in plan order, from the plan text a run recorded."""
    import json

    try:
        steps = json.loads(plan_text).get("steps") or []
        return {str(s["id"]): str(s.get("type", "")) for s in steps}
    except (ValueError, AttributeError, KeyError, TypeError):
        return {}


def _step_view(row: dict[str, Any] | None, step_id: str, step_type: str) -> StepView:
    if row is None:
        return StepView(step_id, step_type, StepState.PENDING)
    state = StepState(row["status"])
    error = row["error"]
    if state is StepState.RUNNING:  # its process is gone: it did not finish
        state = StepState.CANCELLED
        error = "interrupted: the process running it stopped; resume the run"
    return StepView(step_id, step_type, state, row["provider"], row["model"],
                    row["attempts"], row["started"], row["finished"], row["input_tokens"],
                    row["output_tokens"], row["usd"], row["ttft_s"], row["duration_s"],
                    error, row["flag"], row["reason"])
