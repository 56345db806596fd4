"""The hard spending limits: worst-case bounds, per-call ceilings, and daily reservations."""

from __future__ import annotations

import asyncio
import random

import pytest

from aetherflow_tui.engine.budget import (
    BudgetGuard,
    Full,
    Refusal,
    Reservation,
    worst_cost,
    worst_input_tokens,
)
from aetherflow_tui.engine.config import BudgetSpec
from aetherflow_tui.engine.ledger import PRICE_CONFIG, Rates
from aetherflow_tui.engine.providers.base import ChatMessage, ChatRequest

LIMITS = BudgetSpec(daily_usd=1.0, max_usd_per_1k_tokens=0.02, max_usd_per_request=0.10)
DAY = "2024-03-01"
NEXT_DAY = "2024-03-02"


def rates(price_in: float, price_out: float) -> Rates:
    return Rates(price_in, price_out, price_in, PRICE_CONFIG)


def reserved(guard: BudgetGuard, day: str, usd: float) -> Reservation:
    result = guard.reserve(day, usd)
    assert isinstance(result, Reservation), result
    return result


# --- worst cases -----------------------------------------------------------------------


@pytest.mark.parametrize("content", [
    "plain ASCII prompt",
    "déjà vu, naïve café",
    "日本語のテキスト",
    "emoji 😀🚀 and more 🧪" * 50,
])
def test_worst_input_tokens_is_at_least_the_utf8_byte_count(content: str) -> None:
    request = ChatRequest("m", (ChatMessage("system", "be brief"), ChatMessage("user", content)))

    byte_count = sum(len(m.content.encode("utf-8")) for m in request.messages)

    assert worst_input_tokens(request) >= byte_count


def test_worst_input_tokens_counts_bytes_not_characters() -> None:
    request = ChatRequest.ask("m", "😀" * 1000)  # 1,000 characters, 4,000 bytes

    assert worst_input_tokens(request) >= 4000


def test_worst_cost_prices_every_input_token_and_the_whole_answer() -> None:
    assert worst_cost(rates(2.0, 8.0), 1_000, 500) == pytest.approx((2_000 + 4_000) / 1e6)


# --- per-call ceilings -----------------------------------------------------------------


def test_an_unpriced_model_is_refused() -> None:
    refusal = BudgetGuard(LIMITS).per_call(None, 100, 100)

    assert isinstance(refusal, Refusal)
    assert refusal.limit == "unpriced"
    assert "no known price" in refusal.reason
    assert "price_in" in refusal.fix and "price_out" in refusal.fix
    assert not refusal.daily


def test_a_call_above_the_per_1k_ceiling_is_refused() -> None:
    # $30 in, $60 out per million, half and half: $0.045 per 1k tokens.
    refusal = BudgetGuard(LIMITS).per_call(rates(30.0, 60.0), 1_000, 1_000)

    assert isinstance(refusal, Refusal)
    assert refusal.limit == "per_1k_tokens"
    assert "$0.0450 per 1k tokens" in refusal.reason
    assert "$0.02 ceiling" in refusal.reason
    assert "max_usd_per_1k_tokens" in refusal.fix


def test_a_call_whose_worst_case_is_above_the_per_request_ceiling_is_refused() -> None:
    # $0.01 per 1k is under that ceiling, but 20,000 tokens of it is $0.20.
    refusal = BudgetGuard(LIMITS).per_call(rates(10.0, 10.0), 10_000, 10_000)

    assert isinstance(refusal, Refusal)
    assert refusal.limit == "per_request"
    assert "worst case $0.2000" in refusal.reason
    assert "$0.1 per-request ceiling" in refusal.reason
    assert "max_tokens" in refusal.fix


def test_a_call_under_both_ceilings_passes() -> None:
    assert BudgetGuard(LIMITS).per_call(rates(10.0, 10.0), 1_000, 1_000) is None


# --- the daily budget ------------------------------------------------------------------


def test_reservations_may_fill_the_day_exactly_and_a_call_beyond_waits() -> None:
    guard = BudgetGuard(LIMITS)
    guard.sync(DAY, 0.25)

    reserved(guard, DAY, 0.5)
    reserved(guard, DAY, 0.25)  # 0.25 spent + 0.75 reserved: exactly the budget
    full = guard.reserve(DAY, 0.01)

    # Reservations in flight are not spend: it waits for them, it is not refused.
    assert isinstance(full, Full)
    assert "$0.7500 reserved" in full.reason and "$0.2500 spent" in full.reason
    assert guard.refusals == 0
    assert guard.reserved == pytest.approx(0.75)
    assert guard.remaining == pytest.approx(0.0)


def test_a_call_is_refused_only_when_spend_plus_its_own_worst_case_passes_the_day() -> None:
    guard = BudgetGuard(LIMITS)
    guard.sync(DAY, 0.25)
    reserved(guard, DAY, 0.7)

    refusal = guard.reserve(DAY, 0.8)  # 0.25 spent + 0.8 > 1, whatever is in flight

    assert isinstance(refusal, Refusal)
    assert refusal.daily and refusal.limit == "daily"
    assert "$0.2500 spent" in refusal.reason and "$0.8000" in refusal.reason
    assert "daily_usd" in refusal.fix


