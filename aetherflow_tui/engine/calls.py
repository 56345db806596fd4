"""The call hot path: route a request to a provider, reserve its worst case against the
hard limits, call, settle, price and record it; today's totals."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .budget import Full, Refusal, Reservation, process_alive, worst_cost, worst_input_tokens
from .clock import local_day
from .config import ModelSpec, ProviderSpec
from .context import EngineContext, nothing
from .errors import BudgetRefused, UsageError
from .events import CallRecorded
from .health import ProviderHealth
from .ledger import NOT_BILLED, UNKNOWN_ENERGY, Cost
from .providers.base import (
    ChatRequest,
    ChatResult,
    ConnectionFailed,
    MalformedResponse,
    OnToken,
    ProviderError,
    ProviderTimeout,
    Unreachable,
    Usage,
)
from .records import CallRecord, ProviderTotals
from .text import excerpt
from .views import ProviderView, SpendView

# An answer with no cap would make its worst-case cost unbounded.
DEFAULT_MAX_TOKENS = 1024
# A call waiting for budget re-checks at least this often: other processes' calls settle
# in their own process, unseen here until the store is read again.
BUDGET_WAIT_POLL_S = 0.25
# A failed call the provider may have billed (it took the request, then timed out, cut the
# stream or sent garbage): charged what it delivered and every input token, estimated.
BILLED_FAILURE = "estimated:billed-failure"


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """A finished call: its ledger row, and the answer or the typed error.

    `durable` resolves with the committed row (energy filled in); `Calls.settled()` waits
    for it, which is what every caller that reports the result to the operator does.
    """

    record: CallRecord
    result: ChatResult | None
    error: ProviderError | None
    durable: asyncio.Future[CallRecord] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Calls:
    def __init__(self, ctx: EngineContext,
                 provider_views: Callable[[], Awaitable[list[ProviderView]]]) -> None:
        self._ctx = ctx
        self._provider_views = provider_views
        self.in_flight = 0
        # (ts, ok, duration) of real calls: the regulator's error rate and latency.
        self._recent: deque[tuple[float, bool, float]] = deque(maxlen=2000)
        self._expired_at = -1e9  # when dead processes' reservations were last expired
        # What the rest of the engine does as rows are committed (set by the Engine).
        self.on_health: Callable[[ProviderHealth], None] = nothing
        self.on_circuit_open: Callable[[str], None] = nothing
        self.after_calls: Callable[[], None] = nothing

    async def sync_budget(self) -> None:
        """Today's spend as the store has it (other processes add to it)."""
        self._expired_at = -1e9
        await self._expire_dead_reservations()
        day = local_day(self._ctx.clock.now())
        self._ctx.guard.sync(day, await self._ctx.store.day_spend(day))

    async def choose(self, provider_id: str | None, model_id: str | None
                     ) -> tuple[ProviderSpec, ModelSpec]:
        """Until the router lands: the named pair, else the cheapest usable chat model."""
        if provider_id is not None:
            spec = self._ctx.provider_spec(provider_id)
            if model_id is not None:
                model = self._ctx.model_spec(spec, model_id)
                # An undeclared model is fine if its price is known (the budget can bound
                # it); otherwise it is a typo far more often than a model to call unpriced.
                if spec.model(model_id) is None and self._ctx.prices.rates(spec, model) is None:
                    raise UsageError(
                        f"unknown model {model_id!r} for {spec.id}",
                        fix=f"use one of: {', '.join(m.id for m in spec.models)} "
                            "(see `aetherflow providers`)")
                return spec, model
            chat = [m for m in spec.models if "chat" in m.roles]
            return spec, (chat or list(spec.models))[0]
        if model_id is not None and not any(
                spec.model(model_id) for spec in self._ctx.bouquet.providers.values()):
            known = ", ".join(f"{spec.id}/{m.id}" for spec in self._ctx.bouquet.providers.values()
                              if spec.enabled for m in spec.models)
            raise UsageError(f"unknown model {model_id!r}: no provider declares it",
                             fix=f"use one of: {known} (see `aetherflow providers`)")
        routable = [v for v in await self._provider_views() if v.routable]
        # An open circuit takes a provider out of automatic choice until its cool-down ends.
        views = [v for v in routable if self._ctx.health.circuit(v.id).allows_traffic()]
        if routable and not views:
            raise UsageError("every provider with a tested key has an open circuit",
                             fix="wait for the cool-down, or name one with --provider")
        best: tuple[float, ProviderSpec, ModelSpec] | None = None
        for view in views:
            spec = self._ctx.bouquet.providers[view.id]
            for model in spec.models:
                if model_id is not None and model.id != model_id:
                    continue
                rates = self._ctx.prices.rates(spec, model)
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
        self._ctx.dispatch.check()
        self._ctx.store.check_writable()  # a call the store could not record must not go out
        provider = await self._ctx.pool.get(spec)
        model = self._ctx.model_spec(spec, request.model)
        if request.max_tokens is None:
            request = replace(request, max_tokens=DEFAULT_MAX_TOKENS)
        max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS
        rates = self._ctx.prices.rates(spec, model)
        worst_in = worst_input_tokens(request)
        refusal = self._ctx.guard.per_call(rates, worst_in, max_tokens)
        if refusal is not None:
            raise BudgetRefused(f"{spec.id}/{model.id}", refusal)
        assert rates is not None  # per_call refuses an unpriced model
        # Tiered prices charge more past a size: the table's own price of the worst usage
        # keeps the reservation an upper bound there too.
        worst = max(worst_cost(rates, worst_in, max_tokens),
                    self._ctx.prices.cost(spec, model, Usage(worst_in, max_tokens)).usd or 0.0)
        reservation = await self._reserve(spec, model, worst, on_wait)
        if self._ctx.dispatch.held is not None:  # an emergency stop came while it waited
            self._release(reservation, spec.id)
            self._ctx.dispatch.check()
        now = self._ctx.clock.now()
        day = reservation.day
        real = purpose != "canary"  # a canary is judged on its answer (probes.py)
        # A key test is not traffic either: one refused key is no error rate.
        traffic = real and purpose != "sandbox"
        if real:
            self._ctx.health.circuit(spec.id).dispatching()
        started = time.perf_counter()
        delivered = 0  # bytes of answer streamed so far: what a cut call was billed for

        def count(token: str) -> Any:
            nonlocal delivered
            delivered += len(token.encode())
            return on_token(token) if on_token is not None else None

        self.in_flight += 1
        try:
            result = await provider.complete(request, count)
        except (ProviderError, asyncio.CancelledError) as error:
            cancelled = isinstance(error, asyncio.CancelledError)
            cost = (self._ctx.prices.cost(spec, model, Usage(worst_in, min(delivered, max_tokens)))
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
            durable = self._ctx.store.record_call(record)
            if real:
                self._ctx.health.call_ended(spec.id, False, record.error_kind)
                if not cancelled and traffic:
                    self._recent.append((now, False, record.duration_s))
            if cancelled:
                raise
            return CallOutcome(record, None, error, durable)  # type: ignore[arg-type]
        except BaseException as bug:
            # Not the provider's failure (an on_token callback that raised, a bug): the
            # reservation must not stay held, and what the provider took is still charged.
            cost = self._ctx.prices.cost(spec, model, Usage(worst_in, min(delivered, max_tokens)))
            cost = Cost(cost.usd, BILLED_FAILURE)
            self._settle(reservation, spec.id, cost.usd or 0.0)
            self._ctx.store.record_call(CallRecord(
                ts=now, day=day, provider=spec.id, model=request.model, purpose=purpose,
                ok=False, error_kind="internal", error=excerpt(f"{type(bug).__name__}: {bug}"),
                duration_s=time.perf_counter() - started, cost=cost, input_tokens=worst_in,
                output_tokens=min(delivered, max_tokens), usage_estimated=True,
                energy=UNKNOWN_ENERGY, run_id=run_id, step_id=step_id,
                reservation=reservation.row))
            raise
        finally:
            self.in_flight -= 1
        if real:
            self._ctx.health.call_ended(spec.id, True, None)
        if traffic:
            self._recent.append((now, True, result.duration_s))
        usage = _bounded(result.usage, worst_in, max_tokens)
        cost = self._ctx.prices.cost(spec, model, usage)
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
        return CallOutcome(record, result, None, self._ctx.store.record_call(record))

    async def _reserve(self, spec: ProviderSpec, model: ModelSpec, usd: float,
                       on_wait: Callable[[str | None], None] | None) -> Reservation:
        """The call's worst case, reserved here and then against what this process holds
        of the day in the store; while it fits the day only beside the reservations in
        flight (here or in other processes), wait for them."""
        label = f"{spec.id}/{model.id}"
        waiting = False
        try:
            while True:
                day = local_day(self._ctx.clock.now())
                held = self._ctx.guard.reserve(day, usd)
                if isinstance(held, Refusal):
                    raise BudgetRefused(label, held)
                if isinstance(held, Reservation) and usd <= 0:
                    return held  # free (a local model): nothing to hold in the store
                if isinstance(held, Reservation):
                    try:
                        row, spent, reserved = await self._ctx.shared.take(
                            day, spec.id, usd, self._ctx.clock.now())
                    except BaseException:
                        self._ctx.guard.release(held)
                        raise
                    if row is not None:
                        held.row = row
                        return held
                    # Other processes' spend or holdings: what the store says wins.
                    self._ctx.guard.release(held)
                    self._ctx.guard.sync(day, spent)
                    refusal = self._ctx.guard.refuse(usd, spent)
                    if refusal is not None:
                        raise BudgetRefused(label, refusal)
                    held = Full(f"worst case ${usd:.4f} waits for ${reserved:.4f} reserved "
                                f"by calls in flight (${spent:.4f} spent, "
                                f"${self._ctx.bouquet.budget.daily_usd:g} a day)")
                    await self._ctx.shared.give_back()  # what this process holds may be theirs
                    await self._expire_dead_reservations()
                if not waiting and on_wait is not None:
                    on_wait(f"waiting for budget: {held.reason}")
                waiting = True
                await self._ctx.guard.changed(BUDGET_WAIT_POLL_S)
                self._ctx.dispatch.check()  # an emergency stop ends the wait: DispatchHeld
        finally:
            if waiting and on_wait is not None:
                on_wait(None)

    def _settle(self, reservation: Reservation, provider: str, usd: float) -> None:
        self._ctx.guard.settle(reservation, usd)
        self._ctx.shared.settle(reservation.day, provider, reservation.usd, usd)

    def _release(self, reservation: Reservation, provider: str) -> None:
        self._settle(reservation, provider, 0.0)

    async def _expire_dead_reservations(self) -> None:
        """Calls a dead process left in flight become spend at their worst case; at most
        once a second, since it asks the OS about every process holding a reservation."""
        now = time.monotonic()
        if now - self._expired_at < 1.0:
            return
        self._expired_at = now
        if await self._ctx.store.expire_reservations(process_alive):
            day = local_day(self._ctx.clock.now())
            self._ctx.guard.sync(day, await self._ctx.store.day_spend(day))

    async def settled(self, outcome: CallOutcome) -> CallOutcome:
        """The same outcome once its row is committed, with energy filled in."""
        if outcome.durable is None:
            return outcome
        return CallOutcome(await outcome.durable, outcome.result, outcome.error)

    def estimate_energy(self, record: CallRecord) -> CallRecord:
        spec = self._ctx.bouquet.providers.get(record.provider)
        if spec is None:
            return record.with_energy(UNKNOWN_ENERGY)
        model = self._ctx.model_spec(spec, record.model)
        return record.with_energy(
            self._ctx.energy.estimate(spec, model, record.output_tokens, record.duration_s))

    def publish_calls(self, rows: Sequence[CallRecord]) -> None:
        for row in rows:
            self._ctx.guard.committed(row.day, row.cost.usd or 0.0)
            if row.reservation is not None:
                self._ctx.shared.written(row.day, row.provider, row.cost.usd or 0.0)
            self._ctx.bus.publish(CallRecorded(row.ts, row))
            if row.purpose == "canary":
                continue  # the prober publishes its verdict, answer checked
            health = self._ctx.health.observe(row, circuit=False)  # call() told it already
            self.on_health(health)
            if not row.ok and self._ctx.health.circuit(row.provider).is_open:
                self.on_circuit_open(row.provider)  # the probe that lets traffic back
        self.after_calls()

    def recent_error_rate(self, window_s: float, *, min_calls: int = 1
                          ) -> tuple[float | None, float | None]:
        """The share of real calls that failed in the last window_s (None with fewer than
        min_calls: one failure is not a rate), and their p50 latency."""
        since = self._ctx.clock.now() - window_s
        recent = self._recent
        while recent and recent[0][0] < since:
            recent.popleft()
        ok = [d for _, good, d in recent if good]
        p50 = statistics.median(ok) if ok else None
        if not recent or len(recent) < min_calls:
            return None, p50
        failed = len(recent) - len(ok)
        return 100.0 * failed / len(recent), p50

    async def totals_today(self) -> list[ProviderTotals]:
        return await self._ctx.store.totals_for_day(local_day(self._ctx.clock.now()))

    async def spend_view(self) -> SpendView:
        now = self._ctx.clock.now()
        this_minute = int(now // 60)
        series = {row.minute: (row.usd, row.wh, row.gco2e) for row in
                  await self._ctx.store.minute_series((this_minute - 59) * 60)}
        minutes = tuple(series.get(m, (0.0, 0.0, 0.0))
                        for m in range(this_minute - 59, this_minute + 1))
        return SpendView(local_day(now), self._ctx.bouquet.budget.daily_usd,
                         tuple(await self.totals_today()), minutes)


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
