"""The batching writer: one task that writes every queued call row and row write.

Calls are queued and written in batches, one transaction each, so the call path never
waits on the disk. A caller that must not report a result before it is durable awaits the
future `record_call` returns: it resolves after the commit.

When a commit fails (a full or failing disk, a lock held past the busy timeout), the writer
keeps the rows and tries again; meanwhile `failure` says why and `check_writable()` holds
every dispatch, so no call goes out that could not be recorded. After GIVE_UP_S of failing
(or at close) it gives up: the futures raise StoreUnavailable and `unrecorded_calls` counts
the call rows lost.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ..records import CallRecord
from .base import StoreBase, _rollback, _unavailable
from .rows import _call_params, _check_finite, _totals
from .statements import _INSERT_CALL, _UPSERT_TOTALS

# The store's logger, as before it was a package: "aetherflow_tui.engine.store".
log = logging.getLogger(__package__)

Prepare = Callable[[CallRecord], CallRecord]
Committed = Callable[[Sequence[CallRecord]], None]

_STOP = object()

FIRST_RETRY_S = 0.05  # a failed commit is tried again after this, doubling...
MAX_RETRY_S = 1.0  # ...up to this
GIVE_UP_S = 10.0  # failing this long, the writer drops what it holds (counted)


class _Write:
    """A queued row write other than a call (step states, routing decisions)."""

    __slots__ = ("future", "params", "sql")

    def __init__(self, sql: str, params: tuple[Any, ...], future: asyncio.Future[None]) -> None:
        self.sql = sql
        self.params = params
        self.future = future


class WriterMixin(StoreBase):
    """The queue and the writer task's loop; Store.__init__ sets the state below up and
    Store.open starts the task."""

    _queue: asyncio.Queue[Any]
    _max_batch: int
    prepare: Prepare | None  # fills in energy just before the write
    on_committed: Committed | None  # publishes CallRecorded after commit
    failure: str | None  # why the last commit failed; None once one works
    unrecorded_calls: int  # call rows given up on: made, possibly billed, not kept
    _failing_since: float

    def check_writable(self) -> None:
        """StoreUnavailable while commits fail: a call made now could not be recorded."""
        if self.failure is not None:
            raise _unavailable(self.path, self.failure)

    def record_call(self, record: CallRecord) -> asyncio.Future[CallRecord]:
        """Queue a call row; the future resolves with the written row after its commit.

        A non-finite cost or energy is refused here (NonFiniteValue): SQLite would store a
        NaN as NULL, and the NOT NULL daily totals would fail the whole batch with it.
        """
        _check_finite(record)
        future: asyncio.Future[CallRecord] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((record, future))
        return future

    def enqueue(self, sql: str, params: tuple[Any, ...]) -> asyncio.Future[None]:
        """Queue a write for the next batch; the future resolves after its commit.

        Writes run in queue order, grouped by statement, so a statement must own its rows:
        two different statements never write the same row (UPSERT_STEP writes whole
        snapshots of a step, so the last one queued wins).
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(sql, params, future))
        return future

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(done)
        await done

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._take(batch)
            retry_s = FIRST_RETRY_S
            while True:
                calls = [item for item in batch if isinstance(item, tuple)]
                writes = [item for item in batch if isinstance(item, _Write)]
                try:
                    written = await self._write_batch(calls, writes) if calls or writes else []
                except sqlite3.OperationalError as exc:  # the disk, not the code
                    now = time.monotonic()
                    if self.failure is None:
                        self._failing_since = now
                        log.warning("the database %s cannot be written (%s): no call goes "
                                    "out until it can", self.path, exc)
                    self.failure = str(exc)
                    if (any(item is _STOP for item in batch)
                            or now - self._failing_since >= GIVE_UP_S):
                        self.unrecorded_calls += len(calls)
                        self._fail(calls, writes, _unavailable(self.path, exc))
                        break
                    await asyncio.sleep(retry_s)
                    retry_s = min(MAX_RETRY_S, retry_s * 2)
                    self._take(batch)  # what came meanwhile joins the next attempt
                    continue
                except Exception as exc:
                    log.exception("writing %d call rows and %d others failed", len(calls),
                                  len(writes))
                    self._fail(calls, writes, exc)
                    break
                if self.failure is not None and (calls or writes):
                    log.warning("the database %s can be written again", self.path)
                    self.failure = None
                for (_, future), row in zip(calls, written, strict=True):
                    if not future.done():
                        future.set_result(row)
                for write in writes:
                    if not write.future.done():
                        write.future.set_result(None)
                if written and self.on_committed is not None:
                    try:
                        self.on_committed(written)
                    except Exception:  # a subscriber's bug must not stop the writer
                        log.exception("publishing %d committed calls failed", len(written))
                break
            for item in batch:
                if isinstance(item, asyncio.Future) and not item.done():
                    item.set_result(None)
            if any(item is _STOP for item in batch):
                return

    def _take(self, batch: list[Any]) -> None:
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    @staticmethod
    def _fail(calls: list[tuple[CallRecord, Any]], writes: list[_Write],
              exc: BaseException) -> None:
        for future in [f for _, f in calls] + [w.future for w in writes]:
            if not future.done():
                future.set_exception(exc)
                # Many writes are queued and never awaited (routes, step rows); the loss is
                # reported once, by `failure` and `unrecorded_calls`, not by each of them.
                future.exception()

    async def _write_batch(self, calls: list[tuple[CallRecord, Any]], writes: list[_Write]
                           ) -> list[CallRecord]:
        rows = [record for record, _ in calls]
        prepare = self.prepare
        if prepare is not None and any(row.energy is None for row in rows):
            # EcoLogits takes a fraction of a millisecond a row: keep it off the event loop.
            rows = await asyncio.to_thread(
                lambda: [_check_finite(prepare(row)) if row.energy is None else row
                         for row in rows])
        totals = _totals(rows)
        grouped: dict[str, list[tuple[Any, ...]]] = {}
        for write in writes:
            grouped.setdefault(write.sql, []).append(write.params)
        async with self._write_lock:
            return await self._insert(rows, totals, grouped)

    async def _insert(self, rows: list[CallRecord], totals: dict[tuple[str, str], list[float]],
                      grouped: dict[str, list[tuple[Any, ...]]]) -> list[CallRecord]:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            last_id = 0
            if rows:
                cursor = await self._db.execute("SELECT COALESCE(MAX(id), 0) FROM calls")
                (last_id,) = await cursor.fetchone()  # type: ignore[misc]
                await self._db.executemany(_INSERT_CALL, [_call_params(r) for r in rows])
                await self._db.executemany(
                    _UPSERT_TOTALS,
                    [(day, provider, *acc) for (day, provider), acc in totals.items()])
                settled = [(r.cost.usd or 0.0, r.reservation) for r in rows
                           if r.reservation is not None and r.cost.usd]
                if settled:
                    await self._db.executemany(
                        "UPDATE reservations SET usd = MAX(0, usd - ?) WHERE id = ?", settled)
            for sql, params in grouped.items():
                await self._db.executemany(sql, params)
            await self._db.execute("COMMIT")
        except BaseException:
            await _rollback(self._db)
            raise
        # One writer holds the database, so the new ids are the next ones in order.
        return [replace(row, id=last_id + i) for i, row in enumerate(rows, start=1)]
