"""The engine: the one owner of state and I/O. The cockpit and the CLI only call it.

Never imports textual (tests/unit/test_engine_boundary.py enforces it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import secrets
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config as config_mod
from . import plan as plan_mod
from .approvals import ACTIVATE_KEY, Approval, ApprovalQueue
from .budget import BudgetGuard, Refusal, worst_cost, worst_input_tokens
from .bus import EventBus
from .clock import Clock, SystemClock, local_day
from .config import Bouquet, ModelSpec, ProviderSpec
from .errors import BudgetRefused, ConfigError, OperatorError, PlanError, UsageError
from .events import (
    CallRecorded,
    ConcurrencyChanged,
    KeyCheckUpdated,
    KeyStateChanged,
    ProviderHealthChanged,
    ResponseModeChanged,
)
from .gates import ConcurrencyCap, ProviderGate
from .health import HealthBook, ProviderHealth
from .keycheck import (
    SANDBOX_MAX_TOKENS,
    SANDBOX_PROMPT,
    KeyCheck,
    KeyCheckState,
    judge,
)
from .keys import KeyState, KeyStatus, KeyVault, check_key_text
from .ledger import NOT_BILLED, UNKNOWN_ENERGY, EnergyEstimator, PriceTable, Rates
from .modes import LOGIC_ROLES, ModeController, ModeSignals, ResponseMode
from .paths import Paths
from .progress import RunStatus, RunView, StepState, StepView
from .providers import build_provider
from .providers.base import (
    ChatRequest,
    ChatResult,
    OnToken,
    Provider,
    ProviderError,
)
from .records import CallRecord, ProviderTotals
from .router import Mode, Router
from .scheduler import PlanRun
from .store import INSERT_MODE_CHANGE, Store
from .text import excerpt

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CallOutcome", "Engine", "Mode", "ModelView", "PlanRun", "ProviderView",
           "ResponseMode", "SpendView", "load_bouquet"]

# An answer with no cap would make its worst-case cost unbounded.
DEFAULT_MAX_TOKENS = 1024
# How often the budget re-reads today's spend, which other processes may have added to.
BUDGET_SYNC_S = 5.0


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


def _freeze_long_lived() -> None:
    """The price table, EcoLogits' models and the config are loaded by now and live as long
    as the process: move them out of the cyclic GC's scans (gc.freeze), so a full collection
    during a run walks only the run's own objects. Unfrozen, one gen-2 pass took ~30 ms and
    stalled every step finishing at that moment (benchmarks/scheduler.py, makespan)."""
    gc.collect()
    gc.freeze()


def load_bouquet(paths: Paths) -> Bouquet:
    if paths.config_explicit and not paths.config.exists():
        raise ConfigError("config file not found", path=str(paths.config),
                          fix=f"create it with `aetherflow config init --config {paths.config}`")
    return config_mod.load(paths.config)


class Engine:
    def __init__(self, bouquet: Bouquet, home: Path, *, vault: KeyVault | None = None,
                 clock: Clock | None = None) -> None:
        self.bouquet = bouquet
        self.home = home
        self.vault = vault or KeyVault()
        self.clock = clock or SystemClock()
        self.bus = EventBus()
        self.prices = PriceTable()
        self.energy = EnergyEstimator()
        self.health = HealthBook(self.clock)
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
        self.modes = ModeController(bouquet.modes, self.clock.now())

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Engine:
        self._store = await Store.open(self.home / "aetherflow.db")
        self._store.prepare = self._estimate_energy
        self._store.on_committed = self._publish_calls
        self._approvals = ApprovalQueue(self._store, self.bus, self.clock)
        self._approvals.handle(ACTIVATE_KEY, self._on_activation_decided)
        for provider, row in (await self._store.latest_key_checks()).items():
            _, ts, _, state, reason, latency, usd, billed = row
            self._checks[provider] = KeyCheck(provider, KeyCheckState(state), reason, ts,
                                              latency, usd, billed)
        # Health starts from the recent past, not from nothing, after a restart.
        for record in reversed(await self._store.recent_calls(500)):
            self.health.observe(record)
        await self.sync_budget()
        self._budget_sync = asyncio.create_task(self._keep_budget_synced(),
                                                name="budget-sync")
        return self

    async def stop(self) -> None:
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
                           min(prices) if prices else None)

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
        """The sandbox test: one real minimal call. `activate` skips the approval (CLI)."""
        spec = self.provider_spec(provider_id)
        await self._record_check(KeyCheck(provider_id, KeyCheckState.TESTING,
                                          "sandbox call in flight", self.clock.now()),
                                 persist=False)
        model = self._sandbox_model(spec)
        request = ChatRequest.ask(model.id, SANDBOX_PROMPT, max_tokens=SANDBOX_MAX_TOKENS,
                                  stream=False)
        try:
            outcome = await self.settled(await self.call(spec, request, purpose="sandbox"))
        except OperatorError as exc:
            outcome = None
            passed, reason = False, str(exc)
        else:
            passed, reason = judge(outcome.result, outcome.error, outcome.record.cost)
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
                proposed_action=f"route real traffic to {provider_id}",
                payload={"provider": provider_id},
            )
        return check

    def _sandbox_model(self, spec: ProviderSpec) -> ModelSpec:
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

    # -- calls -----------------------------------------------------------------------------

    async def choose(self, provider_id: str | None, model_id: str | None
                     ) -> tuple[ProviderSpec, ModelSpec]:
        """Until the router lands: the named pair, else the cheapest usable chat model."""
        if provider_id is not None:
            spec = self.provider_spec(provider_id)
            if model_id is not None:
                return spec, self.model_spec(spec, model_id)
            chat = [m for m in spec.models if "chat" in m.roles]
            return spec, (chat or list(spec.models))[0]
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
                   step_id: str | None = None) -> CallOutcome:
        """One provider call, priced and queued for the store. The hot path: no disk wait.

        The returned record has no energy yet; `settled()` waits for the durable row.
        Before it goes out, the call's worst case must fit the hard limits (BudgetRefused
        otherwise); that worst case stays reserved until the call ends.
        """
        provider = await self._provider_for(spec)
        model = self.model_spec(spec, request.model)
        if request.max_tokens is None:
            request = replace(request, max_tokens=DEFAULT_MAX_TOKENS)
        max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS
        now = self.clock.now()
        day = local_day(now)
        rates = self.prices.rates(spec, model)
        worst_in = worst_input_tokens(request)
        reservation = self.guard.per_call(rates, worst_in, max_tokens) or self.guard.reserve(
            day, worst_cost(rates, worst_in, max_tokens))  # type: ignore[arg-type]
        if isinstance(reservation, Refusal):
            raise BudgetRefused(f"{spec.id}/{model.id}", reservation)
        self.health.circuit(spec.id).dispatching()
        started = time.perf_counter()
        self._in_flight += 1
        try:
            result = await provider.complete(request, on_token)
        except (ProviderError, asyncio.CancelledError) as error:
            self.guard.settle(reservation, 0.0)
            cancelled = isinstance(error, asyncio.CancelledError)
            record = CallRecord(
                ts=now, day=day, provider=spec.id, model=request.model,
                purpose=purpose, ok=False,
                error_kind="cancelled" if cancelled else error.kind,  # type: ignore[union-attr]
                error="cancelled by the operator" if cancelled else excerpt(str(error)),
                duration_s=time.perf_counter() - started, cost=NOT_BILLED,
                energy=UNKNOWN_ENERGY, run_id=run_id, step_id=step_id,
            )
            durable = self.store.record_call(record)
            if cancelled:
                raise
            return CallOutcome(record, None, error, durable)  # type: ignore[arg-type]
        finally:
            self._in_flight -= 1
        usage = result.usage
        cost = self.prices.cost(spec, model, usage)
        self.guard.settle(reservation, cost.usd or 0.0)
        record = CallRecord(
            ts=now, day=day, provider=spec.id, model=model.id, purpose=purpose,
            ok=True, input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens, output_tokens=usage.output_tokens,
            usage_estimated=usage.estimated, ttft_s=result.ttft_s, duration_s=result.duration_s,
            tokens_per_s=result.tokens_per_s, cost=cost, run_id=run_id, step_id=step_id,
            energy=result.energy,  # measured for local models; else the writer estimates
        )
        return CallOutcome(record, result, None, self.store.record_call(record))

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
            self.bus.publish(CallRecorded(row.ts, row))
            health = self.health.observe(row)
            self.bus.publish(ProviderHealthChanged(row.ts, health))
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
        known = {pid: tuple(m.id for m in spec.models)
                 for pid, spec in self.bouquet.providers.items()}
        return plan_mod.load(path, known_providers=known)

    async def start_run(self, plan_path: Path, *, mode: Mode | str | None = None,
                        resume: str | None = None, output_dir: Path | None = None) -> PlanRun:
        """Validate the plan, record the run, start it; the run goes on in the background.

        resume: a run id of this plan; its finished steps keep their outputs and only the
        rest runs. output_dir: each step's output is written there as it finishes, plus
        run.json at the end (default: runs/RUN_ID under the data dir).
        """
        plan_path = plan_path.expanduser().resolve()
        plan = await asyncio.to_thread(self.load_plan, plan_path)
        mode = Mode(mode or self.bouquet.routing.mode)
        restored: dict[str, dict[str, Any]] = {}
        if resume is not None:
            row = await self.store.run(resume)
            if row is None:
                raise UsageError(f"no run {resume!r} in {self.store.path}",
                                 fix="list runs with `aetherflow runs`")
            if resume in self._runs:
                raise UsageError(f"run {resume} is still running", fix="wait for it or cancel it")
            if row["plan_digest"] != plan.digest():
                raise PlanError(f"this plan is not the one run {resume} started with",
                                path=str(plan_path),
                                fix="resume with the same plan file, or start a new run")
            restored = {s["step_id"]: s for s in await self.store.steps(resume)}
            run_id = resume
            await self.store.update_run(run_id, status=RunStatus.RUNNING.value,
                                        mode=mode.value, finished=None, detail=None)
        else:
            run_id = self._new_run_id()
            await self.store.create_run(run_id, plan.task_id, str(plan_path), mode.value,
                                        self.clock.now(), plan.digest(),
                                        plan_path.read_text("utf-8"))
        await self.provider_views()  # which providers have a usable, tested key now
        await self.sync_budget()
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
