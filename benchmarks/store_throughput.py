"""Store write throughput and today's-totals query time, each beside a plain-SQLite reference.

1. 200,000 call rows through Store.record_call() (the batching writer, WAL, synchronous=FULL),
   awaited in chunks of 5,000, against the same rows written with sqlite3 executemany, one
   transaction per 5,000 rows, same schema and pragmas.
2. The table grown to 1,000,000 rows (about 30 days, 40% of them today, 8 providers), then
   Store.totals_for_day(today) against the naive GROUP BY over the calls of the day.

Run from the repo root: python benchmarks/store_throughput.py
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiosqlite

from aetherflow_tui.engine import ledger
from aetherflow_tui.engine.records import CallRecord
from aetherflow_tui.engine.store import Store

TARGET_ROWS_S = 20_000
TARGET_TOTALS_MS = 5.0
ROWS = 200_000
TOTAL_ROWS = 1_000_000
CHUNK = 5_000
DAYS = 30
TODAY_SHARE = 0.40
PROVIDERS = ("groq", "mistral", "deepseek", "gemini", "openai", "openrouter", "cerebras",
             "local")
COST = ledger.Cost(0.001, "config")
ENERGY = ledger.Energy(0.01, 0.004, "ecologits")

COLUMNS = ("ts, day, provider, model, purpose, ok, input_tokens, cached_input_tokens, "
           "output_tokens, usage_estimated, ttft_s, duration_s, tokens_per_s, usd, "
           "price_method, wh, gco2e, energy_method, error_kind, error, run_id, step_id")
INSERT = f"INSERT INTO calls ({COLUMNS}) VALUES ({', '.join('?' * 22)})"
NAIVE = ("SELECT provider, COUNT(*), SUM(usd), SUM(wh) FROM calls WHERE day = ? "
         "GROUP BY provider")
# daily_totals recomputed from the calls: what the store must have kept up to date.
RECOMPUTED = """
SELECT day, provider, COUNT(*), SUM(1 - ok), COALESCE(SUM(usd), 0), SUM(usd IS NULL),
       SUM(input_tokens), SUM(output_tokens), COALESCE(SUM(wh), 0), COALESCE(SUM(gco2e), 0),
       COALESCE(SUM(CASE WHEN energy_method LIKE 'measured%' THEN wh END), 0)
FROM calls GROUP BY day, provider ORDER BY day, provider
"""


def make_records(n: int) -> list[CallRecord]:
    rng = random.Random(42)
    today = date.today()
    noon = {back: datetime.combine(today - timedelta(days=back), datetime.min.time())
            .timestamp() + 12 * 3600 for back in range(DAYS)}
    records = []
    for i in range(n):
        back = 0 if rng.random() < TODAY_SHARE else rng.randrange(1, DAYS)
        ok = rng.random() > 0.02
        records.append(CallRecord(
            ts=noon[back] + rng.uniform(-11 * 3600, 11 * 3600),
            day=(today - timedelta(days=back)).isoformat(),
            provider=PROVIDERS[i % len(PROVIDERS)], model="llama-3.3-70b-versatile",
            purpose="step", ok=ok, input_tokens=rng.randrange(50, 4000),
            output_tokens=rng.randrange(1, 800) if ok else 0, ttft_s=0.2,
            duration_s=rng.uniform(0.3, 8.0), tokens_per_s=120.0, cost=COST, energy=ENERGY,
            error_kind=None if ok else "rate_limited", run_id=f"run-{i // 1000}",
            step_id=f"step-{i % 1000}",
        ))
    return records


def params(r: CallRecord) -> tuple[object, ...]:
    energy = r.energy or ENERGY
    return (r.ts, r.day, r.provider, r.model, r.purpose, int(r.ok), r.input_tokens,
            r.cached_input_tokens, r.output_tokens, int(r.usage_estimated), r.ttft_s,
            r.duration_s, r.tokens_per_s, r.cost.usd, r.cost.method, energy.wh, energy.gco2e,
            energy.method, r.error_kind, r.error, r.run_id, r.step_id)


def ms_pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


async def write_through_store(path: Path, records: list[CallRecord]) -> tuple[float, float]:
    """Rows/s overall (final flush included) and the slowest chunk's rows/s."""
    store = await Store.open(path)
    try:
        slowest = float("inf")
        t0 = time.perf_counter()
        for start in range(0, len(records), CHUNK):
            c0 = time.perf_counter()
            chunk = [store.record_call(r) for r in records[start:start + CHUNK]]
            await asyncio.gather(*chunk)
            slowest = min(slowest, len(chunk) / (time.perf_counter() - c0))
        await store.flush()
        elapsed = time.perf_counter() - t0
    finally:
        await store.close()
    return len(records) / elapsed, slowest


async def write_plain(path: Path, records: list[CallRecord]) -> float:
    await (await Store.open(path)).close()  # same schema
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        t0 = time.perf_counter()
        for start in range(0, len(records), CHUNK):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(INSERT, [params(r) for r in records[start:start + CHUNK]])
            db.execute("COMMIT")
        elapsed = time.perf_counter() - t0
    finally:
        db.close()
    return len(records) / elapsed


