"""The SQLite store on real files: migrations, WAL, batched writes, totals, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from aetherflow_tui.engine.errors import OperatorError
from aetherflow_tui.engine.ledger import Cost, Energy
from aetherflow_tui.engine.records import CallRecord
from aetherflow_tui.engine.store import (
    MIGRATIONS,
    ApprovalRow,
    CanarySpend,
    KeyCheckRow,
    MinuteSpend,
    Store,
)
from tests.conftest import REPO_ROOT


def _record(i: int, *, day: str = "2026-11-21", provider: str = "groq", ok: bool = True,
            usd: float | None = 0.001, energy: Energy | None = None) -> CallRecord:
    return CallRecord(
        ts=1_700_000_000.0 + i, day=day, provider=provider, model="m", purpose="test", ok=ok,
        input_tokens=10 + i, cached_input_tokens=i % 3, output_tokens=5, duration_s=0.2,
        cost=Cost(usd, "config" if usd is not None else "unpriced"),
        energy=energy or Energy(0.01, 0.003, "ecologits"),
    )


async def test_migrations_run_once_and_record_the_version(tmp_path: Path):
    path = tmp_path / "a.db"
    store = await Store.open(path)
    assert await store.schema_version() == len(MIGRATIONS)
    await store.close()
    store = await Store.open(path)  # second open: nothing to migrate, nothing breaks
    assert await store.schema_version() == len(MIGRATIONS)
    await store.close()
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert {"calls", "runs", "steps", "health_samples", "events", "decisions",
            "approvals", "daily_totals"} <= tables


async def test_a_database_from_a_newer_version_is_refused(tmp_path: Path):
    path = tmp_path / "a.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(OperatorError, match="newer aetherflow"):
        await Store.open(path)


async def test_rows_come_back_as_written(tmp_path: Path):
    store = await Store.open(tmp_path / "a.db")
    written = await store.record_call(_record(1, usd=None))
    (back,) = await store.recent_calls(1)
    assert back == written
    assert back.cost.usd is None and back.cost.method == "unpriced"
    await store.close()


async def test_reads_come_back_as_named_rows(tmp_path: Path):
    store = await Store.open(tmp_path / "a.db")
    first = _record(1)  # minute 28_333_333
    await asyncio.gather(store.record_call(first), store.record_call(
        replace(_record(2, provider="mistral"), purpose="canary")))
    assert await store.minute_series(0) == [MinuteSpend(28_333_333, 0.002, 0.02, 0.006)]
    assert await store.canary_spend_by_provider(first.day) == {
        "mistral": CanarySpend(calls=1, usd=0.001)}
    await store.add_key_check(5.0, "groq", True, "active", "billed as priced", 0.4, 1e-6, None)
    (check,) = (await store.latest_key_checks()).values()
    assert check == KeyCheckRow("groq", 5.0, True, "active", "billed as priced", 0.4, 1e-6, None)
    approval_id = await store.add_approval(6.0, "activate_key", "groq", "ok", "activate", {})
    assert await store.decide_approval(approval_id, "approved", 7.0)
    assert await store.approvals(None) == [ApprovalRow(
        approval_id, 6.0, "activate_key", "groq", "ok", "activate", "{}", "approved", 7.0)]
    await store.close()


async def test_daily_totals_match_the_rows(tmp_path: Path):
    store = await Store.open(tmp_path / "a.db", max_batch=7)
    records = [
        _record(i, day=("2026-11-20", "2026-11-21")[i % 2], provider=("a", "b", "c")[i % 3],
                ok=i % 5 != 0, usd=None if i % 11 == 0 else 0.001 * i,
                energy=Energy(0.02 * i, 0.01 * i, "measured:rapl" if i % 4 == 0 else "ecologits"))
        for i in range(300)
    ]
    await asyncio.gather(*(store.record_call(r) for r in records))
    totals = {(t.day, t.provider): t for t in await store.totals_for_day("2026-11-21")}
    assert {day for day, _ in totals} == {"2026-11-21"}
    for (day, provider), total in totals.items():
        mine = [r for r in records if r.day == day and r.provider == provider]
        assert total.calls == len(mine)
        assert total.failures == sum(not r.ok for r in mine)
        assert total.unpriced_calls == sum(r.cost.usd is None for r in mine)
        assert total.usd == pytest.approx(sum(r.cost.usd or 0 for r in mine))
        assert total.wh == pytest.approx(sum(r.energy.wh for r in mine))
        assert total.measured_wh == pytest.approx(
            sum(r.energy.wh for r in mine if r.energy.measured))
        assert total.input_tokens == sum(r.input_tokens for r in mine)
    await store.close()


async def test_energy_is_filled_in_by_the_writer_before_the_insert(tmp_path: Path):
    store = await Store.open(tmp_path / "a.db")
    store.prepare = lambda r: r.with_energy(Energy(1.5, 0.5, "estimate:size"))
    row = await store.record_call(_record(1).with_energy(None))  # type: ignore[arg-type]
    assert row.energy == Energy(1.5, 0.5, "estimate:size")
    (back,) = await store.recent_calls(1)
    assert back.energy == row.energy
    await store.close()


async def test_close_drains_the_queue(tmp_path: Path):
    path = tmp_path / "a.db"
    store = await Store.open(path)
    futures = [store.record_call(_record(i)) for i in range(500)]
    await store.close()
    assert all(f.done() and f.result().id for f in futures)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone() == (500,)


def test_kill_9_loses_no_committed_row(tmp_path: Path):
    path = tmp_path / "a.db"
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tests" / "support" / "store_writer.py"), str(path)],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    committed: list[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            committed.append(int(line))
            if len(committed) >= 3000:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert len(committed) >= 3000
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        present = {r[0] for r in db.execute("SELECT id FROM calls")}
        (calls_in_totals,) = db.execute("SELECT SUM(calls) FROM daily_totals").fetchone()
    missing = set(committed) - present
    assert not missing, f"{len(missing)} committed rows lost"
    # The rollup is written in the same transaction as the rows: never out of step.
    assert calls_in_totals == len(present)


@pytest.mark.parametrize(("usd", "energy", "what"), [
    (float("nan"), None, "usd = nan"),
    (float("inf"), None, "usd = inf"),
    (0.001, Energy(float("nan"), 0.003, "ecologits"), "wh = nan"),
])
async def test_a_non_finite_cost_or_energy_is_refused_before_sqlite(tmp_path: Path, usd,
                                                                     energy, what):
    from aetherflow_tui.engine.store import NonFiniteValue

    store = await Store.open(tmp_path / "a.db")
    try:
        with pytest.raises(NonFiniteValue, match=f"groq/m with {what}: .* finite"):
            store.record_call(_record(1, usd=usd, energy=energy))
        # The store goes on: the next finite row is written, the refused one never was.
        written = await store.record_call(_record(2))
        assert [c.id for c in await store.recent_calls(10)] == [written.id]
        (totals,) = await store.totals_for_day("2026-11-21")
        assert (totals.calls, totals.usd) == (1, pytest.approx(0.001))
    finally:
        await store.close()


async def test_a_non_finite_energy_estimate_fails_its_batch_before_sqlite(tmp_path: Path):
    from aetherflow_tui.engine.store import NonFiniteValue

    store = await Store.open(tmp_path / "a.db")
    try:
        store.prepare = lambda r: r.with_energy(Energy(float("nan"), 0.5, "estimate:size"))
        record = replace(_record(1), energy=None)
        with pytest.raises(NonFiniteValue, match="wh = nan"):
            await store.record_call(record)
        store.prepare = lambda r: r.with_energy(Energy(1.5, 0.5, "estimate:size"))
        written = await store.record_call(record)
        assert [c.id for c in await store.recent_calls(10)] == [written.id]
    finally:
        await store.close()
