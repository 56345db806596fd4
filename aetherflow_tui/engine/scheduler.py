"""Runs a plan: each step starts the moment its dependencies are done.

No levels, no batches: when a step finishes, its dependents whose last dependency that was
are launched on the spot. How many calls are in flight is bounded by the engine's global
cap (which the regulator may move at any time) and by each provider's gate. A step routes,
calls, retries and falls back on its own; a failed step skips its dependents and the other
branches carry on; a daily-budget refusal stops new work and leaves the rest pending.

Every state change is queued to the store in order; a dependent's rows can never commit
before the rows of the step it depends on, so a crash leaves a consistent run to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import outputs, plan_step, run_eta
from .budget import worst_input_tokens
from .errors import BudgetRefused, DispatchHeld, StoreUnavailable
from .events import RunUpdated, StepUpdated
from .plan import Plan, context_text
from .plan_step import PlanStep
from .progress import RunStatus, RunView, StepState, StepView
from .providers.base import ChatMessage, ChatRequest, Unreachable
from .router import Candidate, Mode
from .store import INSERT_ROUTE, UPSERT_STEP
from .text import excerpt

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .calls import CallOutcome
    from .context import EngineContext

    # Calls.call: the run's only way to reach a provider.
    Call = Callable[..., Awaitable[CallOutcome]]
    from .router import Route

MAX_BACKOFF_S = 8.0
# The ETA walks the remaining critical path at most this often; in between it counts down.
ETA_EVERY_S = 0.25

AUDIT_PROMPT = """You audit another model's work. The step it was given:

{prompt}

Its answer:

{answer}

Is the answer correct and does it do what the step asks? Reply with one JSON object:
{{"agree": true or false, "problems": ["each problem in one sentence"]}}"""


class _BudgetStop(Exception):
    """The daily budget refused this step's call: stop launching work."""


class _Faulted(Exception):
    """The run failed (its store or output folder) while this step waited for a slot."""


