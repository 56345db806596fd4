"""The Store: the engine's SQLite file, opened, migrated, written and closed.

WAL with synchronous=FULL means a kill -9 (or a power cut) loses no committed row. The
writes and reads are grouped by area, one mixin each (writer.py, calls.py, holdings.py,
runs.py, vigilance.py, controls.py, veille.py), over StoreBase (base.py).

Mixins rather than small classes the Store composes: every area shares the one
connection, its write lock and the writer's queue, and the callers (the engine, the CLI,
the tests) reach some sixty methods as `store.<method>`. Composed classes would need each
of them forwarded (or every caller changed to `store.runs.steps(...)`), and an extra hop
on the call path, for no state an area owns alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from .base import BUSY_TIMEOUT_MS, _unavailable, _when_free
from .calls import CallsMixin
from .controls import ControlsMixin
from .holdings import HoldingsMixin
from .runs import RunsMixin
from .schema import _migrate
from .veille import VeilleMixin
from .vigilance import VigilanceMixin
from .writer import _STOP, Committed, Prepare, WriterMixin


class Store(CallsMixin, HoldingsMixin, RunsMixin, VigilanceMixin, ControlsMixin, VeilleMixin,
            WriterMixin):
    def __init__(self, db: aiosqlite.Connection, path: Path, *, max_batch: int) -> None:
        self._db = db
        self.path = path
        self._max_batch = max_batch
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        # One connection: a statement issued while the writer's transaction is open would
        # join it. Every write takes this lock, so each commits on its own terms.
        self._write_lock = asyncio.Lock()
        self.prepare: Prepare | None = None  # fills in energy just before the write
        self.on_committed: Committed | None = None  # publishes CallRecorded after commit
        self.failure: str | None = None  # why the last commit failed; None once one works
        self.unrecorded_calls = 0  # call rows given up on: made, possibly billed, not kept
        self._failing_since = 0.0

    @classmethod
    async def open(cls, path: Path, *, max_batch: int = 2000) -> Store:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.OperationalError) as exc:
            raise _unavailable(path, getattr(exc, "strerror", None) or exc) from None
        try:
            # First: processes started together on a fresh file wait for each other below.
            await db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await _when_free(lambda: db.execute("PRAGMA journal_mode=WAL"))
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA foreign_keys=ON")
            await _migrate(db)
        except sqlite3.OperationalError as exc:
            await db.close()
            raise _unavailable(path, exc) from None
        except Exception:
            await db.close()
            raise
        store = cls(db, path, max_batch=max_batch)
        store._writer = asyncio.create_task(store._write_loop(), name="store-writer")
        return store

    async def close(self) -> None:
        if self._writer is not None:
            await self._queue.put(_STOP)
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self._db.close()
