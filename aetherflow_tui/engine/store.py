"""The engine's SQLite file: WAL, versioned migrations, and one batching writer.

Calls are queued and written by a single writer task in batches, one transaction each,
so the call path never waits on the disk. A caller that must not report a result before
it is durable awaits the future `record_call` returns: it resolves after the commit.
WAL with synchronous=FULL means a kill -9 (or a power cut) loses no committed row.

When a commit fails (a full or failing disk, a lock held past the busy timeout), the writer
keeps the rows and tries again; meanwhile `failure` says why and `check_writable()` holds
every dispatch, so no call goes out that could not be recorded. After GIVE_UP_S of failing
(or at close) it gives up: the futures raise StoreUnavailable and `unrecorded_calls` counts
the call rows lost.

Today's totals come from `daily_totals`, kept up to date in the same transaction as the
calls, so the cockpit's once-a-second query reads a handful of rows, not the whole day.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosqlite

from .errors import OperatorError, StoreUnavailable
from .records import CallRecord, ProviderTotals
from .usage import Cost, Energy

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: the foundation
    """
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        day TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        purpose TEXT NOT NULL,
        ok INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        cached_input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        usage_estimated INTEGER NOT NULL,
        ttft_s REAL,
        duration_s REAL NOT NULL,
        tokens_per_s REAL,
        usd REAL,
        price_method TEXT NOT NULL,
        wh REAL,
        gco2e REAL,
        energy_method TEXT NOT NULL,
        error_kind TEXT,
        error TEXT,
        run_id TEXT,
        step_id TEXT
    );
    CREATE INDEX calls_day_provider ON calls(day, provider);
    CREATE INDEX calls_run ON calls(run_id) WHERE run_id IS NOT NULL;
    CREATE TABLE daily_totals (
        day TEXT NOT NULL,
        provider TEXT NOT NULL,
        calls INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        usd REAL NOT NULL,
        unpriced_calls INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        wh REAL NOT NULL,
        gco2e REAL NOT NULL,
        measured_wh REAL NOT NULL,
        PRIMARY KEY (day, provider)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        task_id TEXT,
        plan_path TEXT,
        mode TEXT,
        status TEXT NOT NULL,
        started REAL NOT NULL,
        finished REAL,
        detail TEXT
    );
    CREATE TABLE steps (
        run_id TEXT NOT NULL REFERENCES runs(id),
        step_id TEXT NOT NULL,
        status TEXT NOT NULL,
        provider TEXT,
        model TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        started REAL,
        finished REAL,
        output TEXT,
        error TEXT,
        PRIMARY KEY (run_id, step_id)
    );
    CREATE TABLE health_samples (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        provider TEXT NOT NULL,
        model TEXT,
        source TEXT NOT NULL,
        ok INTEGER NOT NULL,
        latency_s REAL,
        ttft_s REAL,
        detail TEXT
    );
    CREATE INDEX health_provider_ts ON health_samples(provider, ts);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL
    );
    CREATE TABLE decisions (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        state TEXT,
        confidence REAL,
        reasoning TEXT NOT NULL,
        metrics TEXT,
        actions TEXT
    );
    CREATE TABLE approvals (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        summary TEXT NOT NULL,
        evidence TEXT,
        proposed_action TEXT,
        payload TEXT,
        status TEXT NOT NULL DEFAULT 'pending',
        decided_ts REAL
    );
    CREATE INDEX approvals_status ON approvals(status);
    """,
    # 2: the cockpit: the last hour by minute, and each provider's key checks
    """
    CREATE INDEX calls_ts ON calls(ts);
    CREATE TABLE key_checks (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        provider TEXT NOT NULL,
        passed INTEGER NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        latency_s REAL,
        usd REAL,
        billed_usd REAL
    );
    CREATE INDEX key_checks_provider ON key_checks(provider, id);
    """,
    # 3: plans: what a run executed, each step's measures, and every routing decision
    """
    ALTER TABLE runs ADD COLUMN plan_digest TEXT;
    ALTER TABLE runs ADD COLUMN plan_text TEXT;
    ALTER TABLE steps ADD COLUMN type TEXT;
    ALTER TABLE steps ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE steps ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE steps ADD COLUMN usd REAL NOT NULL DEFAULT 0;
    ALTER TABLE steps ADD COLUMN ttft_s REAL;
    ALTER TABLE steps ADD COLUMN duration_s REAL;
    ALTER TABLE steps ADD COLUMN reason TEXT;
    ALTER TABLE steps ADD COLUMN flag TEXT;
    ALTER TABLE steps ADD COLUMN extension TEXT;
    CREATE TABLE routes (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        run_id TEXT,
        step_id TEXT,
        attempt INTEGER NOT NULL,
        provider TEXT,
        model TEXT,
        reason TEXT NOT NULL
    );
    CREATE INDEX routes_run ON routes(run_id, step_id);
    """,
    # 4: response-mode switches (bouquet, hybrid, survival), each with its reason.
    """
    CREATE TABLE mode_changes (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        mode TEXT NOT NULL,
        reason TEXT NOT NULL,
        pinned INTEGER NOT NULL
    );
    """,
    # 5: vigilance. Alerts; the operator's controls (emergency stop, throttle...) written by
    # one process and applied by every live one, which acknowledges them; the live
    # processes themselves (a heartbeat); settings that outlive a process (the stop hold).
    """
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        severity TEXT NOT NULL,
        title TEXT NOT NULL,
        message TEXT NOT NULL,
        source TEXT NOT NULL
    );
    CREATE TABLE controls (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        action TEXT NOT NULL,
        params TEXT NOT NULL,
        origin TEXT NOT NULL
    );
    CREATE TABLE control_acks (
        control_id INTEGER NOT NULL,
        pid INTEGER NOT NULL,
        ts REAL NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (control_id, pid)
    );
    CREATE TABLE processes (
        pid INTEGER PRIMARY KEY,
        role TEXT NOT NULL,
        started REAL NOT NULL,
        seen REAL NOT NULL
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        ts REAL NOT NULL
    );
    CREATE INDEX calls_day_purpose ON calls(day, purpose);
    CREATE INDEX decisions_ts ON decisions(ts);
    """,
    # 6: veille. Sources added from the command line; each source's last poll with its
    # conditional-GET validators; classified items (deduplicated by key, and by title
    # across sources); the prices the operator approved from them.
    """
    CREATE TABLE veille_sources (
        name TEXT PRIMARY KEY,
        location TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        provider TEXT,
        added_ts REAL NOT NULL
    );
    CREATE TABLE veille_polls (
        location TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        ts REAL NOT NULL,
        outcome TEXT NOT NULL,
        error TEXT,
        etag TEXT,
        last_modified TEXT,
        ok_ts REAL,
        new_items INTEGER NOT NULL
    );
    CREATE TABLE veille_items (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        title_key TEXT NOT NULL,
        source TEXT NOT NULL,
        title TEXT NOT NULL,
        summary TEXT NOT NULL,
        link TEXT,
        published_ts REAL,
        seen_ts REAL NOT NULL,
        label TEXT NOT NULL,
        confidence REAL NOT NULL,
        prices TEXT NOT NULL
    );
    CREATE INDEX veille_items_title ON veille_items(title_key);
    CREATE INDEX veille_items_label ON veille_items(label, id);
    CREATE TABLE price_updates (
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        input_per_mtok REAL NOT NULL,
        output_per_mtok REAL NOT NULL,
        item_id INTEGER,
        ts REAL NOT NULL,
        PRIMARY KEY (provider, model)
    );
    """,
    # 7: which process runs a run, so an emergency stop can count the runs in flight in
    # every live process (a run still marked running whose process is gone was cut short).
    """
    ALTER TABLE runs ADD COLUMN pid INTEGER;
    """,
    # 8: the budget across processes. What each process holds of the day for its calls in
    # flight (their worst cases, and what settled calls cost until their rows land), per
    # provider: taken before a call goes out, in one transaction that sees every process's
    # spend and holdings; a call's row gives back what it cost in the transaction that
    # writes it. What a dead process held is spend (Store.expire_reservations).
    """
    CREATE TABLE reservations (
        id INTEGER PRIMARY KEY,
        day TEXT NOT NULL,
        pid INTEGER NOT NULL,
        pid_started REAL NOT NULL,
        holder INTEGER NOT NULL,
        provider TEXT NOT NULL,
        usd REAL NOT NULL,
        ts REAL NOT NULL
    );
    CREATE UNIQUE INDEX reservations_holder
        ON reservations(day, pid, pid_started, holder, provider);
    """,
)

# A call left in flight by a process that died: billed, perhaps, and never settled.
CUT_BY_CRASH = "estimated:worst-case"

_CALL_COLUMNS = (
    "ts, day, provider, model, purpose, ok, input_tokens, cached_input_tokens, output_tokens, "
    "usage_estimated, ttft_s, duration_s, tokens_per_s, usd, price_method, wh, gco2e, "
    "energy_method, error_kind, error, run_id, step_id"
)
_INSERT_CALL = f"INSERT INTO calls ({_CALL_COLUMNS}) VALUES ({', '.join('?' * 22)})"
_UPSERT_TOTALS = """
INSERT INTO daily_totals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, provider) DO UPDATE SET
    calls = calls + excluded.calls,
    failures = failures + excluded.failures,
    usd = usd + excluded.usd,
    unpriced_calls = unpriced_calls + excluded.unpriced_calls,
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    wh = wh + excluded.wh,
    gco2e = gco2e + excluded.gco2e,
    measured_wh = measured_wh + excluded.measured_wh
