"""What the engine tells its subscribers (the cockpit, the CLI's live view, tests).

Every event is a frozen dataclass: subscribers may keep them, share them across tasks,
and never see one change under them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .health import ProviderHealth
from .keycheck import KeyCheck
from .keys import KeyStatus
from .progress import RunView, StepView
from .records import CallRecord

if TYPE_CHECKING:
    from .approvals import Approval


@dataclass(frozen=True, slots=True)
class Event:
    ts: float


@dataclass(frozen=True, slots=True)
class CallRecorded(Event):
    """A call is durable in the store; its cost and energy are final."""

    record: CallRecord


@dataclass(frozen=True, slots=True)
class KeyStateChanged(Event):
    provider: str
    status: KeyStatus


@dataclass(frozen=True, slots=True)
class ProviderHealthChanged(Event):
    health: ProviderHealth


@dataclass(frozen=True, slots=True)
class KeyCheckUpdated(Event):
    check: KeyCheck


@dataclass(frozen=True, slots=True)
class ApprovalRequested(Event):
    approval: Approval


@dataclass(frozen=True, slots=True)
class ApprovalDecided(Event):
    approval: Approval


@dataclass(frozen=True, slots=True)
class StepUpdated(Event):
    run_id: str
    step: StepView


@dataclass(frozen=True, slots=True)
class RunUpdated(Event):
    run: RunView


@dataclass(frozen=True, slots=True)
class ConcurrencyChanged(Event):
    limit: int
    reason: str


@dataclass(frozen=True, slots=True)
class ResponseModeChanged(Event):
    mode: str  # bouquet, hybrid, survival
    reason: str
    pinned: bool
