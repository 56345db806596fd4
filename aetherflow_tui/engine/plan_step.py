"""A plan step while its run goes on, and the order in which ready steps leave."""

from __future__ import annotations

from dataclasses import fields
from operator import attrgetter

from .plan import Plan, StepSpec
from .progress import StepState, StepView

_VIEW_FIELDS = attrgetter(*(f.name for f in fields(StepView)))


class PlanStep(StepView):
    """StepView's fields, written in place by the scheduler, plus what only the scheduler
    needs. The frozen StepView snapshot from view() is what leaves it, for the cockpit and
    the CLI. Subclassing keeps one declaration of the fields; this class lifts the freeze
    (and compares by identity, as a mutable thing must)."""

    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __init__(self, spec: StepSpec) -> None:
        StepView.__init__(self, spec.id, spec.type, StepState.PENDING)
        self.spec = spec
        self.waiting_for = 0  # dependencies not done yet
        self.dependents: list[PlanStep] = []
        self.output: str | None = None
        self.extension = "md"

    def view(self) -> StepView:
        return StepView(*_VIEW_FIELDS(self))


def heights(plan: Plan) -> dict[str, int]:
    """Each step's longest chain of dependents, itself included (iterative: plans are big).
    When several steps are ready at once, the one with the longest chain behind it leaves
    first: the makespan is the critical path plus what delays it."""
    dependents: dict[str, list[str]] = {s.id: [] for s in plan.steps}
    waiting = {s.id: len(s.depends_on) for s in plan.steps}
    for s in plan.steps:
        for dep in s.depends_on:
            dependents[dep].append(s.id)
    order = [sid for sid, n in waiting.items() if n == 0]
    for sid in order:  # grows as it goes: a topological order
        for child in dependents[sid]:
            waiting[child] -= 1
            if waiting[child] == 0:
                order.append(child)
    result: dict[str, int] = {}
    for sid in reversed(order):
        result[sid] = 1 + max((result[c] for c in dependents[sid]), default=0)
    return result