class PlanRun:
    """One execution of a plan (or the resumption of one). Engine.start_run builds it."""

    def __init__(self, ctx: EngineContext, call: Call, plan: Plan, plan_path: Path,
                 run_id: str, mode: Mode, restored: dict[str, dict[str, Any]],
                 output_dir: Path | None, *,
                 on_finished: Callable[[PlanRun], None] | None = None) -> None:
        self.ctx = ctx
        self._call = call
        self._on_finished = on_finished
        self.plan = plan
        self.plan_path = plan_path
        self.plan_dir = plan_path.parent
        self.run_id = run_id
        self.mode = mode
        self.output_dir = output_dir
        self.status = RunStatus.RUNNING
        self.detail: str | None = None
        self.started = ctx.clock.now()
        self.finished: float | None = None
        self._steps: dict[str, PlanStep] = {s.id: PlanStep(s) for s in plan.steps}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._stopping = False  # no new steps: budget, cancel
        self._cancelled = False
        self._budget_stop = False
        self._held = False  # an emergency stop cancelled the run or held its next call
        self._eta: tuple[float, float] | None = None  # (perf_counter, seconds) last walked
        self._faulted = False  # the store or the output folder failed: the run fails
        self._context: dict[str, str] = {}
        self._counts = dict.fromkeys(StepState, 0)
        self._counts[StepState.PENDING] = len(self._steps)
        self._usd = 0.0
        for step in self._steps.values():
            for dep in step.spec.depends_on:
                self._steps[dep].dependents.append(step)
        for step_id, row in restored.items():
            if row["status"] == StepState.DONE and step_id in self._steps:
                self._restore(self._steps[step_id], row)
                self._usd += row["usd"] or 0.0
        # What an earlier execution finished: only a resume has any.
        self.restored = self._counts[StepState.DONE]
        for step in self._steps.values():
            step.waiting_for = sum(1 for d in step.spec.depends_on
                                   if self._steps[d].state is not StepState.DONE)
        # When several steps are ready at once, the one with the longest chain behind it
        # leaves first: the makespan is the critical path plus what delays it.
        heights = plan_step.heights(plan)
        for step in self._steps.values():
            step.dependents.sort(key=lambda s: -heights[s.spec.id])
        self._launch_order = sorted(self._steps.values(), key=lambda s: -heights[s.spec.id])
        self._task: asyncio.Task[RunView] | None = None

    # -- outside view ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._execute(), name=f"run-{self.run_id}")

    async def wait(self) -> RunView:
        assert self._task is not None
        return await asyncio.shield(self._task)

    def cancel(self, *, held: str | None = None) -> None:
        """Stop now: in-flight calls are cancelled and recorded, pending steps stay pending.
        held: the emergency stop's reason; the run then ends stopped-by-hold (exit 3)."""
        if self.status is not RunStatus.RUNNING:
            return
        self._cancelled = self._stopping = True
        if held is not None:
            self._held = True
            self.detail = f"cancelled by an emergency stop: {held}"
        for task in list(self._tasks):
            task.cancel()
        if not self._tasks:
            self._idle.set()

    def steps(self) -> list[StepView]:
        return [s.view() for s in self._steps.values()]

    def step(self, step_id: str) -> StepView:
        return self._steps[step_id].view()

    def extension(self, step_id: str) -> str:
        """The output file's extension: .md, .json, or the code's language (.py...)."""
        return self._steps[step_id].extension

    def outputs(self) -> dict[str, str]:
        return {s.spec.id: s.output for s in self._steps.values()
                if s.state is StepState.DONE and s.output is not None}

    def view(self) -> RunView:
        counts = self._counts
        usd = self._usd
        total = len(self._steps)
        finished = counts[StepState.DONE] + counts[StepState.FAILED] + counts[StepState.SKIPPED]
        eta = self._eta_s() if self.status is RunStatus.RUNNING and finished < total else None
        return RunView(self.run_id, self.plan.task_id, self.mode.value, self.status, total,
                       counts[StepState.DONE], counts[StepState.FAILED],
                       # A step waiting for budget is under way, not pending.
                       counts[StepState.SKIPPED],
                       counts[StepState.RUNNING] + counts[StepState.WAITING],
                       counts[StepState.CANCELLED], self.started, self.finished, usd, eta,
                       self.detail)

    def _eta_s(self) -> float:
        now = time.perf_counter()
        if self._eta is not None and now - self._eta[0] < ETA_EVERY_S:
            return max(0.0, self._eta[1] - (now - self._eta[0]))
        eta = run_eta.remaining_s(self.ctx, self.mode, self._launch_order)
        self._eta = (now, eta)
        return eta

    # -- the run ---------------------------------------------------------------------------

    async def _execute(self) -> RunView:
        ctx = self.ctx
        try:
            if self.output_dir is not None:
                try:
                    await asyncio.to_thread(self.output_dir.mkdir, parents=True,
                                            exist_ok=True)
                    for step in self._steps.values():
                        if step.state is StepState.DONE:
                            await self._write_output(step)
                except OSError as exc:  # nothing is paid for that could not be kept
                    self._halt(self._unwritable(exc))
            self._publish_run()
            for step in self._launch_order:
                if (step.state is not StepState.DONE and step.waiting_for == 0
                        and not self._stopping):
                    self._launch(step)
            if self._tasks:
                await self._idle.wait()
        finally:
            self._stopping = True
            for task in list(self._tasks):
                task.cancel()
            while self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self.status = self._final_status()
            self.finished = ctx.clock.now()
            try:
                await ctx.store.update_run(self.run_id, status=self.status.value,
                                              mode=self.mode.value, finished=self.finished,
                                              detail=self.detail)
            except StoreUnavailable as down:
                self._halt(f"the run's end was not recorded: {down}")
                self.status = self._final_status()
            if self._faulted and ctx.store.unrecorded_calls:
                self.detail = (f"{self.detail}; {ctx.store.unrecorded_calls} calls made "
                               "could not be recorded (the provider may have billed them)")
            if self.output_dir is not None:
                await self._write_summary()
            if self._on_finished is not None:
                self._on_finished(self)
            self._publish_run()
        return self.view()

    def _final_status(self) -> RunStatus:
        if self._held:
            return RunStatus.HELD
        if self._cancelled:
            return RunStatus.CANCELLED
        if self._faulted:
            return RunStatus.FAILED
        if self._budget_stop:
            return RunStatus.BUDGET
        states = {s.state for s in self._steps.values()}
        if states == {StepState.DONE}:
            return RunStatus.DONE
        return RunStatus.FAILED

    def _halt(self, reason: str) -> None:
        """A fault that fails the run (the store, the output folder): no new steps."""
        self._faulted = self._stopping = True
        self.detail = self.detail or reason

    def _unwritable(self, exc: OSError) -> str:
        return (f"stopped: the output folder {self.output_dir} cannot be written "
                f"({exc.strerror or exc}); make it a writable folder, then resume the run")

    def _launch(self, step: PlanStep) -> None:
        task = asyncio.create_task(self._run_step(step), name=f"step-{step.spec.id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    def _step_finished(self, step: PlanStep) -> None:
        """Called synchronously when a step ends: launch or skip what waited for it."""
        if step.state is StepState.DONE:
            for dependent in step.dependents:
                dependent.waiting_for -= 1
                if (dependent.waiting_for == 0 and not self._stopping
                        and dependent.state is StepState.PENDING):
                    self._launch(dependent)
        elif step.state is StepState.FAILED:
            self._skip_dependents(step)

    def _skip_dependents(self, failed: PlanStep) -> None:
        stack = list(failed.dependents)
        now = self.ctx.clock.now()
        while stack:
            step = stack.pop()
            if step.state is not StepState.PENDING:
                continue
            self._set_state(step, StepState.SKIPPED)
            step.finished = now
            step.error = f"skipped: {failed.spec.id} failed"
            self._persist(step)
            self._publish(step)
            stack.extend(step.dependents)

    async def _run_step(self, step: PlanStep) -> None:
        ctx = self.ctx
        self._set_state(step, StepState.RUNNING)
        step.started = ctx.clock.now()
        step.finished = None
        step.error = None
        self._persist(step)
        self._publish(step)
        try:
            await self._work(step)
        except _BudgetStop as stop:
            self._set_state(step, StepState.PENDING)
            step.started = None
            step.error = str(stop)
            self._budget_stop = self._stopping = True
            self.detail = f"stopped by the daily budget at step {step.spec.id}: {stop}"
        except DispatchHeld as held:  # an emergency stop from another process, in transit
            self._set_state(step, StepState.PENDING)
            step.started = None
            step.error = str(held)
            if not self._held:  # an emergency stop's cancel already said why
                self.detail = f"stopped at step {step.spec.id}: {held}"
            self._held = self._stopping = True
        except StoreUnavailable as down:  # the call could not have been recorded
            self._set_state(step, StepState.PENDING)
            step.started = None
            step.error = str(down)
            self._halt(f"stopped at step {step.spec.id}: {down}")
        except _Faulted:  # launched before the fault: left pending for the resume
            self._set_state(step, StepState.PENDING)
            step.started = None
        except asyncio.CancelledError:
            self._set_state(step, StepState.CANCELLED)
            step.finished = ctx.clock.now()
            step.error = "cancelled by the operator"
            self._persist(step)
            self._publish(step)
            raise
        except Exception as exc:  # a bug must fail the step, not hang the run
            self._set_state(step, StepState.FAILED)
            step.error = excerpt(f"internal error: {type(exc).__name__}: {exc}")
        if step.state is StepState.RUNNING:
            self._set_state(step, StepState.FAILED)
        pending = step.state is StepState.PENDING
        step.finished = None if pending else ctx.clock.now()
        durable = self._persist(step)
        if not pending:
            self._step_finished(step)
        try:
            await durable  # reported only once it is on disk
        except StoreUnavailable as down:
            self._halt(f"stopped at step {step.spec.id}: {down}")
            return
        if step.state is StepState.DONE and self.output_dir is not None:
            try:
                await self._write_output(step)
            except OSError as exc:
                self._set_state(step, StepState.FAILED)
                step.error = (f"output not written: {self.output_dir / step.spec.id}."
                              f"{step.extension}: {exc.strerror or exc}")
                self._halt(self._unwritable(exc))
                with contextlib.suppress(StoreUnavailable):
                    await self._persist(step)
        self._publish(step)

    async def _work(self, step: PlanStep) -> None:
        spec = step.spec
        request = self._request(step)
        called = await self._call_with_fallback(step, request)
        if called is None:
            return
        outcome, candidate = called
        result = outcome.result
        assert result is not None
        checked = outputs.check(spec.output, result.text)
        if not checked.ok and spec.output == "json":
            repair = ChatRequest(candidate.model.id, (*request.messages,
                                                 ChatMessage("assistant", result.text),
                                                 ChatMessage("user",
                                                             outputs.repair_prompt(
                                                                 checked.problem))),
                                 max_tokens=request.max_tokens, stream=request.stream,
                                 json_mode=candidate.provider.json_mode)
            try:
                repaired = await self._attempt(step, candidate, repair, retries=0)
            except BudgetRefused as refused:
                if refused.refusal.daily:
                    raise _BudgetStop(refused.refusal.reason) from None
                checked = outputs.Checked(False, "", f"{checked.problem}; the repair call "
                                          f"was refused: {refused.refusal.reason}")
            else:
                if repaired.ok and repaired.result is not None:
                    checked = outputs.check("json", repaired.result.text)
                    checked = checked if checked.ok else outputs.Checked(
                        False, "", f"{checked.problem} (after one repair attempt)")
                else:
                    checked = outputs.Checked(False, "", f"{checked.problem}; the repair "
                                              "call failed")
        if not checked.ok:
            self._set_state(step, StepState.FAILED)
            step.error = f"output rejected: {checked.problem}"
            return
        step.output = checked.value
        step.extension = checked.extension
        if self.mode is Mode.DOUBLE_CHECK:
            step.flag = await self._audit(step)
        self._set_state(step, StepState.DONE)

    # -- calls -----------------------------------------------------------------------------

    async def _call_with_fallback(self, step: PlanStep, request: ChatRequest
                                  ) -> tuple[CallOutcome, Candidate] | None:
        """Route, call, retry, fall back; the successful outcome, or None (step failed)."""
        ctx = self.ctx
        spec = step.spec
        avoid: set[str] = set()
        chars = sum(len(m.content) for m in request.messages)
        worst_in = worst_input_tokens(request)
        last_error = ""
        while True:
            route = ctx.router.route(
                spec.type, input_tokens=chars // 4 + 1, worst_input_tokens=worst_in,
                max_tokens=spec.max_tokens, complexity=spec.complexity,
                estimated_tokens=spec.estimated_tokens, provider=spec.provider,
                model=spec.model, mode=Mode.BUILD if self.mode is Mode.DOUBLE_CHECK
                else self.mode, avoid=avoid, response=ctx.modes.mode)
            candidate = route.best
            if candidate is None:
                self._set_state(step, StepState.FAILED)
                step.error = last_error or route.reason()
                return None
            step.reason = route.reason(candidate)
            step.provider, step.model = candidate.provider.id, candidate.model.id
            ctx.store.enqueue(INSERT_ROUTE, (ctx.clock.now(), self.run_id, spec.id,
                                                step.attempts + 1, candidate.provider.id,
                                                candidate.model.id, step.reason))
            self._publish(step)
            call = ChatRequest(candidate.model.id, request.messages,
                               max_tokens=spec.max_tokens, stream=request.stream,
                               json_mode=spec.output == "json" and candidate.provider.json_mode)
            try:
                outcome = await self._attempt(
                    step, candidate, call, retries=ctx.bouquet.routing.retries,
                    fallback=functools.partial(_other_provider, route, candidate))
            except BudgetRefused as refused:
                if refused.refusal.daily:
                    raise _BudgetStop(refused.refusal.reason) from None
                avoid.add(candidate.label)
                last_error = str(refused)
                continue
            if outcome.ok:
                return outcome, candidate
            error = outcome.error
            assert error is not None
            last_error = f"{candidate.provider.id}/{candidate.model.id}: {outcome.record.error}"
            # A provider-wide failure sends the step elsewhere; a model-specific one only
            # rules out that model.
            avoid.add(candidate.label if error.kind in ("rejected", "malformed")
                      else candidate.provider.id)

    async def _attempt(self, step: PlanStep, candidate: Candidate, request: ChatRequest, *,
                       retries: int, audit: bool = False,
                       fallback: Callable[[], bool] = lambda: True) -> CallOutcome:
        """One candidate, with backoff retries on transient failures. What would move the
        step to the next candidate (an opening circuit, an unreachable provider) retries
        in place instead when `fallback()` says there is no other provider to move to."""
        ctx = self.ctx
        routing = ctx.bouquet.routing
        gate = ctx.gate(candidate.provider)
        tokens = worst_input_tokens(request) // 4 + (request.max_tokens or 0)
        retry = 0
        while True:
            step.attempts += 1
            # The provider's quota first: a call waiting for it must not hold a global
            # slot that a call to another provider could use.
            async with gate.slot(tokens), ctx.concurrency.slot():
                if self._faulted:
                    raise _Faulted
                outcome = await self._call(candidate.provider, request, purpose="step",
                                            run_id=self.run_id, step_id=step.spec.id,
                                            on_wait=lambda why: self._waiting(step, why))
            self._account(step, outcome, audit=audit)
            error = outcome.error
            if error is None or not error.retryable or retry >= retries:
                return outcome
            if isinstance(error, Unreachable) and fallback():
                return outcome  # the network or the provider is down: next candidate now
            wait = min(MAX_BACKOFF_S, routing.backoff_s * 2 ** retry) * random.uniform(0.8, 1.2)
            retry_after = getattr(error, "retry_after_s", None)  # 429 and 503 may say
            if retry_after is not None:
                if retry_after > routing.max_retry_wait_s:
                    return outcome  # too long to wait here: let another provider take it
                wait = max(wait, retry_after)
            if (not ctx.health.circuit(candidate.provider.id).allows_traffic()
                    and fallback()):
                return outcome
            retry += 1
            await asyncio.sleep(wait)

    def _account(self, step: PlanStep, outcome: CallOutcome, *, audit: bool = False) -> None:
        record = outcome.record
        step.input_tokens += record.input_tokens
        step.output_tokens += record.output_tokens
        step.usd += record.cost.usd or 0.0
        self._usd += record.cost.usd or 0.0
        # An audit costs the step, but the step's provider and timings stay the worker's.
        if outcome.ok and not audit:
            step.ttft_s = record.ttft_s
            step.duration_s = record.duration_s
            step.provider, step.model = record.provider, record.model

    async def _audit(self, step: PlanStep) -> str | None:
        """DOUBLE-CHECK: a different provider reviews the result; a disagreement is a flag."""
        ctx = self.ctx
        spec = step.spec
        prompt = AUDIT_PROMPT.format(prompt=spec.prompt, answer=step.output)
        request = ChatRequest("", (ChatMessage("system", outputs.INSTRUCTIONS["json"]),
                                   ChatMessage("user", prompt)),
                              max_tokens=512, stream=False, json_mode=True)
        route = ctx.router.route("review", input_tokens=len(prompt) // 4 + 1,
                                    worst_input_tokens=worst_input_tokens(request),
                                    max_tokens=512, mode=Mode.DOUBLE_CHECK,
                                    avoid={step.provider or ""},
                                    response=ctx.modes.mode)
        auditor = route.best
        if auditor is None:
            return "not audited: " + route.reason()
        call = ChatRequest(auditor.model.id, request.messages, max_tokens=512, stream=False,
                           json_mode=auditor.provider.json_mode)
        try:
            outcome = await self._attempt(step, auditor, call, retries=1, audit=True)
        except BudgetRefused as refused:
            return f"not audited: {refused}"
        if not outcome.ok or outcome.result is None:
            return f"not audited: {auditor.label} failed: {outcome.record.error}"
        verdict = _verdict(outcome.result.text)
        if verdict is None:
            return f"not audited: {auditor.label} did not answer in the audit format"
        agree, problems = verdict
        if agree:
            return None
        return f"{auditor.label} disagrees: " + ("; ".join(problems) or "no reason given")

    # -- prompts ---------------------------------------------------------------------------

    def _request(self, step: PlanStep) -> ChatRequest:
        spec = step.spec
        system = f"You are doing one step ({spec.type}) of the task {self.plan.task_id!r}"
        if self.plan.description:
            system += f": {self.plan.description}"
        system += "."
        if outputs.INSTRUCTIONS[spec.output]:
            system += " " + outputs.INSTRUCTIONS[spec.output]
        parts = []
        for dep in spec.depends_on:
            parent = self._steps[dep]
            parts.append(f"## Output of step {dep} ({parent.spec.type})\n\n{parent.output}\n")
        for name in spec.context_files:
            text = self._context.get(name)
            if text is None:
                text = self._context[name] = context_text(self.plan_dir, name)
            parts.append(f"## File {name}\n\n```\n{text}\n```\n")
        parts.append(f"## Your step: {spec.id}\n\n{spec.prompt}")
        return ChatRequest("", (ChatMessage("system", system),
                                ChatMessage("user", "\n".join(parts))),
                           max_tokens=spec.max_tokens, stream=True)

    # -- persistence and events ------------------------------------------------------------

    def _waiting(self, step: PlanStep, why: str | None) -> None:
        """Its call waits for budget held by calls in flight (why), or goes out (None)."""
        self._set_state(step, StepState.WAITING if why else StepState.RUNNING)
        step.error = why
        self._publish(step)

    def _set_state(self, step: PlanStep, state: StepState) -> None:
        self._counts[step.state] -= 1
        self._counts[state] += 1
        step.state = state

    def _persist(self, step: PlanStep) -> asyncio.Future[None]:
        return self.ctx.store.enqueue(UPSERT_STEP, (
            self.run_id, step.spec.id, step.state.value, step.provider, step.model,
            step.attempts, step.started, step.finished, step.output, step.error,
            step.spec.type, step.input_tokens, step.output_tokens, step.usd, step.ttft_s,
            step.duration_s, step.reason, step.flag, step.extension))

    def _restore(self, step: PlanStep, row: dict[str, Any]) -> None:
        self._set_state(step, StepState.DONE)
        for name in ("provider", "model", "attempts", "started", "finished", "output",
                     "input_tokens", "output_tokens", "usd", "ttft_s", "duration_s", "reason",
                     "flag", "extension"):
            setattr(step, name, row[name])

    def _publish(self, step: PlanStep) -> None:
        now = self.ctx.clock.now()
        self.ctx.bus.publish(StepUpdated(now, self.run_id, step.view()))
        self.ctx.bus.publish(RunUpdated(now, self.view()))

    def _publish_run(self) -> None:
        self.ctx.bus.publish(RunUpdated(self.ctx.clock.now(), self.view()))

    async def _write_output(self, step: PlanStep) -> None:
        assert self.output_dir is not None and step.output is not None
        path = self.output_dir / f"{step.spec.id}.{step.extension}"
        await asyncio.to_thread(_atomic_write, path, step.output)

    async def _write_summary(self) -> None:
        assert self.output_dir is not None
        summary = run_summary(self.view(), self.steps(), self.outputs())
        with contextlib.suppress(OSError):
            await asyncio.to_thread(_atomic_write, self.output_dir / "run.json",
                                    json.dumps(summary, indent=2, ensure_ascii=False) + "\n")


def run_summary(run: RunView, steps: list[StepView], outputs_by_step: dict[str, str] | None
                = None) -> dict[str, Any]:
    """The machine-readable result of a run: `run --json` prints it, run.json holds it."""
    items = []
    for s in steps:
        item: dict[str, Any] = {
            "id": s.step_id, "type": s.type, "status": s.state.value, "provider": s.provider,
            "model": s.model, "attempts": s.attempts, "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens, "usd": s.usd, "ttft_s": s.ttft_s,
            "duration_s": s.duration_s, "error": s.error, "flag": s.flag, "route": s.reason,
        }
        if outputs_by_step is not None:
            item["output"] = outputs_by_step.get(s.step_id)
        items.append(item)
    wall = (run.finished or run.started) - run.started
    return {
        "run_id": run.run_id, "task_id": run.task_id, "mode": run.mode,
        "status": run.status.value, "detail": run.detail,
        "steps": items,
        "totals": {
            "steps": run.total, "done": run.done, "failed": run.failed,
            "skipped": run.skipped, "cancelled": run.cancelled, "pending": run.pending,
            "flagged": sum(1 for s in steps if s.flag),
            "input_tokens": sum(s.input_tokens for s in steps),
            "output_tokens": sum(s.output_tokens for s in steps),
            "usd": sum(s.usd for s in steps),
            "wall_s": wall,
            "sequential_s": sum(s.duration_s or 0.0 for s in steps),
        },
    }


def _other_provider(route: Route, candidate: Candidate) -> bool:
    """The route holds a candidate on another provider than this one."""
    return any(c.provider.id != candidate.provider.id for c in route.candidates)


def _verdict(text: str) -> tuple[bool, list[str]] | None:
    checked = outputs.check("json", text)
    if not checked.ok:
        return None
    try:
        data = json.loads(checked.value)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("agree"), bool):
        return None
    problems = data.get("problems")
    items = [str(p) for p in problems] if isinstance(problems, list) else []
    return data["agree"], items


def _atomic_write(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    temp.replace(path)
