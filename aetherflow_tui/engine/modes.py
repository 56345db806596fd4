"""The response mode: how much of the work the API bouquet gets, and how much stays local.

- BOUQUET: the APIs do the work; local models are only the last fallback of a step.
- HYBRID: the local models take the logic and QA steps ([modes] local_types) while the
  cheapest APIs take the rest.
- SURVIVAL: everything runs on the local models.

The mode follows health and budget signals: a worse mode is entered at once, a better one
only once its conditions have held for recover_s (hysteresis), so a provider that comes
and goes does not flap the factory. The operator can pin a mode. Every switch says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .config import ModesSpec


class ResponseMode(StrEnum):
    BOUQUET = "bouquet"
    HYBRID = "hybrid"
    SURVIVAL = "survival"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {ResponseMode.BOUQUET: 0, ResponseMode.HYBRID: 1, ResponseMode.SURVIVAL: 2}

# Roles that make an API model fit for the logic and QA steps.
LOGIC_ROLES = frozenset({"reasoning", "logic", "qa", "quality"})


@dataclass(frozen=True, slots=True)
class ModeSignals:
    """What the mode is decided from, read from the engine at one instant."""

    has_local: bool  # a local model is declared (else nothing to fall back to)
    apis: int  # API providers with a usable key
    apis_up: int  # of those, how many take traffic (circuit closed or half-open)
    logic_up: bool  # an API model for logic and QA is up
    spent_pct: float  # today's spend, % of the daily budget
    cheapest_usd_per_mtok: float | None  # cheapest API model up, mean of in and out
    spare_local: bool = False  # the regulator asks to keep work off this strained machine


@dataclass(frozen=True, slots=True)
class ModeDecision:
    mode: ResponseMode
    reason: str  # one line, in the operator's words
    pinned: bool


def target(spec: ModesSpec, signals: ModeSignals) -> tuple[ResponseMode, str]:
    """The mode these signals call for, with why; the worst reason wins."""
    if not signals.has_local:
        return ResponseMode.BOUQUET, "no local model declared: APIs only"
    if signals.apis == 0:
        return ResponseMode.SURVIVAL, "no API provider has a usable, tested key"
    if signals.apis_up == 0:
        return ResponseMode.SURVIVAL, f"all {signals.apis} API providers are down"
    if signals.spent_pct >= spec.survival_budget_pct:
        return ResponseMode.SURVIVAL, (f"{signals.spent_pct:.0f}% of today's budget spent "
                                       f"(survival at {spec.survival_budget_pct:g}%)")
    if signals.spare_local:
        return ResponseMode.BOUQUET, ("the machine is strained: local models are spared "
                                      "(regulator)")
    if signals.spent_pct >= spec.hybrid_budget_pct:
        return ResponseMode.HYBRID, (f"{signals.spent_pct:.0f}% of today's budget spent "
                                     f"(hybrid at {spec.hybrid_budget_pct:g}%)")
    if not signals.logic_up:
        return ResponseMode.HYBRID, "no API model for logic and QA is up"
    ceiling = spec.hybrid_above_usd_per_mtok
    cheapest = signals.cheapest_usd_per_mtok
    if ceiling is not None and cheapest is not None and cheapest > ceiling:
        return ResponseMode.HYBRID, (f"the cheapest API model costs ${cheapest:.2f}/M tokens "
                                     f"(hybrid above ${ceiling:g}/M)")
    return ResponseMode.BOUQUET, f"{signals.apis_up} of {signals.apis} API providers up"


class ModeController:
    """Holds the current mode and applies the hysteresis; pure, driven by its caller."""

    def __init__(self, spec: ModesSpec, now: float) -> None:
        self.spec = spec
        self.pinned: ResponseMode | None = (None if spec.pin == "auto"
                                            else ResponseMode(spec.pin))
        self.mode = self.pinned or ResponseMode.BOUQUET
        self.reason = "pinned in the config" if self.pinned else "reading the keys"
        self.since = now
        self._better_since: float | None = None
        self._first = True

    def pin(self, mode: ResponseMode | None, now: float) -> ModeDecision | None:
        """The operator's choice (None: back to automatic). Returns the switch, if any."""
        self.pinned = mode
        self._better_since = None
        if mode is not None and mode is not self.mode:
            return self._switch(mode, "pinned by the operator", now)
        if mode is not None:
            self.reason = "pinned by the operator"
        return None

    def update(self, signals: ModeSignals, now: float) -> ModeDecision | None:
        """Feed the current signals; returns a decision when the mode changes."""
        if self.pinned is not None:
            return None
        wanted, why = target(self.spec, signals)
        if self._first:
            # The first reading is where we start, not a change of conditions.
            self._first = False
            self.mode, self.reason, self.since = wanted, why, now
            return None
        if wanted is self.mode:
            self._better_since = None
            self.reason = why
            return None
        if wanted.severity > self.mode.severity:
            return self._switch(wanted, why, now)
        if self._better_since is None:
            self._better_since = now
        if now - self._better_since >= self.spec.recover_s:
            return self._switch(wanted, f"{why} for {self.spec.recover_s:g} s", now)
        return None

    def _switch(self, mode: ResponseMode, reason: str, now: float) -> ModeDecision | None:
        self._better_since = None
        changed = mode is not self.mode
        self.mode, self.reason, self.since = mode, reason, now
        return ModeDecision(mode, reason, self.pinned is not None) if changed else None
