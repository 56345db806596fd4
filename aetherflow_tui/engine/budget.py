"""The hard spending limits, enforced by reservation so concurrency cannot overshoot them.

Before a call is dispatched its worst case (every input byte a token, plus max_tokens of
answer, at the model's price) is reserved against the daily budget; when it ends, the
reservation is replaced by what the call really cost. Check and reservation happen in one
synchronous step on the event loop, so a hundred steps starting at once see each other's
reservations and the day's total never passes the budget.

Spend is what the store has committed for today (every process writing to this data dir),
plus what this process has settled but not yet committed. `sync()` re-reads the store.
"""

from __future__ import annotations

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


class Reservation:
    __slots__ = ("day", "settled", "usd")

    def __init__(self, day: str, usd: float) -> None:
        self.day = day
        self.usd = usd
        self.settled = False


class BudgetGuard:
    def __init__(self, limits: BudgetSpec) -> None:
        self.limits = limits
        self.day = ""
        self._committed = 0.0  # today's spend in the store, as last read
        self._uncommitted = 0.0  # settled here, not yet in the store
        self.reserved = 0.0  # worst cases of calls in flight
        self.refusals = 0

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

    def committed(self, day: str, usd: float) -> None:
        """Rows this process settled have been committed: move them across."""
        if day == self.day:
            self._uncommitted = max(0.0, self._uncommitted - usd)
            self._committed += usd

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

    def reserve(self, day: str, usd: float) -> Reservation | Refusal:
        """Reserve a call's worst case, or refuse it. Never awaits: atomic on the loop."""
        if day != self.day:
            # Midnight passed and nobody synced yet: the new day starts empty.
            self.sync(day, 0.0)
        if self.spent + self.reserved + usd > self.limits.daily_usd + 1e-12:
            self.refusals += 1
            return Refusal("daily", f"worst case ${usd:.4f} would pass the daily budget "
                           f"(${self.spent:.4f} spent, ${self.reserved:.4f} reserved, "
                           f"${self.limits.daily_usd:g} a day)")
        self.reserved += usd
        return Reservation(day, usd)

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """The call ended: release its reservation and count what it really cost."""
        if reservation.settled:
            return
        reservation.settled = True
        self.reserved = max(0.0, self.reserved - reservation.usd)
        if reservation.day == self.day:
            self._uncommitted += actual_usd
