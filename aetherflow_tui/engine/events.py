"""What the engine tells its subscribers (the cockpit, the CLI's live view, tests).

Every event is a frozen dataclass: subscribers may keep them, share them across tasks,
and never see one change under them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .health import ProbeResult, ProviderHealth
from .keycheck import KeyCheck
from .keys import KeyStatus
from .progress import RunView, StepView
from .records import CallRecord

if TYPE_CHECKING:
    from .approvals import Approval
    from .regulator import SystemSample
    from .veille.item import VeilleItem
    from .views import SourceStatus
    from .vigilance import RegulatorDecision


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


@dataclass(frozen=True, slots=True)
class CanaryProbed(Event):
    result: ProbeResult


@dataclass(frozen=True, slots=True)
class SystemSampled(Event):
    """The regulator's reading of the machine, once per regulator interval."""

    sample: SystemSample


@dataclass(frozen=True, slots=True)
class RegulatorDecided(Event):
    decision: RegulatorDecision


@dataclass(frozen=True, slots=True)
class AlertRaised(Event):
    """Something the operator must know: persisted, and a notification in the cockpit."""

    severity: str  # information, warning, error
    title: str
    message: str
    source: str  # regulator, health, operator


@dataclass(frozen=True, slots=True)
class DispatchHoldChanged(Event):
    held: bool
    reason: str


@dataclass(frozen=True, slots=True)
class VeilleItemClassified(Event):
    """A new market-watch item is stored, labelled, its prices extracted."""

    item: VeilleItem


@dataclass(frozen=True, slots=True)
class VeillePolled(Event):
    """A poll is over: each source's outcome (errors included) and how many items are new."""

    sources: tuple[SourceStatus, ...]
    new_items: int
