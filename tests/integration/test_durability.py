"""Money and durability under faults: a disk that stops taking writes mid-run, an output
folder that cannot be written, processes racing on a fresh database.

The faults are real and work as root (these tests run as root, and root ignores chmod):

- "The disk cannot be written": the running `aetherflow run` gets RLIMIT_FSIZE = 1 byte
  (`prlimit`, from the test, mid-run). From then on every write the process makes to a
  regular file past its first byte fails with EFBIG, exactly as on a full disk: SQLite's
  commits fail with "disk I/O error", reads still work. Raising the limit again is the
  operator freeing space.
- "The output folder cannot be written": the folder is replaced by a regular file mid-run
  (or the path given to -o runs through a regular file), so writing in it fails with
  ENOTDIR whoever the user is.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from aetherflow_tui.engine.errors import StoreUnavailable
from aetherflow_tui.engine.ledger import Cost, Energy
from aetherflow_tui.engine.records import CallRecord
from aetherflow_tui.engine.store import BUSY_TIMEOUT_MS, GIVE_UP_S, MIGRATIONS, Store
from tests.conftest import REPO_ROOT, aetherflow_cmd
from tests.support.plans import bouquet, chat_requests, provider, step, write_plan
from tests.support.scripted_server import ScriptedServer

CONCURRENCY = 3
STEPS = 45


class Run:
    """`aetherflow run` in a subprocess, its stderr read line by line as it comes."""

    def __init__(self, env: dict[str, str], *args: str | Path) -> None:
        self.proc = subprocess.Popen([*aetherflow_cmd(), "run", *map(str, args)], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        self.held = threading.Event()  # the store said it holds dispatch
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if "cannot be written" in line:
                self.held.set()

    def disk_full(self, full: bool) -> None:
        # Only the soft limit moves: raising a hard limit back needs CAP_SYS_RESOURCE.
        soft = 1 if full else resource.RLIM_INFINITY
        resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, (soft, resource.RLIM_INFINITY))

    def finish(self, timeout: float) -> tuple[int, str, str]:
        # Not communicate(): it would read stderr too, from under the reader thread.
        assert self.proc.stdout is not None
        stdout: list[str] = []
        reader = threading.Thread(target=lambda: stdout.append(self.proc.stdout.read()),
                                  daemon=True)
        reader.start()
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.proc.kill()
            self.proc.wait()
        reader.join(timeout=5)
        self._reader.join(timeout=5)
        return self.proc.returncode, "".join(stdout), "".join(self.stderr)


def _setup(cli_env: dict[str, str], tmp_path: Path, url: str, steps: int, delay: float
           ) -> Path:
    config = tmp_path / "bouquet.toml"
    config.write_text(bouquet(provider("alpha", url), max_concurrency=CONCURRENCY))
    cli_env["AETHERFLOW_CONFIG"] = str(config)
    return write_plan(tmp_path / "plan.json",
                      *(step(f"s{i:02d}", f"@@slow:{delay}@@ step {i}") for i in range(steps)))


def _db(cli_env: dict[str, str]) -> sqlite3.Connection:
    return sqlite3.connect(Path(cli_env["AETHERFLOW_HOME"]) / "aetherflow.db")


def _billed(server: ScriptedServer) -> int:
    return len(chat_requests(server.requests))


def _assert_one_clear_error(stderr: str, needle: str) -> None:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert sum(needle in line for line in stderr.splitlines()) == 1, stderr


def test_a_disk_that_stops_taking_writes_holds_dispatch_and_loses_no_call(
        cli_env, tmp_path, server):
    plan = _setup(cli_env, tmp_path, server.url, STEPS, 0.3)
    run = Run(cli_env, plan, "-o", tmp_path / "out")
    try:
        assert server.wait_for(lambda s: _billed(s) >= 2 * CONCURRENCY, timeout=60)
        run.disk_full(True)
        at_fault = _billed(server)
        assert run.held.wait(timeout=30), "".join(run.stderr)
        assert server.wait_for(lambda s: s.in_flight == 0, timeout=30)
        run.disk_full(False)  # the operator frees space: what was held gets written
        code, _, stderr = run.finish(timeout=60)
    finally:
        run.proc.kill()
    billed = _billed(server)
    with _db(cli_env) as db:
        recorded = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        (status, detail), = db.execute("SELECT status, detail FROM runs").fetchall()
    # Every call paid for is in the ledger; what was in flight when the disk filled (and
    # what left before the first failed commit told the run) is all that went out after.
    assert billed == recorded
    assert billed <= at_fault + 2 * CONCURRENCY < STEPS
    assert code == 1 and status == "failed"
    assert "cannot be written (disk I/O error)" in detail
    _assert_one_clear_error(stderr, "stopped at step")
    assert "resume with: aetherflow run" in stderr


def test_a_disk_that_never_comes_back_ends_the_run_and_counts_what_it_lost(
        cli_env, tmp_path, server):
    plan = _setup(cli_env, tmp_path, server.url, STEPS, 0.3)
    run = Run(cli_env, plan, "-o", tmp_path / "out")
    try:
        assert server.wait_for(lambda s: _billed(s) >= 2 * CONCURRENCY, timeout=60)
        run.disk_full(True)
        at_fault = _billed(server)
        code, _, stderr = run.finish(timeout=GIVE_UP_S + 60)
    finally:
        run.proc.kill()
    billed = _billed(server)
    with _db(cli_env) as db:
        recorded = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    assert billed <= at_fault + 2 * CONCURRENCY < STEPS
    assert code == 1
    _assert_one_clear_error(stderr, "could not be recorded")
    lost = next(line for line in stderr.splitlines() if "could not be recorded" in line)
    assert f"; {billed - recorded} calls made could not be recorded" in lost
    assert billed > recorded  # the calls in flight at the fault really were lost


def test_an_output_folder_that_cannot_be_written_fails_the_steps_and_the_run(
        cli_env, tmp_path, server):
    steps = 20
    plan = _setup(cli_env, tmp_path, server.url, steps, 0.2)
    out = tmp_path / "out"
    run = Run(cli_env, plan, "-o", out, "--json")
    try:
        assert server.wait_for(lambda s: _billed(s) >= 2 * CONCURRENCY, timeout=60)
        shutil.rmtree(out)
        out.write_text("a file where the output folder was\n")
        code, stdout, stderr = run.finish(timeout=60)
    finally:
        run.proc.kill()
    summary: dict[str, Any] = json.loads(stdout)
    assert code == 1 and summary["status"] == "failed"
    failed = [s for s in summary["steps"] if s["status"] == "failed"]
    assert failed and all(s["error"].startswith(f"output not written: {out}/s") for s in failed)
    assert all(s["output_file"] is None for s in failed)
    assert _billed(server) < steps  # the run stopped instead of paying for lost outputs
    _assert_one_clear_error(stderr, f"the output folder {out} cannot be written")


def test_an_output_path_through_a_file_is_refused_before_any_call(cli_env, tmp_path, server):
    plan = _setup(cli_env, tmp_path, server.url, 3, 0)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file\n")
    run = Run(cli_env, plan, "-o", blocker / "out")
    code, stdout, stderr = run.finish(timeout=60)
    assert code == 1, stderr
    assert _billed(server) == 0
    _assert_one_clear_error(stderr, f"the output folder {blocker / 'out'} cannot be written")
    assert stdout.splitlines()[-1].endswith("· failed")


def test_a_data_dir_that_cannot_be_created_is_one_line_not_a_traceback(cli_env, tmp_path):
    home = tmp_path / "home"
    home.write_text("a file where the data directory should be\n")
    cli_env["AETHERFLOW_HOME"] = str(home / "sub")
    done = subprocess.run([*aetherflow_cmd(), "runs"], capture_output=True, text=True,
                          env=cli_env, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(f"aetherflow: error: the database {home}/sub/aetherflow.db "
                                  "cannot be written (Not a directory)")
    _assert_one_clear_error(done.stderr, "cannot be written")


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_opening_a_fresh_data_dir_together_migrate_it_once(tmp_path: Path,
                                                                     processes: int):
    """Several processes started together (a cockpit, runs) must not race on the schema.

    Each helper imports everything, says READY, then blocks on stdin; one line to all of
    them releases them at once, so they open the fresh file within a millisecond or so.
    """
    for attempt in range(5):
        path = tmp_path / f"home{attempt}" / "aetherflow.db"
        procs = [subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "tests" / "support" / "store_opener.py"),
             str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        ) for _ in range(processes)]
        try:
            for proc in procs:
                assert proc.stdout is not None and proc.stdout.readline() == "READY\n"
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            results = [proc.communicate(timeout=60) for proc in procs]
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        for proc, (out, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, f"attempt {attempt}: {err}"
            assert out.strip() == str(len(MIGRATIONS))
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)


async def test_a_lock_held_past_the_busy_timeout_holds_dispatch_until_it_is_released(
        tmp_path: Path):
    """Another process holding the write lock longer than the busy timeout: the same
    failed commit as a full disk, and one that ends by itself."""
    path = tmp_path / "aetherflow.db"
    store = await Store.open(path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        first = store.record_call(_call())

        async def failing() -> None:  # the writer's first attempt waits out the timeout
            while store.failure is None:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(failing(), BUSY_TIMEOUT_MS / 1000 + 10)
        assert "database is locked" in store.failure
        with pytest.raises(StoreUnavailable, match="cannot be written"):
            store.check_writable()
        second = store.record_call(_call())  # queued while failing: kept, not dropped
        other.execute("COMMIT")
        rows = await asyncio.wait_for(asyncio.gather(first, second), GIVE_UP_S)
        assert [row.id for row in rows] == [1, 2]
        assert store.failure is None and store.unrecorded_calls == 0
        store.check_writable()
    finally:
        other.close()
        await store.close()


def _call() -> CallRecord:
    return CallRecord(ts=1_700_000_000.0, day="2026-11-21", provider="p", model="m",
                      purpose="test", ok=True, input_tokens=1, output_tokens=1, duration_s=0.1,
                      cost=Cost(0.001, "config"), energy=Energy(0.01, 0.002, "ecologits"))
