"""Reads of the calls and of the day's totals: what the cockpit, the budget and the
canaries' cap ask of them."""

from __future__ import annotations

from typing import Any

from ..records import CallRecord, ProviderTotals
from .base import StoreBase
from .rows import CanarySpend, MinuteSpend, _call_from_row
from .statements import _CALL_COLUMNS


class CallsMixin(StoreBase):
    async def totals_for_day(self, day: str) -> list[ProviderTotals]:
        cursor = await self._db.execute(
            "SELECT * FROM daily_totals WHERE day = ? ORDER BY provider", (day,)
        )
        return [ProviderTotals(*row) for row in await cursor.fetchall()]

    async def recent_calls(self, limit: int = 50) -> list[CallRecord]:
        cursor = await self._db.execute(
            f"SELECT id, {_CALL_COLUMNS} FROM calls ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [_call_from_row(row) for row in await cursor.fetchall()]

    async def minute_series(self, since_ts: float) -> list[MinuteSpend]:
        """What each minute with calls since `since_ts` cost, oldest first."""
        cursor = await self._db.execute(
            "SELECT CAST(ts / 60 AS INTEGER) AS minute, COALESCE(SUM(usd), 0), "
            "COALESCE(SUM(wh), 0), COALESCE(SUM(gco2e), 0) FROM calls WHERE ts >= ? "
            "GROUP BY minute ORDER BY minute", (since_ts,))
        return [MinuteSpend(*row) for row in await cursor.fetchall()]

    async def day_spend(self, day: str) -> float:
        """Today's committed dollars, read while no batch is mid-commit (the budget syncs)."""
        async with self._write_lock:
            cursor = await self._db.execute(
                "SELECT COALESCE(SUM(usd), 0) FROM daily_totals WHERE day = ?", (day,))
            (usd,) = await cursor.fetchone()  # type: ignore[misc]
        return float(usd)

    async def canary_spend(self, day: str) -> float:
        cursor = await self._db.execute(
            "SELECT COALESCE(SUM(usd), 0) FROM calls WHERE day = ? AND purpose = 'canary'",
            (day,))
        (usd,) = await cursor.fetchone()  # type: ignore[misc]
        return float(usd)

    async def canary_spend_by_provider(self, day: str) -> dict[str, CanarySpend]:
        cursor = await self._db.execute(
            "SELECT provider, COUNT(*), COALESCE(SUM(usd), 0) FROM calls "
            "WHERE day = ? AND purpose = 'canary' GROUP BY provider", (day,))
        return {row[0]: CanarySpend(int(row[1]), float(row[2]))
                for row in await cursor.fetchall()}

    async def usage_since(self, since_ts: float) -> list[dict[str, Any]]:
        """Real traffic per provider and model since since_ts (canaries and tests apart)."""
        return await self._dicts(
            "SELECT provider, model, COUNT(*) AS calls, SUM(input_tokens) AS input_tokens, "
            "SUM(output_tokens) AS output_tokens, COALESCE(SUM(usd), 0) AS usd, "
            "MIN(ts) AS first_ts FROM calls WHERE ts >= ? AND purpose NOT IN "
            "('canary', 'sandbox') GROUP BY provider, model", (since_ts,))