async def test_a_waiting_call_fits_once_a_reservation_settles_at_its_real_cost() -> None:
    guard = BudgetGuard(LIMITS)
    first = reserved(guard, DAY, 0.6)
    assert isinstance(guard.reserve(DAY, 0.6), Full)

    waiter = asyncio.ensure_future(guard.changed(timeout=10))
    await asyncio.sleep(0)
    guard.settle(first, 0.1)
    await asyncio.wait_for(waiter, 1)  # woken by the settlement, not by the timeout

    assert isinstance(guard.reserve(DAY, 0.6), Reservation)
    assert guard.spent + guard.reserved == pytest.approx(0.7)


def test_every_refusal_is_counted_and_reserves_nothing() -> None:
    guard = BudgetGuard(LIMITS)
    guard.sync(DAY, 0.9)

    assert isinstance(guard.reserve(DAY, 0.2), Refusal)
    assert isinstance(guard.reserve(DAY, 5.0), Refusal)
    reserved(guard, DAY, 0.1)

    assert guard.refusals == 2
    assert guard.reserved == pytest.approx(0.1)


def test_settle_releases_the_worst_case_and_counts_the_actual_cost() -> None:
    guard = BudgetGuard(LIMITS)
    reservation = reserved(guard, DAY, 0.5)

    guard.settle(reservation, 0.2)

    assert guard.reserved == pytest.approx(0.0)
    assert guard.spent == pytest.approx(0.2)
    assert guard.remaining == pytest.approx(0.8)


def test_settling_twice_changes_nothing() -> None:
    guard = BudgetGuard(LIMITS)
    first = reserved(guard, DAY, 0.5)
    reserved(guard, DAY, 0.3)
    guard.settle(first, 0.2)

    guard.settle(first, 0.2)

    assert guard.reserved == pytest.approx(0.3)
    assert guard.spent == pytest.approx(0.2)


def test_committed_moves_settled_spend_into_the_stores_total() -> None:
    guard = BudgetGuard(LIMITS)
    guard.sync(DAY, 0.1)
    guard.settle(reserved(guard, DAY, 0.5), 0.2)

    guard.committed(DAY, 0.2)
    assert guard.spent == pytest.approx(0.3)

    guard.sync(DAY, 0.3)  # the store now holds our row: it must not count twice
    assert guard.spent == pytest.approx(0.3)


def test_committed_for_another_day_is_ignored() -> None:
    guard = BudgetGuard(LIMITS)
    guard.sync(DAY, 0.0)
    guard.settle(reserved(guard, DAY, 0.5), 0.2)

    guard.committed(NEXT_DAY, 0.2)
    guard.sync(DAY, 0.0)

    assert guard.spent == pytest.approx(0.2)


def test_sync_on_a_new_day_starts_from_the_stores_total() -> None:
    guard = BudgetGuard(LIMITS)
    guard.sync(DAY, 0.6)
    guard.settle(reserved(guard, DAY, 0.3), 0.3)

    guard.sync(NEXT_DAY, 0.05)

    assert guard.day == NEXT_DAY
    assert guard.spent == pytest.approx(0.05)
    assert guard.remaining == pytest.approx(0.95)


def test_a_reservation_on_a_new_day_starts_that_day_empty() -> None:
    guard = BudgetGuard(LIMITS)
    guard.sync(DAY, 0.7)
    guard.settle(reserved(guard, DAY, 0.2), 0.2)
    assert isinstance(guard.reserve(DAY, 0.5), Refusal)

    reservation = guard.reserve(NEXT_DAY, 0.5)

    assert isinstance(reservation, Reservation)
    assert guard.day == NEXT_DAY
    assert guard.spent == pytest.approx(0.0)
    assert guard.reserved == pytest.approx(0.5)


def test_random_reservations_and_settlements_never_pass_the_daily_budget() -> None:
    rng = random.Random(20240301)
    guard = BudgetGuard(LIMITS)
    guard.sync(DAY, 0.0)
    in_flight: list[Reservation] = []
    settled_not_committed = 0.0
    granted = refused = waited = 0
    for _ in range(1_000):
        if in_flight and rng.random() < 0.45:
            reservation = in_flight.pop(rng.randrange(len(in_flight)))
            actual = rng.uniform(0.0, reservation.usd)
            guard.settle(reservation, actual)
            settled_not_committed += actual
        else:
            usd = rng.uniform(0.0, 0.08)
            before = guard.spent + guard.reserved
            result = guard.reserve(DAY, usd)
            if isinstance(result, Reservation):
                granted += 1
                in_flight.append(result)
            elif isinstance(result, Full):
                waited += 1
                assert before + usd > LIMITS.daily_usd  # waits only when it would pass
                assert guard.spent + usd <= LIMITS.daily_usd + 1e-9  # ...beside the others
            else:
                refused += 1
                assert guard.spent + usd > LIMITS.daily_usd  # refused on spend alone
        if rng.random() < 0.1:
            moved = rng.uniform(0.0, settled_not_committed)
            guard.committed(DAY, moved)
            settled_not_committed -= moved
        assert guard.spent + guard.reserved <= LIMITS.daily_usd + 1e-9
    assert granted and refused and waited  # the walk really reached the limit
    assert guard.refusals == refused


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Etc/GMT+12", "UTC"])
def test_the_budget_day_is_the_utc_day_whatever_the_processs_tz(zone: str) -> None:
    import os
    import time
    from datetime import UTC, datetime

    from aetherflow_tui.engine.clock import local_day

    before = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        for hour in (1, 11, 23):
            ts = datetime(2024, 3, 1, hour, 30, tzinfo=UTC).timestamp()
            assert local_day(ts) == DAY
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()
