"""The engine's watch over itself, in a long-lived process (the cockpit, a run).

Every `regulator.interval_s` it samples the machine (regulator.Sampler), measures its own
event-loop lag, judges the state (regulator.Regulator) and, when the state changes, acts:
concurrency cap, local throttle and pause, the response mode, failing circuits. Each
decision is an event and a row, with its confidence, reasoning, metrics and actions.

The state is judged twice: on every metric, and on the machine's own signals alone
(everything but the error rate, and the CPU less this process's own: local inference is
not a reason to throttle local inference). Local work, the concurrency cap and the
response mode follow the second; the error rate only opens failing circuits. A process
records a state for the others (the decisions row, the alert) and opens circuits only once
it has watched the machine for hold_s: a short command says nothing about the machine it
did not see.

It also applies the operator's controls written by other processes (`aetherflow stop`
and friends go through the store: every live process applies them and acknowledges),
keeps this process's heartbeat, runs the canary and status-page schedules (probes.py),
and feeds the optional Prometheus exporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .probes import Prober
from .regulator import (
    MACHINE_METRICS,
    Actions,
    Judgement,
    Regulator,
    RegulatorDecision,  # and re-exported: it lived here
    Sampler,
    SystemSample,
    SystemState,
    actions_for,
)

if TYPE_CHECKING:
    from .context import EngineContext
    from .metrics import MetricsExporter, MetricsSnapshot

HISTORY = 120  # samples kept for the cockpit's sparklines
HEARTBEAT_S = 5.0
ALIVE_WITHIN_S = 15.0  # a process whose heartbeat is older is gone
ERROR_WINDOW_S = 60.0  # the engine's error rate and latency, over the last minute
# Fewer real calls than this in the window: no error rate (one refused call is not 100%).
MIN_ERROR_CALLS = 10
Canaries = Literal["periodic", "recovery", "off"]


class Regulated(Protocol):
    """What the watch needs of the engine's self-regulation (engine/regulation.py)."""

    prober: Prober

    def recent_error_rate(self, window_s: float, *, min_calls: int = 1
                          ) -> tuple[float | None, float | None]: ...

    def publish_sample(self, sample: SystemSample) -> None: ...

    async def apply_regulation(self, actions: Actions, state: SystemState) -> list[str]: ...

    async def record_decision(self, decision: RegulatorDecision, *, shared: bool = True
                              ) -> None: ...

    async def apply_control(self, action: str, params: dict[str, Any], *, origin: str
                            ) -> str: ...

    async def metrics_snapshot(self) -> MetricsSnapshot: ...


