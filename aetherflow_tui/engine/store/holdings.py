"""The budget across processes: what each process holds of the day for its calls in
flight, taken in one transaction that sees every process's spend and holdings."""

from __future__ import annotations

from collections.abc import Callable

from ..records import CallRecord
from ..usage import Cost, Energy
from .base import StoreBase
from .rows import _call_params, _totals
from .statements import _INSERT_CALL, _UPSERT_TOTALS

# A call left in flight by a process that died: billed, perhaps, and never settled.
CUT_BY_CRASH = "estimated:worst-case"


class HoldingsMixin(StoreBase):
    async def hold(self, key: tuple[str, int, float, int, str], least: float, wanted: float,
                   limit: float, ts: float) -> tuple[int | None, float, float, float]:
        """Add to what a process holds of the day (key: day, pid, pid start, holder (one
        engine of that process), provider):
        `wanted` if it fits beside every process's spend and holdings within `limit`, else
        `least` if that fits, else nothing. (row id, granted, spent, held by all before),
        as they stood in the transaction."""
        day = key[0]
        async with self._immediate():
            cursor = await self._db.execute(
                "SELECT (SELECT COALESCE(SUM(usd), 0) FROM daily_totals WHERE day = ?), "
                "(SELECT COALESCE(SUM(usd), 0) FROM reservations WHERE day = ?)",
                (day, day))
            (spent, held) = await cursor.fetchone()  # type: ignore[misc]
            room = limit - spent - held + 1e-12
            granted = wanted if wanted <= room else least if least <= room else 0.0
            row_id = None
            if granted > 0:
                cursor = await self._db.execute(
                    "INSERT INTO reservations (day, pid, pid_started, holder, provider, "
                    "usd, ts) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, pid, "
                    "pid_started, holder, provider) DO UPDATE SET usd = usd + excluded.usd, "
                    "ts = excluded.ts RETURNING id", (*key, granted, ts))
                (row_id,) = await cursor.fetchone()  # type: ignore[misc]
        return row_id, granted, float(spent), float(held)

    async def give_back(self, row_id: int, usd: float) -> None:
        """A process no longer needs this much of what it holds."""
        await self._write("UPDATE reservations SET usd = MAX(0, usd - ?) WHERE id = ?",
                          (usd, row_id))

    async def drop_holdings(self, pid: int, pid_started: float, holder: int) -> None:
        await self._write("DELETE FROM reservations WHERE pid = ? AND pid_started = ? AND "
                          "holder = ?", (pid, pid_started, holder))

    async def expire_reservations(self, alive: Callable[[int, float], bool]) -> int:
        """What dead processes held is spend: calls they had in flight may have been billed
        up to their worst case. Each holding becomes a failed call row (estimated), in one
        transaction with its deletion, so two processes never both count it."""
        cursor = await self._db.execute("SELECT DISTINCT pid, pid_started FROM reservations")
        dead = [(pid, started) for pid, started in await cursor.fetchall()
                if not alive(pid, started)]
        if not dead:
            return 0
        async with self._immediate():
            rows = []
            for pid, started in dead:
                cursor = await self._db.execute(
                    "DELETE FROM reservations WHERE pid = ? AND pid_started = ? "
                    "RETURNING ts, day, provider, usd, pid", (pid, started))
                rows += [row for row in await cursor.fetchall() if row[3] > 0]
            records = [CallRecord(
                ts=ts, day=day, provider=provider, model="", purpose="reserved",
                ok=False, usage_estimated=True, cost=Cost(usd, CUT_BY_CRASH),
                energy=Energy(None, None, "unknown"), error_kind="interrupted",
                error=f"process {pid} died with calls in flight: what it held for them "
                "counts at their worst case") for ts, day, provider, usd, pid in rows]
            if records:
                await self._db.executemany(_INSERT_CALL,
                                           [_call_params(r) for r in records])
                await self._db.executemany(
                    _UPSERT_TOTALS, [(day, provider, *acc) for (day, provider), acc
                                     in _totals(records).items()])
        return len(records)
