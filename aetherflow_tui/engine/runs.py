"""Plan runs: start (or resume) one, list them, the one to show, the ones in flight here
and in other processes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from . import plan as plan_mod
from .calls import Calls
from .config import ModelSpec, ProviderSpec
from .context import EngineContext
from .errors import PlanError, UsageError
from .progress import RunStatus, RunView, StepState, StepView
from .router import Mode
from .scheduler import PlanRun
from .views import ProviderView


class Runs:
    def __init__(self, ctx: EngineContext, calls: Calls,
                 provider_views: Callable[[], Awaitable[list[ProviderView]]]) -> None:
        self._ctx = ctx
        self._calls = calls
        self._provider_views = provider_views
        self._runs: dict[str, PlanRun] = {}
        self._energy_ready = False

    def active(self) -> list[PlanRun]:
        return list(self._runs.values())

    async def cancel_all(self) -> None:
        for run in list(self._runs.values()):
            run.cancel()
            with contextlib.suppress(Exception):
                await run.wait()

    def load_plan(self, path: Path) -> plan_mod.Plan:
        """Read and validate a plan, pins checked against this bouquet (PlanError: exit 2)."""
        return self._read_plan(path)[0]

    def _read_plan(self, path: Path) -> tuple[plan_mod.Plan, str, str]:
        """The plan, its text and its digest: read once, on a thread (blocking work)."""
        known = {pid: tuple(m.id for m in spec.models)
                 for pid, spec in self._ctx.bouquet.providers.items()}
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
                                self._provider_views(), self._calls.sync_budget())
        plan, plan_text, digest = read
        self._ctx.dispatch.check()
        mode = Mode(mode or self._ctx.bouquet.routing.mode)
        restored: dict[str, dict[str, Any]] = {}
        if resume is not None:
            row = await self._ctx.store.run(resume)
            if row is None:
                raise UsageError(f"no run {resume!r} in {self._ctx.store.path}",
                                 fix="list runs with `aetherflow runs`")
            if resume in self._runs:
                raise UsageError(f"run {resume} is still running", fix="wait for it or cancel it")
            if row["plan_digest"] != digest:
                raise PlanError(f"this plan is not the one run {resume} started with",
                                path=str(plan_path),
                                fix="resume with the same plan file, or start a new run")
            restored = {s["step_id"]: s for s in await self._ctx.store.steps(resume)}
            run_id = resume
            await self._ctx.store.update_run(run_id, status=RunStatus.RUNNING.value,
                                        mode=mode.value, finished=None, detail=None,
                                        pid=os.getpid())
        else:
            run_id = self._new_run_id()
            await self._ctx.store.create_run(run_id, plan.task_id, str(plan_path), mode.value,
                                        self._ctx.clock.now(), digest, plan_text, os.getpid())
        if not self._energy_ready:
            await asyncio.to_thread(self._ctx.router.estimate_energy, self.wh_per_1k)
            self._energy_ready = True
            _freeze_long_lived()
        if output_dir is None:
            output_dir = self._ctx.home / "runs" / run_id
        run = PlanRun(self._ctx, self._calls.call, plan, plan_path, run_id, mode, restored,
                      output_dir, on_finished=self._finished)
        self._runs[run_id] = run
        run.start()
        return run

    async def in_flight(self) -> list[str]:
        """The ids of the runs going on now, here or in any other live process (a CLI run
        while the cockpit is open): what an emergency stop cancels."""
        from .vigilance import ALIVE_WITHIN_S

        since = self._ctx.clock.now() - ALIVE_WITHIN_S
        live = {p["pid"] for p in await self._ctx.store.processes(since)}
        live.discard(os.getpid())  # this process's runs are the ones it holds
        ids = list(self._runs)
        ids += [row["id"] for row in await self._ctx.store.running_runs()
                if row["pid"] in live and row["id"] not in self._runs]
        return ids

    def _finished(self, run: PlanRun) -> None:
        self._runs.pop(run.run_id, None)

    def _new_run_id(self) -> str:
        stamp = datetime.fromtimestamp(self._ctx.clock.now()).strftime("%Y%m%d-%H%M%S")
        return f"{stamp}-{secrets.token_hex(2)}"

    def wh_per_1k(self, spec: ProviderSpec, model: ModelSpec) -> float | None:
        return self._ctx.energy.estimate(spec, model, 1000, 10.0).wh

    async def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """Recent runs; one still marked running that this process does not hold was cut
        short (a crash or kill): it shows as interrupted, ready to resume."""
        rows = await self._ctx.store.runs(limit)
        for row in rows:
            if row["status"] == RunStatus.RUNNING and row["id"] not in self._runs:
                row["status"] = RunStatus.INTERRUPTED.value
        return rows

    async def last_run(self) -> tuple[RunView, list[StepView]] | None:
        """The run to show: the newest one here, else the newest in the store, as it stands."""
        if self._runs:
            run = max(self._runs.values(), key=lambda r: r.started)
            return run.view(), run.steps()
        rows = await self.recent(1)
        if not rows:
            return None
        row = rows[0]
        plan_text = (await self._ctx.store.run(row["id"]) or {}).get("plan_text") or ""
        types = _step_types(plan_text)
        saved = {s["step_id"]: s for s in await self._ctx.store.steps(row["id"])}
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


def _freeze_long_lived() -> None:
    """The price table, EcoLogits' models and the config are loaded by now and live as long
    as the process: move them out of the cyclic GC's scans (gc.freeze), so a full collection
    during a run walks only the run's own objects. Unfrozen, one gen-2 pass took ~30 ms and
    stalled every step finishing at that moment (benchmarks/scheduler.py, makespan)."""
    gc.collect()
    gc.freeze()
