"""Read models for the cockpit and the CLI: what the operator sees of providers and spend."""

from __future__ import annotations

from dataclasses import dataclass

from .health import ProviderHealth
from .keycheck import KeyCheck
from .keys import KeyState, KeyStatus
from .ledger import Rates
from .records import ProviderTotals


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


def routable(key: KeyStatus, check: KeyCheck) -> bool:
    """A key that is there and, when it came from the keychain, passed its sandbox test."""
    usable = key.state in (KeyState.PRESENT, KeyState.NOT_NEEDED)
    return usable and (key.source != "keyring" or check.active)
