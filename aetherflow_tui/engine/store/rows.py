"""Rows as the store hands them out, and call records to and from their SQL rows.

The typed rows are NamedTuples, not dataclasses: a row read by position before it had
names (`minute, usd, wh, gco2e = row`) still reads the same, and building one from a
fetched tuple costs no more than the tuple did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from ..records import CallRecord
from ..usage import Cost, Energy


class MinuteSpend(NamedTuple):
    """What the calls that started in one minute cost (Store.minute_series)."""

    minute: int  # minutes since the epoch: int(ts // 60)
    usd: float
    wh: float
    gco2e: float


class KeyCheckRow(NamedTuple):
    """A provider's last key check (the sandbox verdict), as stored (Store.latest_key_checks)."""

    provider: str
    ts: float
    passed: bool  # active, or awaiting the operator's approval
    state: str  # a KeyCheckState value
    reason: str
    latency_s: float | None
    usd: float | None  # what the check's call cost by our price table
    billed_usd: float | None  # what the provider said it billed, where it says so


class ApprovalRow(NamedTuple):
    """An approval asked of the operator, decided or not (Store.approvals)."""

    id: int
    ts: float
    kind: str
    summary: str
    evidence: str | None
    proposed_action: str | None
    payload: str | None  # JSON text
    status: str  # pending, approved, rejected
    decided_ts: float | None


class CanarySpend(NamedTuple):
    """A provider's canaries of one day (Store.canary_spend_by_provider)."""

    calls: int
    usd: float


class NonFiniteValue(ValueError):
    """A call row whose cost or energy is inf or NaN: a bug upstream, never stored."""


def _check_finite(r: CallRecord) -> CallRecord:
    values = {"usd": r.cost.usd}
    if r.energy is not None:
        values |= {"wh": r.energy.wh, "gco2e": r.energy.gco2e}
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise NonFiniteValue(f"refusing to store a call of {r.provider}/{r.model} with "
                                 f"{name} = {value}: costs and energy must be finite numbers")
    return r


def _totals(rows: Sequence[CallRecord]) -> dict[tuple[str, str], list[float]]:
    """What rows add to daily_totals, per (day, provider)."""
    totals: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        acc = totals.setdefault((row.day, row.provider), [0] * 9)
        energy = row.energy
        acc[0] += 1
        acc[1] += 0 if row.ok else 1
        acc[2] += row.cost.usd or 0.0
        acc[3] += 0 if row.cost.priced else 1
        acc[4] += row.input_tokens
        acc[5] += row.output_tokens
        acc[6] += (energy.wh or 0.0) if energy else 0.0
        acc[7] += (energy.gco2e or 0.0) if energy else 0.0
        acc[8] += (energy.wh or 0.0) if energy and energy.measured else 0.0
    return totals


def _call_params(r: CallRecord) -> tuple[Any, ...]:
    energy = r.energy
    return (
        r.ts, r.day, r.provider, r.model, r.purpose, int(r.ok), r.input_tokens,
        r.cached_input_tokens, r.output_tokens, int(r.usage_estimated), r.ttft_s, r.duration_s,
        r.tokens_per_s, r.cost.usd, r.cost.method,
        energy.wh if energy else None, energy.gco2e if energy else None,
        energy.method if energy else "unknown",
        r.error_kind, r.error, r.run_id, r.step_id,
    )


def _call_from_row(row: Sequence[Any]) -> CallRecord:
    (id_, ts, day, provider, model, purpose, ok, tin, tcached, tout, estimated, ttft, duration,
     tps, usd, price_method, wh, gco2e, energy_method, error_kind, error, run_id, step_id) = row
    return CallRecord(
        ts=ts, day=day, provider=provider, model=model, purpose=purpose, ok=bool(ok),
        input_tokens=tin, cached_input_tokens=tcached, output_tokens=tout,
        usage_estimated=bool(estimated), ttft_s=ttft, duration_s=duration, tokens_per_s=tps,
        cost=Cost(usd, price_method), energy=Energy(wh, gco2e, energy_method),
        error_kind=error_kind, error=error, run_id=run_id, step_id=step_id, id=id_,
    )
