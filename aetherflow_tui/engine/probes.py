"""Active vigilance: the canaries and the status pages, on their schedules.

Each provider the canary covers is probed every `canary.interval_s`, and every
`canary.unhealthy_interval_s` while it is orange or red or its traffic is held. A provider
whose real traffic just failed is probed at once: that probe is what lets traffic back.
The schedule survives restarts (the last probe of each provider is read back from the
store), so reopening the cockpit does not re-probe, and re-pay for, the whole bouquet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from .budget import worst_cost, worst_input_tokens
from .canary import CANARY_PROMPT, CanaryBudget, canary_model, check, probed_by_canary
from .clock import local_day
from .config import ProviderSpec
from .errors import OperatorError
from .health import Light, ProbeResult, StatusSignal
from .providers.base import ChatRequest
from .store import INSERT_HEALTH_SAMPLE

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from .calls import Calls
    from .context import EngineContext

SOURCE_CANARY = "canary"
SOURCE_STATUS = "status"


class Prober:
    def __init__(self, ctx: EngineContext, calls: Calls, *,
                 on_probe: Callable[[ProbeResult], None],
                 on_status: Callable[[str, StatusSignal], None]) -> None:
        self.ctx = ctx
        self._calls = calls
        self._on_probe = on_probe
        self._on_status = on_status
        self.spec = ctx.bouquet.canary
        self.budget = CanaryBudget(self.spec.daily_usd)
        self.last_probe: dict[str, float] = {}
        self.last_status: dict[str, float] = {}
        self._soon: set[str] = set()
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[ProbeResult]] = {}
        self._http: httpx.AsyncClient | None = None

    # -- restart ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Today's canary spend, and the recent probes and status readings, from the store."""
        ctx = self.ctx
        day = local_day(ctx.clock.now())
        self.budget.sync(day, await ctx.store.canary_spend(day))
        horizon = max(self.spec.interval_s, ctx.bouquet.health.status_interval_s) * 3
        for row in await ctx.store.health_samples(ctx.clock.now() - horizon):
            provider = row["provider"]
            if provider not in ctx.bouquet.providers:
                continue
            if row["source"] == SOURCE_CANARY:
                self.last_probe[provider] = row["ts"]
                ctx.health.probed(ProbeResult(row["ts"], provider, row["model"] or "",
                                                 bool(row["ok"]), row["detail"] or "",
                                                 row["latency_s"], row["ttft_s"]))
            elif row["source"] == SOURCE_STATUS:
                self.last_status[provider] = row["ts"]
                ctx.health.status_read(provider, _status_from_row(row))

    # -- canaries --------------------------------------------------------------------------

    def covered(self) -> list[ProviderSpec]:
        """Providers the canary probes now: covered kinds with a usable, tested key."""
        routable = self.ctx.router.routable
        return [s for s in self.ctx.bouquet.providers.values()
                if probed_by_canary(s) and s.id in routable]

    async def probe_all(self, providers: list[str] | None = None) -> list[ProbeResult]:
        """Probe now, all at once; providers: ids (default: every covered provider)."""
        specs = ([self.ctx.provider_spec(p) for p in providers] if providers is not None
                 else self.covered())
        return list(await asyncio.gather(*(self.probe(spec) for spec in specs)))

    async def probe(self, spec: ProviderSpec) -> ProbeResult:
        """One canary, or the one already in flight for this provider."""
        task = self._running.get(spec.id)
        if task is None:
            task = self._running[spec.id] = asyncio.create_task(self._probe(spec),
                                                                name=f"canary-{spec.id}")
            task.add_done_callback(lambda _t: self._running.pop(spec.id, None))
        return await asyncio.shield(task)

    async def _probe(self, spec: ProviderSpec) -> ProbeResult:
        ctx = self.ctx
        now = ctx.clock.now()
        model = canary_model(spec, ctx.prices)
        self.last_probe[spec.id] = now
        request = ChatRequest.ask(model.id, CANARY_PROMPT, max_tokens=self.spec.max_tokens,
                                  stream=True)
        rates = ctx.prices.rates(spec, model)
        if rates is None:
            return await self._done(ProbeResult(
                now, spec.id, model.id, False, f"{model.id} has no known price: set "
                "price_in and price_out (or canary_model) to probe it", skipped=True))
        worst = worst_cost(rates, worst_input_tokens(request), self.spec.max_tokens)
        if not self.budget.reserve(local_day(now), worst):
            return await self._done(ProbeResult(
                now, spec.id, model.id, False, f"not probed: today's canary budget "
                f"(${self.spec.daily_usd:g}, [canary] daily_usd) is spent", skipped=True))
        try:
            outcome = await self._calls.settled(await self._calls.call(spec, request,
                                                             purpose=SOURCE_CANARY))
        except OperatorError as exc:  # no key, a hard limit, dispatch held
            self.budget.settle(worst, 0.0)
            return await self._done(ProbeResult(now, spec.id, model.id, False,
                                                f"not probed: {exc}", skipped=True))
        except BaseException:
            self.budget.settle(worst, 0.0)
            raise
        usd = outcome.record.cost.usd or 0.0
        self.budget.settle(worst, usd)
        result = outcome.result
        if result is None:
            error = outcome.error
            kind = error.kind if error is not None else "error"
            return await self._done(ProbeResult(
                now, spec.id, model.id, False, f"{kind}: {outcome.record.error}",
                outcome.record.duration_s, None, usd))
        ok, why = check(result.text, result.finish_reason)
        latency = f"{result.duration_s * 1000:.0f} ms"
        return await self._done(ProbeResult(now, spec.id, model.id, ok,
                                            f"{why} in {latency}", result.duration_s,
                                            result.ttft_s, usd))

    async def _done(self, result: ProbeResult) -> ProbeResult:
        """Durable first, then the health book and the events."""
        ctx = self.ctx
        if not result.skipped:
            await ctx.store.enqueue(INSERT_HEALTH_SAMPLE, (
                result.ts, result.provider, result.model, SOURCE_CANARY, int(result.ok),
                result.latency_s, result.ttft_s, result.reason))
        self._on_probe(result)
        return result

    def probe_soon(self, provider: str) -> None:
        """Real traffic just failed there: probe it now (the probe may let traffic back)."""
        self._soon.add(provider)
        self._wake.set()

    def interval(self, provider: str) -> float:
        health = self.ctx.health
        unwell = (health.circuit(provider).is_open
                  or health.health(provider).light in (Light.ORANGE, Light.RED))
        return self.spec.unhealthy_interval_s if unwell else self.spec.interval_s

    async def run(self, *, periodic: bool) -> None:
        """The canary schedule. periodic=False (recovery): only providers whose traffic is
        held, so that a probe can let it back."""
        while True:
            now = self.ctx.clock.now()
            due: list[ProviderSpec] = []
            next_at = now + self.spec.unhealthy_interval_s
            for spec in self.covered():
                soon = spec.id in self._soon
                held = self.ctx.health.circuit(spec.id).is_open
                if not (periodic or held or soon):
                    continue  # recovery: only the providers whose traffic is held
                at = self.last_probe.get(spec.id, 0.0) + self.interval(spec.id)
                if soon or at <= now:
                    due.append(spec)
                else:
                    next_at = min(next_at, at)
            self._soon.clear()
            for spec in due:
                if spec.id not in self._running:
                    task = asyncio.create_task(self.probe(spec))
                    task.add_done_callback(_quiet)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(),
                                       max(0.05, next_at - self.ctx.clock.now()))

    # -- status pages ----------------------------------------------------------------------

    async def read_status(self, spec: ProviderSpec) -> StatusSignal | None:
        if spec.status_page is None:
            return None
        from . import statuspage

        ctx = self.ctx
        now = ctx.clock.now()
        self.last_status[spec.id] = now
        try:
            report = await statuspage.fetch(self._client(), spec.status_page)
        except statuspage.StatusPageError as exc:
            signal = StatusSignal(now, "unknown", f"status page unreadable: {exc}", False)
        else:
            level, reason = report.verdict(spec.status_components)
            signal = StatusSignal(now, level.value, reason, True)
        previous = ctx.health.health(spec.id).status
        if previous is None or (previous.level, previous.reason, previous.ok) != (
                signal.level, signal.reason, signal.ok):
            await ctx.store.enqueue(INSERT_HEALTH_SAMPLE, (
                now, spec.id, None, SOURCE_STATUS, int(signal.ok), None, None,
                json.dumps({"level": signal.level, "reason": signal.reason})))
        self._on_status(spec.id, signal)
        if signal.level == "outage":
            self.probe_soon(spec.id)
        return signal

    async def read_all_status(self) -> dict[str, StatusSignal]:
        specs = self._with_status_page()
        signals = await asyncio.gather(*(self.read_status(s) for s in specs))
        return {s.id: sig for s, sig in zip(specs, signals, strict=True) if sig is not None}

    async def run_status(self) -> None:
        every = self.ctx.bouquet.health.status_interval_s
        while True:
            now = self.ctx.clock.now()
            due = [s for s in self._with_status_page()
                   if self.last_status.get(s.id, 0.0) + every <= now]
            for spec in due:
                with contextlib.suppress(Exception):
                    await self.read_status(spec)
            await asyncio.sleep(min(every, 5.0))

    def _with_status_page(self) -> list[ProviderSpec]:
        """Providers in use (a tested key) that declare a status page: the page of one you
        have no key for says nothing about your factory."""
        routable = self.ctx.router.routable
        return [s for s in self.ctx.bouquet.providers.values()
                if s.enabled and s.status_page and s.id in routable]

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(follow_redirects=True,
                                           headers={"user-agent": "aetherflow"})
        return self._http

    async def aclose(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(BaseException):
                await task
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _status_from_row(row: dict[str, Any]) -> StatusSignal:
    try:
        detail = json.loads(row["detail"] or "{}")
    except ValueError:
        detail = {}
    return StatusSignal(row["ts"], str(detail.get("level", "unknown")),
                        str(detail.get("reason", "")), bool(row["ok"]))


def _quiet(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a probe's failure is in its result; nothing else is expected
