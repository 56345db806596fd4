"""Read models for the cockpit and the CLI: what the operator sees of providers, spend,
the controls, the regulator and the veille's sources. Frozen: built by the engine's
subsystems, read by the UI, which never reaches the live parts behind them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .health import ProviderHealth
from .keycheck import KeyCheck
from .keys import KeyState, KeyStatus
from .ledger import Rates
from .records import ProviderTotals

if TYPE_CHECKING:
    from .modes import ResponseMode
    from .regulator import RegulatorDecision, SystemSample, SystemState


@dataclass(frozen=True, slots=True)
class ModelView:
    id: str
    roles: tuple[str, ...]
    rates: Rates | None  # None: unpriced


@dataclass(frozen=True, slots=True)
class ProviderView:
    """A provider as the operator sees it in `providers` and the health pane."""

    id: str
    kind: str
    base_url: str | None
    zone: str
    rpm: int | None
    tpm: int | None
    key: KeyStatus
    console_url: str | None
    models: tuple[ModelView, ...]
    check: KeyCheck  # the sandbox test of the current key
    health: ProviderHealth

    @property
    def usable(self) -> bool:
        return self.key.state in (KeyState.PRESENT, KeyState.NOT_NEEDED)

    @property
    def routable(self) -> bool:
        """Automatic routing may use it: a key that is there and passed its test."""
        return routable(self.key, self.check)


@dataclass(frozen=True, slots=True)
class SpendView:
    """Today's money and energy, for the cost pane and `aetherflow spend`."""

    day: str
    budget_usd: float
    totals: tuple[ProviderTotals, ...]
    minutes: tuple[tuple[float, float, float], ...]  # last 60 minutes: usd, wh, gco2e

    @property
    def spent_usd(self) -> float:
        return sum(t.usd for t in self.totals)

    @property
    def wh(self) -> float:
        return sum(t.wh for t in self.totals)

    @property
    def measured_wh(self) -> float:
        return sum(t.measured_wh for t in self.totals)

    @property
    def gco2e(self) -> float:
        return sum(t.gco2e for t in self.totals)

    @property
    def unpriced_calls(self) -> int:
        return sum(t.unpriced_calls for t in self.totals)


@dataclass(frozen=True, slots=True)
class ControlView:
    """The operator's controls and what they bound now: the cockpit's header, the
    throttle dialog, the emergency stop and the circuit resets read it."""

    held: str | None  # why dispatch is held (an emergency stop), or None
    manual_cap: int | None  # the operator's emergency throttle, or None
    concurrency: int  # the cap on calls in flight now: the regulator's, or the throttle's
    in_flight: int  # calls in flight now: quitting would cut them
    mode: ResponseMode
    mode_reason: str
    pinned: ResponseMode | None  # the mode the operator pinned, or None (automatic)
    unclosed_circuits: tuple[str, ...]  # providers whose circuit is open or half-open


@dataclass(frozen=True, slots=True)
class SystemView:
    """The machine as the regulator judges it, for the system pane."""

    running: bool  # the regulator runs in this process
    state: SystemState | None  # its state now; None when it does not run
    confidence: float | None  # of its last decision
    decision: RegulatorDecision | None  # the last one
    samples: tuple[SystemSample, ...]  # what it kept, oldest first
    held: str | None  # why dispatch is held, or None


def routable(key: KeyStatus, check: KeyCheck) -> bool:
    """A key that is there and, when it came from the keychain, passed its sandbox test."""
    usable = key.state in (KeyState.PRESENT, KeyState.NOT_NEEDED)
    return usable and (key.source != "keyring" or check.active)