class Vigilance:
    def __init__(self, ctx: EngineContext, regulation: Regulated, *, role: str,
                 canaries: Canaries = "periodic",
                 status_pages: bool = True, exporter: MetricsExporter | None = None) -> None:
        self.ctx = ctx
        self.regulation = regulation
        self.role = role
        self.canaries = canaries
        self.status_pages = status_pages
        self.exporter = exporter
        self.spec = ctx.bouquet.regulator
        self.sampler = Sampler()
        self.regulator = Regulator(self.spec)
        self.machine = Regulator(self.spec, MACHINE_METRICS)  # what local work follows
        self.samples: deque[SystemSample] = deque(maxlen=HISTORY)
        self.decision: RegulatorDecision | None = None
        self.actions: Actions | None = None
        self.prober: Prober = regulation.prober
        self._tasks: list[asyncio.Task[None]] = []
        self._last_control = 0
        self._started = ctx.clock.now()
        self._pid = os.getpid()
        self._force = False
        self._shared = False  # watched for hold_s: decisions go to the store
        self._recorded = SystemState.OPTIMAL  # the last state the store has from us

    async def start(self) -> None:
        ctx = self.ctx
        self._last_control = await ctx.store.last_control_id()
        await ctx.store.heartbeat(self._pid, self.role, self._started, ctx.clock.now())
        for spec in ctx.bouquet.providers.values():
            # Covered providers are probed by the canary: real traffic waits for it.
            ctx.health.circuit(spec.id).canary_probes = (
                self.canaries != "off" and spec.canary and spec.kind != "llama_cpp")
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="regulator"))
        if self.canaries != "off":
            self._tasks.append(asyncio.create_task(
                self.prober.run(periodic=self.canaries == "periodic"), name="canaries"))
        if self.status_pages:
            self._tasks.append(asyncio.create_task(self.prober.run_status(),
                                                   name="status-pages"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        for spec in self.ctx.bouquet.providers.values():
            self.ctx.health.circuit(spec.id).canary_probes = False
        with contextlib.suppress(Exception):
            await self.ctx.store.drop_process(self._pid)
        if self.exporter is not None:
            await asyncio.to_thread(self.exporter.stop)

    # -- the loop --------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        interval = self.spec.interval_s
        next_beat = 0.0
        lag_ms = 0.0
        while True:
            began = time.perf_counter()
            await self.tick(lag_ms)
            now = self.ctx.clock.now()
            if now >= next_beat:
                next_beat = now + HEARTBEAT_S
                with contextlib.suppress(Exception):
                    await self.ctx.store.heartbeat(self._pid, self.role, self._started, now)
            spent = time.perf_counter() - began
            wait = max(0.0, interval - spent)
            slept_from = time.perf_counter()
            await asyncio.sleep(wait)
            # How late the loop woke us: what every other task waited too.
            lag_ms = max(0.0, (time.perf_counter() - slept_from - wait) * 1000)

    async def tick(self, lag_ms: float | None = None) -> RegulatorDecision | None:
        """One sample, one judgement, the actions if the state changed; then the controls."""
        ctx = self.ctx
        error_pct, p50 = self.regulation.recent_error_rate(ERROR_WINDOW_S,
                                                           min_calls=MIN_ERROR_CALLS)
        sample = self.sampler.sample(ctx.clock.now(), loop_lag_ms=lag_ms,
                                     error_rate_pct=error_pct, latency_p50_s=p50)
        self.samples.append(sample)
        self.regulation.publish_sample(sample)
        force, self._force = self._force, False
        judgement = self.regulator.force(sample) if force else self.regulator.observe(sample)
        others = sample.others()
        machine = self.machine.force(others) if force else self.machine.observe(others)
        # Old enough to speak for the machine: what was only kept in this process so far
        # (a state other than OPTIMAL) is recorded now, and its circuits opened.
        sharing = (not self._shared and sample.ts - self._started >= self.spec.hold_s
                   and self.regulator.ready)
        self._shared = self._shared or sharing
        decision = None
        if (judgement.changed or machine.changed or self.actions is None or force
                or (sharing and judgement.state is not SystemState.OPTIMAL)):
            decision = await self._act(judgement, machine, manual=force)
        with contextlib.suppress(Exception):  # a busy database: next tick
            await self._apply_controls()
        await self._export()
        return decision

    async def _act(self, judgement: Judgement, machine: Judgement, *,
                   manual: bool) -> RegulatorDecision:
        ctx = self.ctx
        state = judgement.state
        actions = actions_for(state, max_concurrency=ctx.bouquet.routing.max_concurrency,
                              cores=self.sampler.cores, machine=machine.state)
        if actions.local_paused and machine.driver == "cpu_pct":
            # Local inference is itself CPU load: pausing it would drop the load, release
            # the pause after the hold, and start again. Throttled to one thread instead.
            actions = replace(actions, local_paused=False)
        if not self._shared:
            # A process this young does not cut providers off for every other process.
            actions = replace(actions, open_failing_circuits=False)
        first = self.actions is None
        self.actions = actions
        done = list(await self.regulation.apply_regulation(actions, state))
        reasoning = judgement.reasoning
        if machine.state.severity < state.severity:
            reasoning += (f" Local work follows the machine's own signals: "
                          f"{machine.state.name}.")
        # Once shared, a decision moves from what the store last had from this process:
        # the state reached while too young to share is announced when it is shared.
        previous = self._recorded if self._shared else judgement.previous
        decision = RegulatorDecision(ctx.clock.now(), state, previous,
                                     judgement.confidence, reasoning,
                                     dict(judgement.metrics), tuple(done), manual)
        self.decision = decision
        if not first or state is not SystemState.OPTIMAL or manual:
            await self.regulation.record_decision(decision, shared=self._shared)
            if self._shared:
                self._recorded = state
        return decision

    def force(self) -> None:
        """The next tick judges without waiting for the hold (force optimisation)."""
        self._force = True

    async def force_now(self) -> RegulatorDecision | None:
        self._force = True
        return await self.tick()

    # -- the operator's controls, from other processes --------------------------------------

    async def _apply_controls(self) -> None:
        ctx = self.ctx
        for control in await ctx.store.controls_after(self._last_control):
            self._last_control = control["id"]
            if control["origin"] == f"pid {self._pid}":
                continue  # this process wrote it, and did it already
            detail = await self.regulation.apply_control(control["action"], control["params"],
                                                origin=control["origin"])
            await ctx.store.ack_control(control["id"], self._pid, ctx.clock.now(),
                                           detail)

    # -- Prometheus --------------------------------------------------------------------------

    async def _export(self) -> None:
        if self.exporter is not None:
            with contextlib.suppress(Exception):  # a busy database: the next tick
                self.exporter.update(await self.regulation.metrics_snapshot())

    def last_sample(self) -> SystemSample | None:
        return self.samples[-1] if self.samples else None

    def status(self) -> dict[str, Any]:
        decision = self.decision
        return {"state": self.regulator.state.value,
                "since": self.regulator.since,
                "decision": None if decision is None else decision_json(decision)}


def decision_json(decision: RegulatorDecision) -> dict[str, Any]:
    return {"ts": decision.ts, "state": decision.state.value,
            "previous": decision.previous.value, "confidence": decision.confidence,
            "reasoning": decision.reasoning, "metrics": decision.metrics,
            "actions": list(decision.actions), "manual": decision.manual}
