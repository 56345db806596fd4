"""Wall-clock time behind one seam, so tests and snapshots can fix it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...  # unix seconds


class SystemClock:
    def now(self) -> float:
        return time.time()


class FixedClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def local_day(ts: float) -> str:
    """The budget's calendar day, in UTC: every process on a data dir counts the same day
    whatever its TZ, so budgets reset at midnight UTC."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
