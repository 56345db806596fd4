"""Numbers as the operator reads them, shared by the CLI and the cockpit."""

from __future__ import annotations

import math


def significant(value: float, digits: int = 2) -> str:
    """Fixed-point with `digits` significant digits for small values: 0.0000055, not 5.5e-06."""
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:.{decimals}f}"


def usd(value: float | None) -> str:
    if value is None:
        return "unpriced"
    if abs(value) >= 0.01 or value == 0:
        return f"${value:.2f}" if abs(value) >= 1 else f"${value:.4f}".rstrip("0").rstrip(".")
    return "$" + significant(value)


def latency(seconds: float | None) -> str:
    """240 ms, 1.4 s; a dash when unknown."""
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}%"


def per_mtok(value: float | None, missing: str = "unpriced") -> str:
    """A $/million-token rate: 0.59, 2, 0.075; `missing` when there is none."""
    if value is None:
        return missing
    return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"


def age(seconds: float) -> str:
    """How long ago, short: 45 s up to 90 s, 12 min up to 90 min, 3.0 h up to 48 h, 5 d."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def ago(seconds: float) -> str:
    """`age` said as a time past: 45 s ago, 12 min ago, 3.0 h ago, 5 d ago."""
    return f"{age(seconds)} ago"
