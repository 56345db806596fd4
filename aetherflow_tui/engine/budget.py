"""The hard spending limits, enforced by reservation so concurrency cannot overshoot them.

Before a call is dispatched its worst case (every input byte a token, plus max_tokens of
answer, at the model's price) is reserved against the daily budget; when it ends, the
reservation is replaced by what the call really cost. Check and reservation happen in one
synchronous step on the event loop, so a hundred steps starting at once see each other's
reservations and the day's total never passes the budget. The same check is then made
for every process on the data dir at once, against what each holds of the day in the
store (`SharedBudget`): that durable holding covers the call before it goes out.

Reservations in flight are not spend: a call that does not fit only because of them is
`Full` and waits for them to settle (`changed()`); it is refused only when what was
really spent plus its own worst case would pass the budget.

Spend is what the store has committed for today (every process writing to this data dir),
plus what this process has settled but not yet committed. `sync()` re-reads the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from .config import BudgetSpec
from .providers.base import ChatRequest
from .usage import Rates

log = logging.getLogger(__name__)

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


class _Holding:
    __slots__ = ("demand", "idle", "lock", "row", "total", "used")

    def __init__(self) -> None:
        self.row: int | None = None  # its row in the store's reservations table
        self.total = 0.0  # what the store says this process holds
        self.used = 0.0  # worst cases in flight, and settled costs not yet written
        self.idle: asyncio.TimerHandle | None = None
        self.lock = asyncio.Lock()  # one request to the store at a time
        self.demand = 0.0  # worst cases of the calls waiting for that request


class SharedBudget:
    """This process's holding of the day in the store, per provider, against which its calls
    reserve. Taking from the store is a disk write every process waits on, so a process
    takes a few calls' worth at once (HEADROOM) and gives back what it does not use: when it
    must wait for others, and once its calls have been idle IDLE_S. What it holds is never
    less than its calls in flight can cost, so a dead process's holding covers them.
    """

    HEADROOM = 8  # worst cases taken beyond the one a call needs, when they fit
    IDLE_S = 1.0

    def __init__(self, store: Any, identity: tuple[int, float], limit: float) -> None:
        self._store = store
        # Two engines of one process keep apart holdings (id: unique while both live).
        self._identity = (*identity, id(self))
        self._limit = limit
        self._holdings: dict[tuple[str, str], _Holding] = {}
        self._giving_back: set[asyncio.Future[None]] = set()

    def _holding(self, day: str, provider: str) -> _Holding:
        holding = self._holdings.get((day, provider))
        if holding is None:
            holding = self._holdings[(day, provider)] = _Holding()
        return holding

    async def take(self, day: str, provider: str, usd: float, ts: float
                   ) -> tuple[int | None, float, float]:
        """Hold `usd` for a call: (row id, or None when the day has no room beside what
        others hold; spent; held by every process), the last two as the store saw them."""
        holding = self._holding(day, provider)
        spent = held = 0.0
        if holding.total - holding.used < usd - 1e-12:
            # Calls starting together ask the store once, for all of them.
            holding.demand += usd
            try:
                async with holding.lock:
                    while holding.total - holding.used < usd - 1e-12:
                        least = usd - (holding.total - holding.used)
                        wanted = max(holding.demand, (self.HEADROOM + 1) * usd) - (
                            holding.total - holding.used)
                        asked = asyncio.ensure_future(self._store.hold(
                            (day, *self._identity, provider), least, max(least, wanted),
                            self._limit, ts))
                        try:
                            row, granted, spent, held = await asyncio.shield(asked)
                        except asyncio.CancelledError:
                            # The store may grant it anyway: count it, to give it back.
                            asked.add_done_callback(lambda done: self._landed(holding, done))
                            raise
                        if row is None:
                            return None, spent, held
                        holding.row = row
                        holding.total += granted
            finally:
                holding.demand -= usd
        holding.used += usd
        if holding.idle is not None:
            holding.idle.cancel()
            holding.idle = None
        return holding.row, spent, held

    def _landed(self, holding: _Holding, asked: asyncio.Future[Any]) -> None:
        if asked.cancelled() or asked.exception() is not None:
            return
        row, granted, _, _ = asked.result()
        if row is not None:
            holding.row = row
            holding.total += granted
            self._maybe_idle(holding)

    def settle(self, day: str, provider: str, worst: float, actual: float) -> None:
        """A call ended: its worst case becomes what it cost, held until its row lands."""
        holding = self._holding(day, provider)
        holding.used = max(0.0, holding.used - worst + actual)
        self._maybe_idle(holding)

    def written(self, day: str, provider: str, usd: float) -> None:
        """A call's row landed, and gave back what it cost in the same transaction."""
        holding = self._holding(day, provider)
        holding.total = max(0.0, holding.total - usd)
        holding.used = max(0.0, holding.used - usd)
        self._maybe_idle(holding)

    async def give_back(self) -> None:
        """Give back every holding's unused part (others may need it)."""
        # A copy: while it awaits, a call to another provider (or a new day) adds one.
        for holding in list(self._holdings.values()):
            await self._give_back(holding)

    async def drop(self) -> None:
        """The process stops, every call written: it holds nothing any more."""
        for holding in self._holdings.values():
            if holding.idle is not None:
                holding.idle.cancel()
            holding.total = holding.used = 0.0
        for task in list(self._giving_back):
            task.cancel()
        await self._store.drop_holdings(*self._identity)

    def _maybe_idle(self, holding: _Holding) -> None:
        if holding.used <= 1e-12 and holding.idle is None and holding.total > 0:
            holding.idle = asyncio.get_running_loop().call_later(
                self.IDLE_S, self._give_back_later, holding)

    def _give_back_later(self, holding: _Holding) -> None:
        # Kept until done (a task nobody holds can be collected mid-way), its failure
        # retrieved: a store that cannot write says so once, through its own failure flag.
        task = asyncio.ensure_future(self._give_back(holding))
        self._giving_back.add(task)
        task.add_done_callback(self._gave_back)

    def _gave_back(self, task: asyncio.Future[None]) -> None:
        self._giving_back.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("giving back a holding failed", exc_info=task.exception())

    async def _give_back(self, holding: _Holding) -> None:
        holding.idle = None
        unused = holding.total - holding.used
        if holding.row is None or unused <= 1e-12:
            return
        holding.total -= unused  # before the write: meanwhile this process holds less
        await self._store.give_back(holding.row, unused)
