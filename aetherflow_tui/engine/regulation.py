"""Self-regulation: the response mode, the canaries and status pages, provider lights and
their alerts, the regulator's decisions and what they do, the Prometheus snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .clock import local_day
from .context import EngineContext
from .errors import UsageError
from .events import (
    CanaryProbed,
    ProviderHealthChanged,
    RegulatorDecided,
    ResponseModeChanged,
    SystemSampled,
)
from .health import Light, ProbeResult, ProviderHealth, StatusSignal
from .local_stack import LocalStack
from .modes import LOGIC_ROLES, ModeSignals, ResponseMode
from .probes import Prober
from .store import INSERT_DECISION, INSERT_MODE_CHANGE
from .views import SystemView

if TYPE_CHECKING:
    from .calls import Calls
    from .metrics import MetricsSnapshot
    from .regulator import Actions, RegulatorDecision, SystemSample, SystemState
    from .vigilance import Canaries, Vigilance


async def _no_control(action: str, params: dict[str, Any], *, origin: str) -> str:
    return f"unknown control {action!r}: ignored"


async def _no_views() -> Any:
    return []


class Regulation:
    def __init__(self, ctx: EngineContext, calls: Calls, local: LocalStack,
                 key_states_known: Callable[[], bool]) -> None:
        self._ctx = ctx
        self._calls = calls
        self._local = local
        self._key_states_known = key_states_known
        self._lights: dict[str, Light] = {}
        self.prober = Prober(ctx, calls, on_probe=self.probe_recorded,
                             on_status=self.status_recorded)
        self.vigilance: Vigilance | None = None
        self.metrics_port: int | None = None  # where Prometheus scrapes, when serving
        # Set by the Engine: controls other processes write (Vigilance applies them), and
        # the key states the canary coverage needs.
        self.apply_control: Callable[..., Awaitable[str]] = _no_control
        self.provider_views: Callable[[], Awaitable[Any]] = _no_views

    async def load(self) -> None:
        """Health from the recent past after a restart. Circuits start closed (a failure
        days ago says nothing now) unless the light ends red."""
        ctx = self._ctx
        for record in reversed(await ctx.store.recent_calls(500)):
            ctx.health.observe(record, circuit=False)
        await self.prober.load()
        for provider in ctx.health.providers():
            health = ctx.health.health(provider)
            self._lights[provider] = health.light
            if health.light is Light.RED and not health.reason.startswith("the key"):
                ctx.health.circuit(provider).trip()

    async def aclose(self) -> None:
        if self.vigilance is not None:
            with contextlib.suppress(Exception):
                await self.vigilance.stop()
            self.vigilance = None
        await self.prober.aclose()

    def light_changed(self, provider: str, light: Light) -> None:
        self._lights[provider] = light

    def probe_soon(self, provider: str) -> None:
        """A probe now, when canaries run: the one that lets traffic back after a trip."""
        if self.vigilance is not None and self.vigilance.canaries != "off":
            self.prober.probe_soon(provider)

    @property
    def response_mode(self) -> ResponseMode:
        return self._ctx.modes.mode

    def system_view(self) -> SystemView:
        vigilance = self.vigilance
        if vigilance is None:
            return SystemView(False, None, None, None, (), self._ctx.dispatch.held)
        decision = vigilance.decision
        return SystemView(True, vigilance.regulator.state,
                          decision.confidence if decision is not None else None, decision,
                          tuple(vigilance.samples), self._ctx.dispatch.held)

    def mode_signals(self) -> ModeSignals:
        apis = [s for s in self._ctx.bouquet.providers.values() if s.enabled and not s.local]
        usable = [s for s in apis if s.id in self._ctx.router.routable]
        up = [s for s in usable if self._ctx.health.circuit(s.id).allows_traffic()]
        logic_up = any(LOGIC_ROLES & set(m.roles) for s in up for m in s.models)
        prices = [(r.input + r.output) / 2 for s in up for m in s.models
                  if (r := self._ctx.prices.rates(s, m)) is not None]
        daily = self._ctx.bouquet.budget.daily_usd
        spent_pct = 100.0 * self._ctx.guard.spent / daily if daily > 0 else 100.0
        has_local = any(s.enabled and s.local for s in self._ctx.bouquet.providers.values())
        return ModeSignals(has_local, len(usable), len(up), logic_up, spent_pct,
                           min(prices) if prices else None, self._local.spare)

    def update_mode(self) -> None:
        """Re-read the signals; publish and record a switch. Cheap: called on every call."""
        if not self._key_states_known():
            return  # which keys are usable is not known yet (provider_views reads it)
        decision = self._ctx.modes.update(self.mode_signals(), self._ctx.clock.now())
        if decision is not None:
            self._mode_switched(decision.mode, decision.reason, decision.pinned)

    def pin_mode(self, mode: ResponseMode | str | None) -> None:
        """The operator's choice of mode; None gives the choice back to the signals."""
        pinned = ResponseMode(mode) if mode is not None else None
        decision = self._ctx.modes.pin(pinned, self._ctx.clock.now())
        if decision is not None:
            self._mode_switched(decision.mode, decision.reason, True)
        elif pinned is None:
            self.update_mode()
        else:
            self._mode_switched(pinned, "pinned by the operator", True)

    def _mode_switched(self, mode: ResponseMode, reason: str, pinned: bool) -> None:
        now = self._ctx.clock.now()
        if self._ctx.store_or_none is not None:
            self._ctx.store_or_none.enqueue(INSERT_MODE_CHANGE,
                                            (now, mode.value, reason, int(pinned)))
        self._ctx.bus.publish(ResponseModeChanged(now, mode.value, reason, pinned))

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
        self.vigilance = Vigilance(self._ctx, self, role=role, canaries=canaries,
                                   status_pages=status_pages, exporter=exporter)
        await self.vigilance.start()
        return self.vigilance

    async def probe(self, providers: list[str] | None = None) -> list[ProbeResult]:
        """Run the canaries now (every covered provider, or the ones named)."""
        await self.provider_views()
        await self._calls.sync_budget()
        return await self.prober.probe_all(providers)

    async def read_status_pages(self) -> dict[str, StatusSignal]:
        return await self.prober.read_all_status()

    def probe_recorded(self, result: ProbeResult) -> None:
        now = self._ctx.clock.now()
        self._ctx.bus.publish(CanaryProbed(now, result))
        self.health_changed(self._ctx.health.probed(result))
        self.update_mode()

    def status_recorded(self, provider: str, signal: StatusSignal) -> None:
        self.health_changed(self._ctx.health.status_read(provider, signal))
        self.update_mode()

    def health_changed(self, health: ProviderHealth) -> None:
        """Publish; a light turning red (or back) is an alert; held traffic gets a probe."""
        self._ctx.bus.publish(ProviderHealthChanged(self._ctx.clock.now(), health))
        before = self._lights.get(health.provider)
        self._lights[health.provider] = health.light
        if health.light is Light.RED and before is not Light.RED:
            self._ctx.raise_alert("error", f"{health.provider} is red", health.reason, "health")
        elif before is Light.RED and health.light in (Light.GREEN, Light.ORANGE):
            self._ctx.raise_alert("information", f"{health.provider} recovered",
                             f"{health.light.value}: {health.reason}", "health")

    def recent_error_rate(self, window_s: float, *, min_calls: int = 1
                          ) -> tuple[float | None, float | None]:
        return self._calls.recent_error_rate(window_s, min_calls=min_calls)

    def publish_sample(self, sample: SystemSample) -> None:
        self._ctx.bus.publish(SystemSampled(sample.ts, sample))

    async def apply_regulation(self, actions: Actions, state: SystemState) -> list[str]:
        """The regulator's actions, done; returns what was done, in the operator's words."""
        done = []
        dispatch = self._ctx.dispatch
        dispatch.regulated_cap = actions.concurrency
        limit = min(actions.concurrency, dispatch.manual_cap or actions.concurrency)
        if limit != self._ctx.concurrency.limit:
            self._ctx.set_concurrency(limit, f"regulator: {state.value}")
        done.append(f"concurrency cap {limit}"
                    + (f" (operator's limit {dispatch.manual_cap})" if dispatch.manual_cap
                       else ""))
        self._local.throttle_built(threads=actions.local_threads, duty=actions.local_duty)
        threads = "all cores" if actions.local_threads is None else (
            f"{actions.local_threads} thread(s)")
        done.append(f"local inference: {threads} at {actions.local_duty:.0%} duty")
        self._local.pause(actions.local_paused or dispatch.held is not None)
        if actions.local_paused:
            done.append("local queue paused")
        if actions.prefer_apis != self._local.spare:
            self._local.spare = actions.prefer_apis
            self.update_mode()
        if actions.prefer_apis:
            done.append(f"response mode asked to spare local models (now "
                        f"{self.response_mode.value.upper()})")
        if actions.open_failing_circuits:
            opened = self._ctx.health.open_failing()
            for provider in opened:
                self.health_changed(self._ctx.health.health(provider))
            done.append("opened circuits: " + ", ".join(opened) if opened
                        else "no failing provider to cut off")
        return done

    async def record_decision(self, decision: RegulatorDecision, *, shared: bool = True
                              ) -> None:
        """Publish the regulator's decision; `shared`: also the row and the alert, which
        every other process and `aetherflow status` read."""
        self._ctx.bus.publish(RegulatorDecided(decision.ts, decision))
        if not shared:
            return
        await self._ctx.store.enqueue(INSERT_DECISION, (
            decision.ts, "manual" if decision.manual else "regulator", decision.state.value,
            decision.confidence, decision.reasoning, json.dumps(decision.metrics),
            json.dumps(list(decision.actions))))
        if decision.state is not decision.previous:
            worse = decision.state.severity > decision.previous.severity
            self._ctx.raise_alert("warning" if worse else "information",
                             f"machine {decision.state.value.upper()}", decision.reasoning,
                             "regulator")

    async def metrics_snapshot(self) -> MetricsSnapshot:
        from .metrics import MetricsSnapshot, ProviderMetrics

        day = local_day(self._ctx.clock.now())
        totals = {t.provider: t for t in await self._ctx.store.totals_for_day(day)}
        providers = []
        for spec in self._ctx.bouquet.providers.values():
            health = self._ctx.health.health(spec.id)
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
            self._ctx.clock.now(), tuple(providers),
            self._ctx.guard.spent if self._ctx.guard.day == day
            else 0.0, self._ctx.bouquet.budget.daily_usd, sum(t.wh for t in totals.values()),
            sum(t.gco2e for t in totals.values()), self.prober.budget.spent, state,
            decision.confidence if decision else None,
            sample.cpu_pct if sample else None, sample.memory_pct if sample else None,
            sample.swap_pct if sample else None, sample.temperature_c if sample else None,
            sample.loop_lag_ms if sample else None, self._ctx.concurrency.limit,
            self._calls.in_flight,
            self.response_mode.value, self._ctx.dispatch.held is not None)