"""

STEP_COLUMNS = ("run_id", "step_id", "status", "provider", "model", "attempts", "started",
                "finished", "output", "error", "type", "input_tokens", "output_tokens", "usd",
                "ttft_s", "duration_s", "reason", "flag", "extension")
UPSERT_STEP = (
    f"INSERT INTO steps ({', '.join(STEP_COLUMNS)}) VALUES ({', '.join('?' * len(STEP_COLUMNS))}) "
    "ON CONFLICT (run_id, step_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in STEP_COLUMNS[2:])
)
INSERT_MODE_CHANGE = "INSERT INTO mode_changes (ts, mode, reason, pinned) VALUES (?, ?, ?, ?)"
INSERT_HEALTH_SAMPLE = ("INSERT INTO health_samples (ts, provider, model, source, ok, latency_s, "
                        "ttft_s, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
INSERT_DECISION = ("INSERT INTO decisions (ts, kind, state, confidence, reasoning, metrics, "
                   "actions) VALUES (?, ?, ?, ?, ?, ?, ?)")
VEILLE_ITEM_COLUMNS = ("key", "title_key", "source", "title", "summary", "link", "published_ts",
                       "seen_ts", "label", "confidence", "prices")
INSERT_ALERT = ("INSERT INTO alerts (ts, severity, title, message, source) "
                "VALUES (?, ?, ?, ?, ?)")
INSERT_ROUTE = ("INSERT INTO routes (ts, run_id, step_id, attempt, provider, model, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)")

Prepare = Callable[[CallRecord], CallRecord]
Committed = Callable[[Sequence[CallRecord]], None]

_STOP = object()

BUSY_TIMEOUT_MS = 5000
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


class Store:
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

    async def _write(self, sql: str, params: Sequence[Any]) -> aiosqlite.Cursor:
        async with self._write_lock:
            try:
                return await self._db.execute(sql, params)
            except sqlite3.OperationalError as exc:
                raise _unavailable(self.path, exc) from None

    async def minute_series(self, since_ts: float) -> list[tuple[int, float, float, float]]:
        """(minute, usd, wh, gco2e) for each minute with calls since `since_ts`."""
        cursor = await self._db.execute(
            "SELECT CAST(ts / 60 AS INTEGER) AS minute, COALESCE(SUM(usd), 0), "
            "COALESCE(SUM(wh), 0), COALESCE(SUM(gco2e), 0) FROM calls WHERE ts >= ? "
            "GROUP BY minute ORDER BY minute", (since_ts,))
        return [tuple(row) for row in await cursor.fetchall()]  # type: ignore[misc]

    async def add_approval(self, ts: float, kind: str, summary: str, evidence: str,
                           proposed_action: str, payload: dict[str, Any]) -> int:
        cursor = await self._write(
            "INSERT INTO approvals (ts, kind, summary, evidence, proposed_action, payload) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (ts, kind, summary, evidence, proposed_action, json.dumps(payload)))
        return int(cursor.lastrowid or 0)

    async def approvals(self, status: str | None = "pending") -> list[tuple[Any, ...]]:
        where = "WHERE status = ?" if status else ""
        cursor = await self._db.execute(
            "SELECT id, ts, kind, summary, evidence, proposed_action, payload, status, "
            f"decided_ts FROM approvals {where} ORDER BY id", (status,) if status else ())
        return [tuple(row) for row in await cursor.fetchall()]

    async def decide_approval(self, approval_id: int, status: str, ts: float) -> bool:
        cursor = await self._write(
            "UPDATE approvals SET status = ?, decided_ts = ? WHERE id = ? AND status = "
            "'pending'", (status, ts, approval_id))
        return cursor.rowcount == 1

    async def add_key_check(self, ts: float, provider: str, passed: bool, state: str,
                            reason: str, latency_s: float | None, usd: float | None,
                            billed_usd: float | None) -> None:
        await self._write(
            "INSERT INTO key_checks (ts, provider, passed, state, reason, latency_s, usd, "
            "billed_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ts, provider, int(passed), state, reason, latency_s, usd, billed_usd))

    async def latest_key_checks(self) -> dict[str, tuple[Any, ...]]:
        cursor = await self._db.execute(
            "SELECT provider, ts, passed, state, reason, latency_s, usd, billed_usd "
            "FROM key_checks WHERE id IN (SELECT MAX(id) FROM key_checks GROUP BY provider)")
        return {row[0]: tuple(row) for row in await cursor.fetchall()}

    async def day_spend(self, day: str) -> float:
        """Today's committed dollars, read while no batch is mid-commit (the budget syncs)."""
        async with self._write_lock:
            cursor = await self._db.execute(
                "SELECT COALESCE(SUM(usd), 0) FROM daily_totals WHERE day = ?", (day,))
            (usd,) = await cursor.fetchone()  # type: ignore[misc]
        return float(usd)

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

    # -- runs --------------------------------------------------------------------------------

    async def create_run(self, run_id: str, task_id: str, plan_path: str, mode: str,
                         started: float, digest: str, plan_text: str,
                         pid: int | None = None) -> None:
        await self._write(
            "INSERT INTO runs (id, task_id, plan_path, mode, status, started, plan_digest, "
            "plan_text, pid) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
            (run_id, task_id, plan_path, mode, started, digest, plan_text, pid))

    async def update_run(self, run_id: str, *, status: str, mode: str,
                         finished: float | None, detail: str | None,
                         pid: int | None = None) -> None:
        """pid: the process that takes the run over (a resume); None leaves it."""
        await self.flush()  # the run's last step rows land before its final status
        await self._write("UPDATE runs SET status = ?, mode = ?, finished = ?, detail = ?, "
                          "pid = COALESCE(?, pid) WHERE id = ?",
                          (status, mode, finished, detail, pid, run_id))

    async def running_runs(self) -> list[dict[str, Any]]:
        """Runs marked running, with the process that runs them (None: not recorded)."""
        return await self._dicts("SELECT id, pid FROM runs WHERE status = 'running'", ())

    async def run_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        if not run_ids:
            return {}
        cursor = await self._db.execute(
            f"SELECT id, status FROM runs WHERE id IN ({', '.join('?' * len(run_ids))})",
            tuple(run_ids))
        return {row[0]: row[1] for row in await cursor.fetchall()}

    async def run(self, run_id: str) -> dict[str, Any] | None:
        rows = await self._dicts("SELECT * FROM runs WHERE id = ?", (run_id,))
        return rows[0] if rows else None

    async def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return await self._dicts(
            "SELECT id, task_id, plan_path, mode, status, started, finished, detail FROM runs "
            "ORDER BY started DESC LIMIT ?", (limit,))

    async def steps(self, run_id: str) -> list[dict[str, Any]]:
        return await self._dicts(
            f"SELECT {', '.join(STEP_COLUMNS)} FROM steps WHERE run_id = ?", (run_id,))

    async def run_calls(self, run_id: str) -> list[CallRecord]:
        cursor = await self._db.execute(
            f"SELECT id, {_CALL_COLUMNS} FROM calls WHERE run_id = ? ORDER BY id", (run_id,))
        return [_call_from_row(row) for row in await cursor.fetchall()]

    async def routes(self, run_id: str) -> list[dict[str, Any]]:
        return await self._dicts(
            "SELECT ts, step_id, attempt, provider, model, reason FROM routes WHERE run_id = ? "
            "ORDER BY id", (run_id,))

    async def mode_changes(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest response-mode switches, newest first."""
        return await self._dicts(
            "SELECT ts, mode, reason, pinned FROM mode_changes ORDER BY id DESC LIMIT ?",
            (limit,))

    # -- vigilance ---------------------------------------------------------------------------

    async def health_samples(self, since_ts: float, limit: int = 2000
                             ) -> list[dict[str, Any]]:
        """Canary and status-page readings since since_ts, oldest first."""
        rows = await self._dicts(
            "SELECT ts, provider, model, source, ok, latency_s, ttft_s, detail "
            "FROM health_samples WHERE ts >= ? ORDER BY id DESC LIMIT ?", (since_ts, limit))
        return rows[::-1]

    async def canary_spend(self, day: str) -> float:
        cursor = await self._db.execute(
            "SELECT COALESCE(SUM(usd), 0) FROM calls WHERE day = ? AND purpose = 'canary'",
            (day,))
        (usd,) = await cursor.fetchone()  # type: ignore[misc]
        return float(usd)

    async def canary_spend_by_provider(self, day: str) -> dict[str, tuple[int, float]]:
        cursor = await self._db.execute(
            "SELECT provider, COUNT(*), COALESCE(SUM(usd), 0) FROM calls "
            "WHERE day = ? AND purpose = 'canary' GROUP BY provider", (day,))
        return {row[0]: (int(row[1]), float(row[2])) for row in await cursor.fetchall()}

    async def decisions(self, limit: int = 20) -> list[dict[str, Any]]:
        """The regulator's latest decisions, newest first (metrics and actions decoded)."""
        rows = await self._dicts(
            "SELECT ts, kind, state, confidence, reasoning, metrics, actions FROM decisions "
            "ORDER BY id DESC LIMIT ?", (limit,))
        for row in rows:
            row["metrics"] = json.loads(row["metrics"] or "{}")
            row["actions"] = json.loads(row["actions"] or "[]")
        return rows

    async def alerts(self, limit: int = 20) -> list[dict[str, Any]]:
        return await self._dicts(
            "SELECT id, ts, severity, title, message, source FROM alerts "
            "ORDER BY id DESC LIMIT ?", (limit,))

    async def add_control(self, ts: float, action: str, params: dict[str, Any],
                          origin: str) -> int:
        cursor = await self._write(
            "INSERT INTO controls (ts, action, params, origin) VALUES (?, ?, ?, ?)",
            (ts, action, json.dumps(params), origin))
        return int(cursor.lastrowid or 0)

    async def last_control_id(self) -> int:
        cursor = await self._db.execute("SELECT COALESCE(MAX(id), 0) FROM controls")
        (last,) = await cursor.fetchone()  # type: ignore[misc]
        return int(last)

    async def controls_after(self, control_id: int) -> list[dict[str, Any]]:
        rows = await self._dicts(
            "SELECT id, ts, action, params, origin FROM controls WHERE id > ? ORDER BY id",
            (control_id,))
        for row in rows:
            row["params"] = json.loads(row["params"])
        return rows

    async def ack_control(self, control_id: int, pid: int, ts: float, detail: str) -> None:
        await self._write("INSERT OR REPLACE INTO control_acks VALUES (?, ?, ?, ?)",
                          (control_id, pid, ts, detail))

    async def control_acks(self, control_id: int) -> list[dict[str, Any]]:
        return await self._dicts(
            "SELECT a.pid, a.ts, a.detail, p.role FROM control_acks a LEFT JOIN processes p "
            "ON p.pid = a.pid WHERE a.control_id = ? ORDER BY a.pid", (control_id,))

    async def heartbeat(self, pid: int, role: str, started: float, seen: float) -> None:
        await self._write("INSERT INTO processes VALUES (?, ?, ?, ?) ON CONFLICT (pid) DO "
                          "UPDATE SET role = excluded.role, started = excluded.started, "
                          "seen = excluded.seen", (pid, role, started, seen))

    async def drop_process(self, pid: int) -> None:
        await self._write("DELETE FROM processes WHERE pid = ?", (pid,))

    async def processes(self, seen_since: float) -> list[dict[str, Any]]:
        return await self._dicts("SELECT pid, role, started, seen FROM processes WHERE "
                                 "seen >= ? ORDER BY started", (seen_since,))

    async def setting(self, key: str) -> Any:
        cursor = await self._db.execute("SELECT value FROM settings WHERE key = ?", (key,))
        row = await cursor.fetchone()
        return json.loads(row[0]) if row else None

    async def set_setting(self, key: str, value: Any, ts: float) -> None:
        if value is None:
            await self._write("DELETE FROM settings WHERE key = ?", (key,))
            return
        await self._write("INSERT OR REPLACE INTO settings VALUES (?, ?, ?)",
                          (key, json.dumps(value), ts))

    # -- veille ------------------------------------------------------------------------------

    async def add_veille_items(self, rows: Sequence[dict[str, Any]], *, title_window_s: float
                               ) -> list[int]:
        """Insert new items in one transaction; the id of each row, 0 for a duplicate.

        A duplicate has a key already stored, or the same title as an item seen within
        `title_window_s` (the same story syndicated under another link).
        """
        ids = []
        async with self._immediate():
            for row in rows:
                cursor = await self._db.execute(
                    "SELECT 1 FROM veille_items WHERE key = ? OR (title_key = ? AND "
                    "seen_ts >= ?) LIMIT 1",
                    (row["key"], row["title_key"], row["seen_ts"] - title_window_s))
                if await cursor.fetchone() is not None:
                    ids.append(0)
                    continue
                cursor = await self._db.execute(
                    f"INSERT INTO veille_items ({', '.join(VEILLE_ITEM_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(VEILLE_ITEM_COLUMNS))})",
                    [json.dumps(row[c]) if c == "prices" else row[c]
                     for c in VEILLE_ITEM_COLUMNS])
                ids.append(int(cursor.lastrowid or 0))
        return ids

    async def known_veille_keys(self, keys: Sequence[str]) -> set[str]:
        known: set[str] = set()
        for start in range(0, len(keys), 500):  # SQLite caps bound parameters
            chunk = keys[start:start + 500]
            cursor = await self._db.execute(
                f"SELECT key FROM veille_items WHERE key IN ({', '.join('?' * len(chunk))})",
                chunk)
            known.update(row[0] for row in await cursor.fetchall())
        return known

    async def veille_items(self, *, limit: int = 200, label: str | None = None,
                           since_ts: float | None = None) -> list[dict[str, Any]]:
        """Items, newest first (by when they were seen, then by id)."""
        where, params = [], []
        if label is not None:
            where.append("label = ?")
            params.append(label)
        if since_ts is not None:
            where.append("seen_ts >= ?")
            params.append(since_ts)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._dicts(
            f"SELECT id, {', '.join(VEILLE_ITEM_COLUMNS)} FROM veille_items {clause} "
            "ORDER BY seen_ts DESC, id DESC LIMIT ?", (*params, limit))
        for row in rows:
            row["prices"] = json.loads(row["prices"])
        return rows

    async def veille_item(self, item_id: int) -> dict[str, Any] | None:
        rows = await self._dicts(
            f"SELECT id, {', '.join(VEILLE_ITEM_COLUMNS)} FROM veille_items WHERE id = ?",
            (item_id,))
        for row in rows:
            row["prices"] = json.loads(row["prices"])
        return rows[0] if rows else None

    async def record_veille_poll(self, location: str, name: str, ts: float, outcome: str,
                                 error: str | None, etag: str | None,
                                 last_modified: str | None, new_items: int) -> None:
        # A failed poll keeps the validators and the last success of the one before it.
        await self._write(
            "INSERT INTO veille_polls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (location) DO UPDATE SET name = excluded.name, ts = excluded.ts, "
            "outcome = excluded.outcome, error = excluded.error, "
            "etag = CASE WHEN excluded.outcome = 'error' THEN etag ELSE excluded.etag END, "
            "last_modified = CASE WHEN excluded.outcome = 'error' THEN last_modified "
            "ELSE excluded.last_modified END, "
            "ok_ts = COALESCE(excluded.ok_ts, ok_ts), new_items = excluded.new_items",
            (location, name, ts, outcome, error, etag, last_modified,
             None if outcome == "error" else ts, new_items))

    async def veille_polls(self) -> dict[str, dict[str, Any]]:
        rows = await self._dicts("SELECT * FROM veille_polls", ())
        return {row["location"]: row for row in rows}

    async def added_veille_sources(self) -> list[dict[str, Any]]:
        return await self._dicts("SELECT name, location, kind, provider, added_ts FROM "
                                 "veille_sources ORDER BY added_ts", ())

    async def add_veille_source(self, name: str, location: str, kind: str,
                                provider: str | None, ts: float) -> None:
        await self._write("INSERT INTO veille_sources VALUES (?, ?, ?, ?, ?)",
                          (name, location, kind, provider, ts))

    async def remove_veille_source(self, name: str) -> bool:
        cursor = await self._write("DELETE FROM veille_sources WHERE name = ?", (name,))
        return cursor.rowcount == 1

    async def price_updates(self) -> list[dict[str, Any]]:
        return await self._dicts("SELECT provider, model, input_per_mtok, output_per_mtok, "
                                 "item_id, ts FROM price_updates ORDER BY ts", ())

    async def set_price_update(self, provider: str, model: str, input_per_mtok: float,
                               output_per_mtok: float, item_id: int | None, ts: float) -> None:
        await self._write("INSERT OR REPLACE INTO price_updates VALUES (?, ?, ?, ?, ?, ?)",
                          (provider, model, input_per_mtok, output_per_mtok, item_id, ts))

    async def usage_since(self, since_ts: float) -> list[dict[str, Any]]:
        """Real traffic per provider and model since since_ts (canaries and tests apart)."""
        return await self._dicts(
            "SELECT provider, model, COUNT(*) AS calls, SUM(input_tokens) AS input_tokens, "
            "SUM(output_tokens) AS output_tokens, COALESCE(SUM(usd), 0) AS usd, "
            "MIN(ts) AS first_ts FROM calls WHERE ts >= ? AND purpose NOT IN "
            "('canary', 'sandbox') GROUP BY provider, model", (since_ts,))

    async def _dicts(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        cursor = await self._db.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def schema_version(self) -> int:
        cursor = await self._db.execute("PRAGMA user_version")
        (version,) = await cursor.fetchone()  # type: ignore[misc]
        return int(version)


async def _migrate(db: aiosqlite.Connection) -> None:
    """Apply the migrations this file has not seen yet, each in its own transaction.

    Several processes may open a fresh file at once: each migration re-reads the version
    under the write lock (BEGIN IMMEDIATE), so the first applies it and the others skip it.
    """
    if await _user_version(db) == len(MIGRATIONS):
        return  # the usual open: no write lock taken
    while True:
        await _when_free(lambda: db.execute("BEGIN IMMEDIATE"))
        try:
            version = await _user_version(db)
            if version > len(MIGRATIONS):
                raise OperatorError(
                    f"the database was written by a newer aetherflow (schema {version}, "
                    f"this one knows {len(MIGRATIONS)})",
                    fix="upgrade aetherflow, or point --home at another directory",
                )
            if version == len(MIGRATIONS):
                await db.execute("COMMIT")
                return
            number = version + 1
            for statement in (s.strip() for s in MIGRATIONS[number - 1].split(";")):
                if statement:
                    await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {number}")
            await db.execute("COMMIT")
        except BaseException:
            await _rollback(db)
            raise


class NonFiniteValue(ValueError):
    """A call row whose cost or energy is inf or NaN: a bug upstream, never stored."""


def _check_finite(r: CallRecord) -> CallRecord:
    values = {"usd": r.cost.usd}
    if r.energy is not None:
        values |= {"wh": r.energy.wh, "gco2e": r.energy.gco2e}
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise NonFiniteValue(f"refusing to store a call of {r.provider}/{r.model} with "
                                 f"{name} = {value}: costs and energy must be finite numbers")
    return r


async def _user_version(db: aiosqlite.Connection) -> int:
    cursor = await db.execute("PRAGMA user_version")
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


def _totals(rows: Sequence[CallRecord]) -> dict[tuple[str, str], list[float]]:
    """What rows add to daily_totals, per (day, provider)."""
    totals: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        acc = totals.setdefault((row.day, row.provider), [0] * 9)
        energy = row.energy
        acc[0] += 1
        acc[1] += 0 if row.ok else 1
        acc[2] += row.cost.usd or 0.0
        acc[3] += 0 if row.cost.priced else 1
        acc[4] += row.input_tokens
        acc[5] += row.output_tokens
        acc[6] += (energy.wh or 0.0) if energy else 0.0
        acc[7] += (energy.gco2e or 0.0) if energy else 0.0
        acc[8] += (energy.wh or 0.0) if energy and energy.measured else 0.0
    return totals


def _call_params(r: CallRecord) -> tuple[Any, ...]:
    energy = r.energy
    return (
        r.ts, r.day, r.provider, r.model, r.purpose, int(r.ok), r.input_tokens,
        r.cached_input_tokens, r.output_tokens, int(r.usage_estimated), r.ttft_s, r.duration_s,
        r.tokens_per_s, r.cost.usd, r.cost.method,
        energy.wh if energy else None, energy.gco2e if energy else None,
        energy.method if energy else "unknown",
        r.error_kind, r.error, r.run_id, r.step_id,
    )


def _call_from_row(row: Sequence[Any]) -> CallRecord:
    (id_, ts, day, provider, model, purpose, ok, tin, tcached, tout, estimated, ttft, duration,
     tps, usd, price_method, wh, gco2e, energy_method, error_kind, error, run_id, step_id) = row
    return CallRecord(
        ts=ts, day=day, provider=provider, model=model, purpose=purpose, ok=bool(ok),
        input_tokens=tin, cached_input_tokens=tcached, output_tokens=tout,
        usage_estimated=bool(estimated), ttft_s=ttft, duration_s=duration, tokens_per_s=tps,
        cost=Cost(usd, price_method), energy=Energy(wh, gco2e, energy_method),
        error_kind=error_kind, error=error, run_id=run_id, step_id=step_id, id=id_,
    )
