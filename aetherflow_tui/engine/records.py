"""Rows the engine writes and reads back: one frozen record per kind."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .usage import UNPRICED, Cost, Energy

_UNPRICED = Cost(None, UNPRICED)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One provider call, as the ledger priced it. Never holds a key or a prompt."""

    ts: float
    day: str
    provider: str
    model: str
    purpose: str  # ask, step, canary, sandbox
    ok: bool
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    usage_estimated: bool = False
    ttft_s: float | None = None
    duration_s: float = 0.0
    tokens_per_s: float | None = None
    cost: Cost = _UNPRICED
    energy: Energy | None = None  # None until the store's writer estimates it
    error_kind: str | None = None
    error: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    id: int | None = None  # set once written
    reservation: int | None = None  # the budget's row for this call, deleted with this write

    def with_energy(self, energy: Energy) -> CallRecord:
        return replace(self, energy=energy)


@dataclass(frozen=True, slots=True)
class ProviderTotals:
    """What one provider cost on one day."""

    day: str
    provider: str
    calls: int
    failures: int
    usd: float
    unpriced_calls: int
    input_tokens: int
    output_tokens: int
    wh: float
    gco2e: float
    measured_wh: float  # the part of wh that was measured rather than estimated