def totals_consistent(db: sqlite3.Connection) -> bool:
    kept = db.execute("SELECT * FROM daily_totals ORDER BY day, provider").fetchall()
    recomputed = db.execute(RECOMPUTED).fetchall()
    if len(kept) != len(recomputed):
        return False
    for a, b in zip(kept, recomputed, strict=True):
        for x, y in zip(a, b, strict=True):
            same = abs(x - y) <= 1e-6 * max(1.0, abs(y)) if isinstance(y, float) else x == y
            if not same:
                return False
    return True


def grow(path: Path, target: int) -> tuple[int, bool, float]:
    """Copy the stored rows until the table holds target rows; rebuild daily_totals.

    Returns (rows, whether the store's own totals matched the calls before growing, seconds).
    """
    t0 = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        consistent = totals_consistent(db)
        (rows,) = db.execute("SELECT COUNT(*) FROM calls").fetchone()
        db.execute("BEGIN IMMEDIATE")
        while rows < target:
            take = min(rows, target - rows)
            db.execute(f"INSERT INTO calls ({COLUMNS}) SELECT {COLUMNS} FROM calls "
                       "ORDER BY id LIMIT ?", (take,))
            rows += take
        db.execute("DELETE FROM daily_totals")
        db.execute(f"INSERT INTO daily_totals {RECOMPUTED}")
        db.execute("COMMIT")
    finally:
        db.close()
    return rows, consistent, time.perf_counter() - t0


async def query_times(path: Path, day: str, runs: int, naive_runs: int
                      ) -> tuple[list[int], list[int], bool]:
    store = await Store.open(path)
    naive_db = await aiosqlite.connect(path)
    try:
        totals = await store.totals_for_day(day)
        cursor = await naive_db.execute(NAIVE, (day,))
        naive = {row[0]: row[1:] for row in await cursor.fetchall()}
        agree = len(totals) == len(naive) and all(
            naive[t.provider][0] == t.calls and abs(naive[t.provider][1] - t.usd) < 1e-6
            and abs(naive[t.provider][2] - t.wh) < 1e-6 for t in totals)
        fast: list[int] = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            await store.totals_for_day(day)
            fast.append(time.perf_counter_ns() - t0)
        slow: list[int] = []
        for _ in range(naive_runs):
            t0 = time.perf_counter_ns()
            cursor = await naive_db.execute(NAIVE, (day,))
            await cursor.fetchall()
            slow.append(time.perf_counter_ns() - t0)
    finally:
        await naive_db.close()
        await store.close()
    return fast, slow, agree


async def run(tmp: Path) -> bool:
    records = make_records(ROWS)
    today = date.today().isoformat()
    store_rate, slowest = await write_through_store(tmp / "store.db", records)
    plain_rate = await write_plain(tmp / "plain.db", records)
    write_ok = store_rate >= TARGET_ROWS_S
    print(f"write {ROWS:,} rows: Store.record_call {store_rate:,.0f} rows/s "
          f"(slowest {CHUNK:,}-row chunk {slowest:,.0f} rows/s), plain sqlite3 executemany "
          f"{plain_rate:,.0f} rows/s; ratio store/plain {store_rate / plain_rate:.2f}")
    del records

    rows, consistent, seconds = grow(tmp / "store.db", TOTAL_ROWS)
    print(f"daily_totals kept by the store match the calls table: "
          f"{'yes' if consistent else 'NO'}")
    print(f"grew the table to {rows:,} rows in {seconds:.1f} s (SQL copy, daily_totals rebuilt)")
    with sqlite3.connect(tmp / "store.db") as db:
        (today_rows,) = db.execute("SELECT COUNT(*) FROM calls WHERE day = ?",
                                   (today,)).fetchone()
    fast, slow, agree = await query_times(tmp / "store.db", today, 200, 10)
    query_ok = ms_pct(fast, .5) <= TARGET_TOTALS_MS
    print(f"today's totals at {rows:,} rows ({today_rows:,} today): Store.totals_for_day "
          f"p50 {ms_pct(fast, .5):.3f} ms, p99 {ms_pct(fast, .99):.3f} ms (200 runs); naive "
          f"GROUP BY over calls p50 {ms_pct(slow, .5):.1f} ms (10 runs); ratio naive/store "
          f"{ms_pct(slow, .5) / ms_pct(fast, .5):,.0f}x; results agree: "
          f"{'yes' if agree else 'NO'}")
    print(f"store throughput: {store_rate:,.0f} rows/s (target >= {TARGET_ROWS_S:,}) "
          f"{'PASS' if write_ok else 'FAIL'}")
    print(f"today's totals query: p50 {ms_pct(fast, .5):.3f} ms at {rows:,} rows "
          f"(target <= {TARGET_TOTALS_MS:.1f}) {'PASS' if query_ok else 'FAIL'}")
    return write_ok and query_ok and consistent and agree


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="af-bench-") as tmp:
        ok = asyncio.run(run(Path(tmp)))
    print("PASS" if ok else "FAIL", f"(targets: >= {TARGET_ROWS_S:,} call rows/s; today's "
          f"totals <= {TARGET_TOTALS_MS:.0f} ms at {TOTAL_ROWS:,} rows)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
