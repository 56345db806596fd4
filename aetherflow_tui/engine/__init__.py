"""The engine: the one owner of state and I/O. The cockpit and the CLI only call it.

Never imports textual (tests/unit/test_engine_boundary.py enforces it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import config as config_mod
from .approvals import ACTIVATE_KEY, Approval, ApprovalQueue
from .bus import EventBus
from .clock import Clock, SystemClock, local_day
from .config import Bouquet, ModelSpec, ProviderSpec
from .errors import ConfigError, UsageError
from .events import CallRecorded, KeyCheckUpdated, KeyStateChanged, ProviderHealthChanged
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
from .paths import Paths
from .providers import build_provider
from .providers.base import (
    ChatRequest,
    ChatResult,
    OnToken,
    Provider,
    ProviderError,
)
from .records import CallRecord, ProviderTotals
from .store import Store
from .text import excerpt

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CallOutcome", "Engine", "ModelView", "ProviderView", "SpendView", "load_bouquet"]


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
        return self.usable and (self.key.source != "keyring" or self.check.active)


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
        return self

    async def stop(self) -> None:
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
        except UsageError as exc:
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
        self.bus.publish(KeyCheckUpdated(self.clock.now(), check))

    async def _key_changed(self, spec: ProviderSpec) -> KeyStatus:
        status = await asyncio.to_thread(self.vault.status, spec)
        self._key_status[spec.id] = status
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
        request = ChatRequest.ask(model_spec.id, prompt, max_tokens=max_tokens, stream=stream)
        outcome = await self.call(spec, request, purpose=purpose, on_token=on_token)
        return await self.settled(outcome)

    async def call(self, spec: ProviderSpec, request: ChatRequest, *, purpose: str,
                   on_token: OnToken | None = None, run_id: str | None = None,
                   step_id: str | None = None) -> CallOutcome:
        """One provider call, priced and queued for the store. The hot path: no disk wait.

        The returned record has no energy yet; `settled()` waits for the durable row.
        """
        provider = self._providers.get(spec.id) or await self._provider(spec)
        model = self.model_spec(spec, request.model)
        now = self.clock.now()
        started = time.perf_counter()
        self._in_flight += 1
        try:
            result = await provider.complete(request, on_token)
        except ProviderError as error:
            record = CallRecord(
                ts=now, day=local_day(now), provider=spec.id, model=request.model,
                purpose=purpose, ok=False, error_kind=error.kind, error=excerpt(str(error)),
                duration_s=time.perf_counter() - started, cost=NOT_BILLED,
                energy=UNKNOWN_ENERGY, run_id=run_id, step_id=step_id,
            )
            return CallOutcome(record, None, error, self.store.record_call(record))
        finally:
            self._in_flight -= 1
        usage = result.usage
        record = CallRecord(
            ts=now, day=local_day(now), provider=spec.id, model=model.id, purpose=purpose,
            ok=True, input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens, output_tokens=usage.output_tokens,
            usage_estimated=usage.estimated, ttft_s=result.ttft_s, duration_s=result.duration_s,
            tokens_per_s=result.tokens_per_s, cost=self.prices.cost(spec, model, usage),
            run_id=run_id, step_id=step_id,
        )
        return CallOutcome(record, result, None, self.store.record_call(record))

    async def settled(self, outcome: CallOutcome) -> CallOutcome:
        """The same outcome once its row is committed, with energy filled in."""
        if outcome.durable is None:
            return outcome
        return CallOutcome(await outcome.durable, outcome.result, outcome.error)

    async def _provider(self, spec: ProviderSpec) -> Provider:
        async with self._provider_lock:
            provider = self._providers.get(spec.id)
            if provider is None:
                key = await asyncio.to_thread(self.vault.get, spec)
                if key is None and spec.key != "none":
                    status = await asyncio.to_thread(self.vault.status, spec)
                    raise UsageError(f"no key for {spec.id}", fix=status.detail)
                provider = build_provider(spec, key)
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
            self.bus.publish(CallRecorded(row.ts, row))
            health = self.health.observe(row)
            self.bus.publish(ProviderHealthChanged(row.ts, health))

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
