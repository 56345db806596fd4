"""The operator's controls: the emergency stop and resume, the throttle, circuit resets,
a forced optimisation; and the control rows through which every live process obeys them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from .context import EngineContext
from .errors import OperatorError, UsageError
from .events import DispatchHoldChanged, ProviderHealthChanged
from .health import CircuitState, Light
from .local_stack import LocalStack
from .progress import RunStatus
from .views import ControlView

if TYPE_CHECKING:
    from .calls import Calls
    from .regulation import Regulation
    from .runs import Runs

HOLD_SETTING = "dispatch_hold"  # the emergency stop, in the store: every process obeys it
# Controls one process writes and every live one applies (`aetherflow stop` and friends).
CONTROL_ACTIONS = ("emergency_stop", "resume", "throttle", "reset_circuits",
                   "force_optimisation")


def _origin() -> str:
    """Who wrote a control: a process skips the ones it wrote itself."""
    return f"pid {os.getpid()}"


class Controls:
    def __init__(self, ctx: EngineContext, runs: Runs, local: LocalStack,
                 regulation: Regulation, calls: Calls) -> None:
        self._ctx = ctx
        self._runs = runs
        self._local = local
        self._regulation = regulation
        self._calls = calls

    def view(self) -> ControlView:
        ctx = self._ctx
        dispatch, modes = ctx.dispatch, ctx.modes
        unclosed = tuple(pid for pid in ctx.bouquet.providers
                         if ctx.health.circuit(pid).state is not CircuitState.CLOSED)
        return ControlView(dispatch.held, dispatch.manual_cap, ctx.concurrency.limit,
                           self._calls.in_flight, modes.mode, modes.reason, modes.pinned,
                           unclosed)

    async def load(self) -> None:
        """An emergency stop outlives the process that pressed it."""
        hold = await self._ctx.store.setting(HOLD_SETTING)
        if hold is not None:
            self._ctx.dispatch.held = str(hold.get("reason", "emergency stop"))

    async def emergency_stop(self, reason: str = "emergency stop by the operator", *,
                             broadcast: bool = True) -> str:
        """Cancel every run, stop local generation, hold all dispatch until resume().
        broadcast: every other live process (runs started elsewhere) stops too."""
        self._ctx.dispatch.held = reason  # first: no call may leave while runs are counted
        runs = self._runs.active()
        here = {r.run_id for r in runs}
        elsewhere = [r for r in await self._runs.in_flight() if r not in here] \
            if broadcast else []
        await self._ctx.store.set_setting(HOLD_SETTING, {"reason": reason}, self._ctx.clock.now())
        if broadcast:
            await self._ctx.store.add_control(self._ctx.clock.now(), "emergency_stop",
                                         {"reason": reason}, _origin())
        self._local.pause(True)
        for run in runs:
            run.cancel(held=reason)
        for run in runs:
            with contextlib.suppress(Exception):
                await run.wait()
        stopped = len(runs) + len(await self.wait_runs_stopped(elsewhere))
        self._ctx.bus.publish(DispatchHoldChanged(self._ctx.clock.now(), True, reason))
        detail = f"{stopped} run(s) cancelled, local generation stopped, dispatch held"
        if stopped < len(runs) + len(elsewhere):
            detail += (f"; {len(runs) + len(elsewhere) - stopped} run(s) in another process "
                       "not stopped yet")
        self._ctx.raise_alert("error", "EMERGENCY STOP", f"{reason}: {detail}", "operator")
        return detail

    async def wait_runs_stopped(self, run_ids: list[str], wait_s: float = 3.0) -> list[str]:
        """Wait until the processes running these runs have stopped them (they apply a
        control within a second); returns the ones that did."""
        deadline = time.monotonic() + wait_s
        while True:
            statuses = await self._ctx.store.run_statuses(run_ids)
            stopped = [r for r in run_ids if statuses.get(r) != RunStatus.RUNNING]
            if len(stopped) == len(run_ids) or time.monotonic() >= deadline:
                return stopped
            await asyncio.sleep(0.1)

    async def resume_dispatch(self, origin: str = "the operator", *,
                              broadcast: bool = True) -> str:
        was = self._ctx.dispatch.held
        self._ctx.dispatch.held = None
        await self._ctx.store.set_setting(HOLD_SETTING, None, self._ctx.clock.now())
        if broadcast:
            await self._ctx.store.add_control(self._ctx.clock.now(), "resume", {}, _origin())
        vigilance = self._regulation.vigilance
        actions = vigilance.actions if vigilance is not None else None
        self._local.pause(bool(actions and actions.local_paused))
        if was is None:
            return "dispatch was not held"
        self._ctx.bus.publish(DispatchHoldChanged(self._ctx.clock.now(), False,
                                                  f"resumed by {origin}"))
        self._ctx.raise_alert("information", "dispatch resumed", f"resumed by {origin}",
                         "operator")
        return "dispatch resumed"

    def emergency_throttle(self, limit: int | None) -> str:
        """The operator's cap on calls in flight, over the regulator's; None lifts it."""
        if limit is not None and limit < 1:
            raise UsageError(f"throttle limit {limit} is below 1",
                             fix="give at least 1, or use `off` to lift the throttle")
        dispatch = self._ctx.dispatch
        dispatch.manual_cap = limit
        cap = (min(dispatch.regulated_cap, limit) if limit is not None
               else dispatch.regulated_cap)
        reason = (f"emergency throttle by the operator: {limit}" if limit is not None
                  else "operator's throttle lifted")
        self._ctx.set_concurrency(cap, reason)
        self._ctx.raise_alert("warning" if limit is not None else "information",
                         "throttle", f"{reason}; concurrency cap {cap}", "operator")
        return f"concurrency cap {cap}"

    def reset_circuits(self, provider: str | None = None) -> list[str]:
        """Close one provider's circuit, or every one that holds traffic or is red; each
        gets a probe at once. Healthy providers are left as they are."""
        if provider:
            targets = [self._ctx.provider_spec(provider).id]
        else:
            targets = [pid for pid in self._ctx.bouquet.providers
                       if self._ctx.health.circuit(pid).is_open
                       or self._ctx.health.health(pid).light is Light.RED]
        if not targets:
            return []
        for pid in targets:
            health = self._ctx.health.reset_circuit(pid)
            self._ctx.bus.publish(ProviderHealthChanged(self._ctx.clock.now(), health))
            self._regulation.light_changed(pid, health.light)
            self._regulation.probe_soon(pid)
        self._regulation.update_mode()
        self._ctx.raise_alert("warning", "circuits reset", ", ".join(targets), "operator")
        return targets

    async def force_optimisation(self) -> str:
        """Lift the operator's throttle, unload idle local models, re-judge the machine now
        without waiting for the hold, and re-probe every provider that is unwell."""
        if self._ctx.dispatch.manual_cap is not None:
            self.emergency_throttle(None)
        await self._local.housekeeping()
        vigilance, prober = self._regulation.vigilance, self._regulation.prober
        if vigilance is not None:
            decision = await vigilance.force_now()
            for spec in prober.covered():
                if prober.interval(spec.id) < prober.spec.interval_s:
                    prober.probe_soon(spec.id)
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
        now = self._ctx.clock.now()
        pid = os.getpid()
        if action == "emergency_stop":
            await self._ctx.store.set_setting(HOLD_SETTING, {"reason": params.get("reason")}, now)
        elif action == "resume":
            await self._ctx.store.set_setting(HOLD_SETTING, None, now)
        control = await self._ctx.store.add_control(now, action, params, _origin())
        from .vigilance import ALIVE_WITHIN_S

        live = [p for p in await self._ctx.store.processes(now - ALIVE_WITHIN_S) if p["pid"] != pid]
        deadline = time.monotonic() + wait_s
        acks: list[dict[str, Any]] = []
        while live and time.monotonic() < deadline:
            acks = await self._ctx.store.control_acks(control)
            if len(acks) >= len(live):
                break
            await asyncio.sleep(0.1)
        return live, acks
