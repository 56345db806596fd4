"""The hard spending limits, enforced by reservation so concurrency cannot overshoot them.

Before a call is dispatched its worst case (every input byte a token, plus max_tokens of
answer, at the model's price) is reserved against the daily budget; when it ends, the
reservation is replaced by what the call really cost. Check and reservation happen in one
synchronous step on the event loop, so a hundred steps starting at once see each other's
reservations and the day's total never passes the budget. The same check is then made
for every process on the data dir at once, in the store (`Store.reserve`), whose row is
also the durable record that the call went out.

Reservations in flight are not spend: a call that does not fit only because of them is
`Full` and waits for them to settle (`changed()`); it is refused only when what was
really spent plus its own worst case would pass the budget.

Spend is what the store has committed for today (every process writing to this data dir),
plus what this process has settled but not yet committed. `sync()` re-reads the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass

from .config import BudgetSpec
from .ledger import Rates
from .providers.base import ChatRequest

# Chat templates add a few tokens per message and per request.
_TOKENS_PER_MESSAGE = 8
_TOKENS_PER_REQUEST = 16


def worst_input_tokens(request: ChatRequest) -> int:
    """An upper bound on the input tokens: tokenizers never produce more tokens than bytes."""
    return _TOKENS_PER_REQUEST + sum(len(m.content.encode()) + _TOKENS_PER_MESSAGE
                                     for m in request.messages)


def worst_cost(rates: Rates, input_tokens: int, max_tokens: int) -> float:
    return (input_tokens * rates.input + max_tokens * rates.output) / 1_000_000


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call may not go out: which limit, in the operator's words."""

    limit: str  # per_1k_tokens, per_request, daily, unpriced
    reason: str

    @property
    def daily(self) -> bool:
        return self.limit == "daily"

    @property
    def fix(self) -> str:
        return _FIXES[self.limit]


_FIXES = {
    "unpriced": "set price_in and price_out for the model in the config",
    "per_1k_tokens": "use a cheaper model, or raise [budget] max_usd_per_1k_tokens",
    "per_request": "lower max_tokens, or raise [budget] max_usd_per_request",
    "daily": "wait for tomorrow, or raise [budget] daily_usd",
}


@dataclass(frozen=True, slots=True)
class Full:
    """The call's worst case fits the day, but not beside the reservations in flight."""

    reason: str


class Reservation:
    __slots__ = ("day", "row", "settled", "usd")

    def __init__(self, day: str, usd: float) -> None:
        self.day = day
        self.usd = usd
        self.settled = False
        self.row: int | None = None  # its row in the store's reservations table


class BudgetGuard:
    def __init__(self, limits: BudgetSpec) -> None:
        self.limits = limits
        self.day = ""
        self._committed = 0.0  # today's spend in the store, as last read
        self._uncommitted = 0.0  # settled here, not yet in the store
        self.reserved = 0.0  # worst cases of calls in flight
        self.refusals = 0
        self._changed = asyncio.Event()

    @property
    def spent(self) -> float:
        return self._committed + self._uncommitted

    @property
    def remaining(self) -> float:
        return self.limits.daily_usd - self.spent - self.reserved

    def sync(self, day: str, committed_usd: float) -> None:
        """Today's committed spend from the store; a new day starts from it."""
        if day != self.day:
            self.day = day
            self._uncommitted = 0.0
        self._committed = committed_usd
        self._wake()

    def committed(self, day: str, usd: float) -> None:
        """Rows this process settled have been committed: move them across."""
        if day == self.day:
            self._uncommitted = max(0.0, self._uncommitted - usd)
            self._committed += usd
        self._wake()

    async def changed(self, timeout: float) -> None:
        """Wait until a reservation is released or spend moves, or `timeout` passes (other
        processes' settlements are seen only by re-reading the store)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def per_call(self, rates: Rates | None, input_tokens: int, max_tokens: int
                 ) -> Refusal | None:
        """The per-call ceilings, which depend only on the model and the request's size."""
        if rates is None:
            return Refusal("unpriced", "no known price, so its cost cannot be bounded")
        worst = worst_cost(rates, input_tokens, max_tokens)
        per_1k = 1000 * worst / max(1, input_tokens + max_tokens)
        if per_1k > self.limits.max_usd_per_1k_tokens:
            return Refusal("per_1k_tokens", f"${per_1k:.4f} per 1k tokens is above the "
                           f"${self.limits.max_usd_per_1k_tokens:g} ceiling")
        if worst > self.limits.max_usd_per_request:
            return Refusal("per_request", f"worst case ${worst:.4f} is above the "
                           f"${self.limits.max_usd_per_request:g} per-request ceiling")
        return None

    def reserve(self, day: str, usd: float) -> Reservation | Refusal | Full:
        """Reserve a call's worst case, refuse it, or say it must wait for the calls in
        flight. Never awaits: atomic on the loop."""
        if day != self.day:
            # Midnight passed and nobody synced yet: the new day starts empty.
            self.sync(day, 0.0)
        refusal = self.refuse(usd, self.spent)
        if refusal is not None:
            return refusal
        if self.spent + self.reserved + usd > self.limits.daily_usd + 1e-12:
            return Full(f"worst case ${usd:.4f} waits for ${self.reserved:.4f} reserved by "
                        f"calls in flight (${self.spent:.4f} spent, "
                        f"${self.limits.daily_usd:g} a day)")
        self.reserved += usd
        return Reservation(day, usd)

    def refuse(self, usd: float, spent: float) -> Refusal | None:
        """The daily refusal: what was really spent plus this call alone passes the budget."""
        if spent + usd <= self.limits.daily_usd + 1e-12:
            return None
        self.refusals += 1
        return Refusal("daily", f"worst case ${usd:.4f} would pass the daily budget "
                       f"(${spent:.4f} spent, ${self.limits.daily_usd:g} a day)")

    def release(self, reservation: Reservation) -> None:
        """The call never went out: give its reservation back, nothing spent."""
        self.settle(reservation, 0.0)

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """The call ended: release its reservation and count what it really cost."""
        if reservation.settled:
            return
        reservation.settled = True
        self.reserved = max(0.0, self.reserved - reservation.usd)
        if reservation.day == self.day:
            self._uncommitted += actual_usd
        self._wake()


def this_process() -> tuple[int, float]:
    """(pid, start time): who owns a reservation row. The start time tells a reused pid
    from the process that wrote the row."""
    import psutil

    return os.getpid(), psutil.Process().create_time()


def process_alive(pid: int, started: float) -> bool:
    """Whether the process that wrote a reservation row still runs (a zombie does not)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return (abs(process.create_time() - started) < 1.0
                and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
