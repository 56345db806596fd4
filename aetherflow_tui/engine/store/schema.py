"""The schema: one migration per version, applied in order, each in its own transaction."""

from __future__ import annotations

import aiosqlite

from ..errors import OperatorError
from .base import _rollback, _when_free

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


async def _user_version(db: aiosqlite.Connection) -> int:
    cursor = await db.execute("PRAGMA user_version")
    (version,) = await cursor.fetchone()  # type: ignore[misc]
    return int(version)
