"""Wall-clock time behind one seam, so tests and snapshots can fix it."""

from __future__ import annotations

import time
from datetime import datetime
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
    """The operator's calendar day: budgets reset at local midnight."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d")
