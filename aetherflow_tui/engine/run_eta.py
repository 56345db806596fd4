"""How long a run has left: the remaining critical path at the routed models' live
latency, walked by the Steps pane's ETA and `run`'s progress line."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .context import EngineContext
from .plan import StepSpec
from .plan_step import PlanStep
from .progress import StepState
from .router import PRIOR_LATENCY_FAST_S, PRIOR_LATENCY_S, Mode


def remaining_s(ctx: EngineContext, mode: Mode, steps: Iterable[PlanStep]) -> float:
    """The remaining critical path: each unfinished step takes its routed model's live
    latency (p50, or the router's prior), chained along its dependencies; and no less
    than the remaining work spread over the calls allowed in flight."""
    now = ctx.clock.now()
    routed: dict[tuple[Any, ...], float] = {}
    ends: dict[str, float] = {}
    work = end = 0.0
    for step in steps:  # by height: every step after its dependencies
        if step.state.finished or step.state is StepState.CANCELLED:
            continue
        if step.state is StepState.RUNNING and step.provider and step.model:
            left = max(0.0, _latency(ctx, step.provider, step.model)
                       - (now - (step.started or now)))
        else:
            left = _expected_s(ctx, mode, step.spec, routed)
        if mode is Mode.DOUBLE_CHECK:
            left *= 2  # the audit is a second call after the work
        start = max((ends.get(d, 0.0) for d in step.spec.depends_on), default=0.0)
        ends[step.spec.id] = start + left
        end = max(end, start + left)
        work += left
    return max(end, work / max(1, ctx.concurrency.limit))


def _latency(ctx: EngineContext, provider: str, model: str) -> float:
    measured = ctx.health.stats(provider).latency_p50_s
    if measured is not None:
        return measured
    spec = ctx.bouquet.providers.get(provider)
    declared = spec.model(model) if spec is not None else None
    fast = declared is not None and "fast" in declared.roles
    return PRIOR_LATENCY_FAST_S if fast else PRIOR_LATENCY_S


def _expected_s(ctx: EngineContext, mode: Mode, spec: StepSpec,
            routed: dict[tuple[Any, ...], float]) -> float:
    """The latency of the model the router would pick for this step now (one decision
    per kind of step, not per step: big plans repeat a few kinds)."""
    key = (spec.type, spec.provider, spec.model, spec.complexity, spec.estimated_tokens,
           spec.max_tokens)
    latency = routed.get(key)
    if latency is None:
        tokens = len(spec.prompt) // 4 + 1
        best = ctx.router.route(
            spec.type, input_tokens=tokens, worst_input_tokens=len(spec.prompt) + 1,
            max_tokens=spec.max_tokens, complexity=spec.complexity,
            estimated_tokens=spec.estimated_tokens, provider=spec.provider,
            model=spec.model, mode=Mode.BUILD if mode is Mode.DOUBLE_CHECK
            else mode, response=ctx.modes.mode).best
        latency = routed[key] = 0.0 if best is None else best.latency_s
    return latency

