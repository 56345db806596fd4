"""What every part of the store shares: the one connection, its write lock, and the ways
a statement meets the disk (a write under the lock, a write transaction, a read as dicts)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import StoreUnavailable

BUSY_TIMEOUT_MS = 5000


class StoreBase:
    """The connection and the helpers each area of the Store uses; Store sets them up."""

    _db: aiosqlite.Connection
    path: Path
    _write_lock: asyncio.Lock  # every write takes it (see Store.__init__)

    async def _write(self, sql: str, params: Sequence[Any]) -> aiosqlite.Cursor:
        async with self._write_lock:
            try:
                return await self._db.execute(sql, params)
            except sqlite3.OperationalError as exc:
                raise _unavailable(self.path, exc) from None

    @contextlib.asynccontextmanager
    async def _immediate(self) -> AsyncIterator[None]:
        """One write transaction under the write lock: committed at the end, else rolled
        back, a disk that cannot take it (full, a lock held too long) as StoreUnavailable."""
        async with self._write_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                await self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                await _rollback(self._db)
                raise _unavailable(self.path, exc) from None
            except BaseException:
                await _rollback(self._db)
                raise

    async def _dicts(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        cursor = await self._db.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def schema_version(self) -> int:
        cursor = await self._db.execute("PRAGMA user_version")
        (version,) = await cursor.fetchone()  # type: ignore[misc]
        return int(version)


async def _when_free(statement: Callable[[], Any], *, tries: int = 20) -> None:
    """Run a statement, again while another connection holds the lock it needs.

    The busy timeout covers most waits, but some (turning a fresh file to WAL, a lock a
    reader must upgrade) are refused at once with "database is locked".
    """
    for attempt in range(tries):
        try:
            await statement()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            await asyncio.sleep(0.01 * (attempt + 1))


async def _rollback(db: aiosqlite.Connection) -> None:
    # A failed COMMIT (a full disk) may have rolled back already; a failed ROLLBACK
    # leaves nothing better to do than to let the next BEGIN find out.
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            await db.execute("ROLLBACK")


def _unavailable(path: Path, reason: object) -> StoreUnavailable:
    return StoreUnavailable(
        f"the database {path} cannot be written ({reason})",
        fix="make sure its disk has free space and its folder is writable, then resume the "
            "run; nothing is sent to a provider while calls cannot be recorded")
