"""What a plan run looks like from outside: step states and run views, frozen for events."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # its call waits for the budget reserved by calls in flight
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # a dependency failed
    CANCELLED = "cancelled"  # stopped by the operator while running

    @property
    def glyph(self) -> str:
        return _GLYPHS[self]

    @property
    def finished(self) -> bool:
        return self in (StepState.DONE, StepState.FAILED, StepState.SKIPPED)


_GLYPHS = {
    StepState.PENDING: "○", StepState.RUNNING: "⟳", StepState.WAITING: "⧗",
    StepState.DONE: "✓",
    StepState.FAILED: "✗", StepState.SKIPPED: "⊘", StepState.CANCELLED: "■",
}


class RunStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"  # every step succeeded
    FAILED = "failed"  # some step failed or was skipped
    BUDGET = "stopped-by-budget"  # a hard limit refused a call; the rest is pending
    CANCELLED = "cancelled"
    HELD = "stopped-by-hold"  # an emergency stop cancelled it or held its next call
    INTERRUPTED = "interrupted"  # the process died mid-run; resume it

    @property
    def exit_code(self) -> int:
        return {RunStatus.DONE: 0, RunStatus.BUDGET: 3, RunStatus.HELD: 3,
                RunStatus.CANCELLED: 130}.get(self, 1)


@dataclass(frozen=True, slots=True)
class StepView:
    step_id: str
    type: str
    state: StepState
    provider: str | None = None
    model: str | None = None
    attempts: int = 0
    started: float | None = None
    finished: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0
    ttft_s: float | None = None
    duration_s: float | None = None
    error: str | None = None
    flag: str | None = None  # an auditor's disagreement in double-check mode
    reason: str | None = None  # the routing decision, in one line

    def elapsed(self, now: float) -> float | None:
        if self.started is None:
            return None
        return (self.finished or now) - self.started


@dataclass(frozen=True, slots=True)
class RunView:
    run_id: str
    task_id: str
    mode: str
    status: RunStatus
    total: int
    done: int
    failed: int
    skipped: int
    running: int
    cancelled: int
    started: float
    finished: float | None
    usd: float
    eta_s: float | None
    detail: str | None = None

    @property
    def pending(self) -> int:
        return self.total - self.done - self.failed - self.skipped - self.running \
            - self.cancelled

    @property
    def progress(self) -> float:
        return (self.done + self.failed + self.skipped) / self.total if self.total else 1.0
