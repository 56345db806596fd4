"""`aetherflow plan|run|runs|report` as a person or a script runs them: the real command in a
subprocess against scripted providers on 127.0.0.1, with its data in a tmp dir."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import aetherflow_cmd
from tests.support import loopback
from tests.support.plans import bouquet, calls_per_step, provider, step, write_plan
from tests.support.scripted_server import ScriptedServer, spawn_server

STEP_FIELDS = {"id", "type", "status", "provider", "model", "attempts", "input_tokens",
               "output_tokens", "usd", "ttft_s", "duration_s", "error", "flag", "route",
               "output_file"}


def run(env: dict[str, str], *args: str | Path, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*aetherflow_cmd(), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)


def as_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """stdout must be exactly one JSON document."""
    return json.loads(done.stdout)


def run_id_of(stderr: str) -> str:
    match = re.search(r"^run (\S+) (?:started|resuming): ", stderr, re.MULTILINE)
    assert match, stderr
    return match.group(1)


def db(env: dict[str, str]) -> sqlite3.Connection:
    return sqlite3.connect(Path(env["AETHERFLOW_HOME"]) / "aetherflow.db")


# -- plan check and schema -----------------------------------------------------------------


def test_plan_check_accepts_a_valid_plan(cli_env, tmp_path):
    plan = write_plan(tmp_path / "plan.json", step("a", "x"), step("b", "y", "a"))
    done = run(cli_env, "plan", "check", plan)
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout and "2 steps, 1 dependencies" in done.stdout
    data = as_json(run(cli_env, "plan", "check", plan, "--json"))
    assert data["valid"] is True and data["steps"] == 2 and data["dependencies"] == 1


def _plan_text(*steps: str) -> str:
    return '{\n  "task_id": "t",\n  "steps": [\n' + ",\n".join(steps) + "\n  ]\n}\n"


@pytest.mark.parametrize(("steps", "line", "message"), [
    (('    {"id": "a", "type": "analysis", "prompt": "x", "depends_on": ["c"]}',
      '    {"id": "b", "type": "analysis", "prompt": "y", "depends_on": ["a"]}',
      '    {"id": "c", "type": "analysis", "prompt": "z", "depends_on": ["b"]}'),
     4, 'steps[0] "a".depends_on: dependency cycle: a → c → b → a'),
    (('    {"id": "a", "type": "analysis", "prompt": "x"}',
      '    {"id": "b", "type": "analysis", "prompt": "y"}',
      '    {"id": "a", "type": "review", "prompt": "z"}'),
     6, "steps[2] \"a\".id: duplicate step id 'a' (first used by steps[0])"),
])
def test_plan_check_rejects_with_file_and_line(cli_env, tmp_path, steps, line, message):
    plan = tmp_path / "plan.json"
    plan.write_text(_plan_text(*steps))
    done = run(cli_env, "plan", "check", plan)
    assert done.returncode == 2
    error = done.stderr.strip()
    assert "\n" not in error and "Traceback" not in error
    assert error.startswith(f"aetherflow: error: {plan}:{line}: {message}"), error


def test_plan_schema_prints_the_json_schema(cli_env):
    done = run(cli_env, "plan", "schema")
    assert done.returncode == 0, done.stderr
    schema = as_json(done)
    assert schema["title"] == "Aetherflow plan"
    assert set(schema["required"]) >= {"task_id", "steps"}
    assert "depends_on" in schema["$defs"]["StepSpec"]["properties"]


# -- run, runs, report ---------------------------------------------------------------------


def test_run_json_then_runs_then_report(cli_env, configure, server, tmp_path):
    configure(bouquet(provider("alpha", server.url)))
    plan = write_plan(tmp_path / "plan.json",
                      step("a", "@@say@@ SAY: first answer"),
                      step("b", "@@slow:0.2@@ second", "a", type="code_generation"),
                      step("c", "@@slow:0.2@@ third", type="code_generation"))
    out = tmp_path / "out"
    done = run(cli_env, "run", plan, "--json", "-o", out)
    assert done.returncode == 0, done.stderr
    summary = as_json(done)
    run_id = run_id_of(done.stderr)
    assert summary["run_id"] == run_id and summary["status"] == "done"
    assert summary["response_mode"] == {"mode": "bouquet", "pinned": False,
                                        "reason": "no local model declared: APIs only"}
    steps = {s["id"]: s for s in summary["steps"]}
    assert list(steps) == ["a", "b", "c"]
    for item in steps.values():
        assert set(item) >= STEP_FIELDS
        assert item["status"] == "done" and (item["provider"], item["model"]) == ("alpha", "echo")
        assert item["input_tokens"] > 0 and item["output_tokens"] > 0 and item["usd"] > 0
        assert 0 < item["ttft_s"] <= item["duration_s"]
        assert Path(item["output_file"]).is_file()
    assert steps["b"]["type"] == "code_generation" and steps["b"]["duration_s"] >= 0.2
    assert steps["a"]["output_file"] == str(out / "a.md")
    assert (out / "a.md").read_text() == "first answer"
    totals = summary["totals"]
    assert (totals["steps"], totals["done"], totals["failed"], totals["pending"]) == (3, 3, 0, 0)
    assert totals["usd"] == pytest.approx(sum(s["usd"] for s in steps.values()))
    assert totals["output_tokens"] == sum(s["output_tokens"] for s in steps.values())
    assert totals["wall_s"] > 0 and totals["sequential_s"] >= 0.4
    assert json.loads((out / "run.json").read_text())["run_id"] == run_id

    listed = run(cli_env, "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = as_json(listed)["runs"]
    assert (row["id"], row["status"], row["task_id"]) == (run_id, "done", "test-task")
    assert row["plan_path"] == str(plan.resolve())

    report = tmp_path / "report.md"
    made = run(cli_env, "report", run_id, "-o", report)
    assert made.returncode == 0, made.stderr
    text = report.read_text()
    assert text.startswith(f"# Run {run_id} — test-task")
    assert "## Per provider" in text and "## Per step type" in text
    assert re.search(r"^\| alpha \| 3 \| 100% \|", text, re.MULTILINE), text
    assert re.search(r"^\| code_generation \| 2/2 \| 2 \| 100% \|", text, re.MULTILINE), text
    assert "| wall time | sum of call durations | parallelism |" in text
    assert re.search(r"^\| [\d.]+ s \| [\d.]+ s \| [\d.]+× \|$", text, re.MULTILINE), text

    unknown = run(cli_env, "report", "no-such-run")
    assert unknown.returncode == 2
    assert "no run 'no-such-run'" in unknown.stderr and "aetherflow runs" in unknown.stderr


def test_a_failed_step_is_exit_1_and_its_dependents_are_skipped(cli_env, configure, server,
                                                                tmp_path):
    configure(bouquet(provider("alpha", server.url)))
    plan = write_plan(tmp_path / "plan.json", step("bad", "@@status:400@@ x"),
                      step("after", "@@ok@@ y", "bad"), step("fine", "@@ok@@ z"))
    done = run(cli_env, "run", plan, "--json")
    assert done.returncode == 1, done.stderr
    summary = as_json(done)
    assert summary["status"] == "failed"
    assert {s["id"]: s["status"] for s in summary["steps"]} == {
        "bad": "failed", "after": "skipped", "fine": "done"}
    assert calls_per_step(server.requests) == {"bad": 1, "fine": 1}


def test_the_daily_budget_stops_a_hundred_steps_with_exit_3(cli_env, configure, server,
                                                            tmp_path):
    # Free input, answers of exactly max_tokens words: every call is $0.001 worst and real.
    configure(bouquet(provider("alpha", server.url, price_in=0.0, price_out=10.0,
                               max_concurrency=200),
                      daily_usd=0.0105, max_concurrency=200))
    words = " ".join(["word"] * 120)
    plan = write_plan(tmp_path / "plan.json",
                      *(step(f"s{i:03}", f"@@slow:0.3@@ {words}", max_tokens=100)
                        for i in range(100)))
    done = run(cli_env, "run", plan, "--json")
    assert done.returncode == 3, done.stderr
    summary = as_json(done)
    assert summary["status"] == "stopped-by-budget" and "daily budget" in summary["detail"]
    assert (summary["totals"]["done"], summary["totals"]["pending"]) == (10, 90)
    assert f"resume with: aetherflow run {plan} --resume {summary['run_id']}\n" in done.stderr
    with db(cli_env) as conn:
        (spent,) = conn.execute("SELECT SUM(usd) FROM calls").fetchone()
    assert spent <= 0.0105 and spent == pytest.approx(0.010)


def test_a_new_run_says_no_step_is_already_done(cli_env, configure, server, tmp_path):
    configure(bouquet(provider("alpha", server.url)))
    plan = write_plan(tmp_path / "plan.json", *(step(f"s{i}", f"@@ok@@ {i}") for i in range(9)))
    done = run(cli_env, "run", plan, "--json")
    assert done.returncode == 0, done.stderr
    started = next(line for line in done.stderr.splitlines() if " started: " in line)
    # The steps that finished while the run was starting are not from an earlier run.
    assert ": test-task, 9 steps, mode build, " in started, started
    assert "already done" not in started


def test_a_pinned_step_says_it_is_pinned(cli_env, configure, server, tmp_path):
    configure(bouquet(provider("alpha", server.url, roles=("cheap", "chat")),
                      provider("beta", server.url, "coder", roles=("code",))))
    plan = write_plan(tmp_path / "plan.json", step("a", "@@ok@@ survey", provider="beta"))
    done = run(cli_env, "run", plan, "--json")
    assert done.returncode == 0, done.stderr
    (item,) = as_json(done)["steps"]
    assert item["provider"] == "beta"
    assert "no cheap model available" not in item["route"]
    assert "→ beta/coder (pinned to beta, which has no cheap model):" in item["route"]


def test_double_check_flags_show_in_run_json(cli_env, configure, server, tmp_path):
    configure(bouquet(provider("worker", server.url, "w", price_in=0.01),
                      provider("auditor", server.url, "a", price_in=0.5)))
    verdict = '{"agree": false, "problems": ["the total is wrong"]}'
    plan = write_plan(tmp_path / "plan.json", step("sum", f"@@say@@ SAY: {verdict} /SAY"),
                      step("ok", '@@say@@ SAY: {"agree": true} /SAY'))
    done = run(cli_env, "run", plan, "--mode", "double-check", "--json")
    assert done.returncode == 0, done.stderr
    summary = as_json(done)
    assert summary["mode"] == "double-check" and summary["totals"]["flagged"] == 1
    flagged = {s["id"]: s["flag"] for s in summary["steps"]}
    assert flagged == {"sum": "auditor/a disagrees: the total is wrong", "ok": None}
    assert {s["provider"] for s in summary["steps"]} == {"worker"}


def test_resume_runs_only_unfinished_steps_and_refuses_another_plan(cli_env, configure,
                                                                    server, tmp_path):
    configure(bouquet(provider("alpha", server.url)))
    server.script("ok", "status:400")  # a answers, b is refused, so c is skipped
    plan = write_plan(tmp_path / "plan.json", step("a", "@@ok@@ a"),
                      step("b", "@@ok@@ b", "a"), step("c", "@@ok@@ c", "b"))
    first = run(cli_env, "run", plan, "--json")
    assert first.returncode == 1, first.stderr
    run_id = as_json(first)["run_id"]
    assert calls_per_step(server.requests) == {"a": 1, "b": 1}

    other = write_plan(tmp_path / "other.json", step("a", "@@ok@@ a"),
                       step("b", "@@ok@@ b, changed", "a"), step("c", "@@ok@@ c", "b"))
    refused = run(cli_env, "run", other, "--json", "--resume", run_id)
    assert refused.returncode == 2
    assert f"not the one run {run_id} started with" in refused.stderr
    assert refused.stdout == ""

    resumed = run(cli_env, "run", plan, "--json", "--resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert run_id_of(resumed.stderr) == run_id
    summary = as_json(resumed)
    assert summary["run_id"] == run_id and summary["status"] == "done"
    assert calls_per_step(server.requests) == {"a": 1, "b": 2, "c": 1}
    unknown = run(cli_env, "run", plan, "--resume", "20000101-000000-beef")
    assert unknown.returncode == 2 and "no run '20000101-000000-beef'" in unknown.stderr


# -- a kill -9 mid-run, then resume --------------------------------------------------------


def _poll(what: str, check, deadline_s: float = 30.0, every_s: float = 0.02):
    """Poll check() until it returns something truthy, or fail after the deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    pytest.fail(f"timed out waiting for {what}")


def _read_only(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{home / 'aetherflow.db'}?mode=ro", uri=True, timeout=5)


def test_kill_9_mid_run_then_resume_finishes_without_redoing_work(cli_env, tmp_path):
    proc, url = spawn_server()
    try:
        path = tmp_path / "bouquet.toml"
        path.write_text(bouquet(provider("alpha", url)))
        cli_env["AETHERFLOW_CONFIG"] = str(path)
        fast = [f"f{i}" for i in range(4)]
        plan = write_plan(tmp_path / "plan.json",
                          *(step(f, f"@@ok@@ quick {f}") for f in fast),
                          step("s1", "@@slow:2@@ long one"), step("s2", "@@slow:2@@ long two"),
                          step("t1", "@@ok@@ after the long one", "s1"))
        everything = [*fast, "s1", "s2", "t1"]
        out = tmp_path / "out"
        home = Path(cli_env["AETHERFLOW_HOME"])
        stderr = tmp_path / "first.stderr"
        with stderr.open("w") as err:
            first = subprocess.Popen([*aetherflow_cmd(), "run", str(plan), "--json", "-o",
                                      str(out)], env=cli_env, stdout=subprocess.DEVNULL,
                                     stderr=err)
        try:
            run_id = _poll("the run id on stderr",
                           lambda: re.search(r"^run (\S+) started: ", stderr.read_text(),
                                             re.MULTILINE))[1]

            def done_steps() -> set[str]:
                if not (home / "aetherflow.db").exists():
                    return set()
                try:
                    with _read_only(home) as conn:
                        rows = conn.execute("SELECT step_id FROM steps WHERE run_id = ? AND "
                                            "status = 'done'", (run_id,)).fetchall()
                except sqlite3.OperationalError:  # the tables are not there yet
                    return set()
                return {r[0] for r in rows} if len(rows) >= len(fast) else set()

            before = _poll("the fast steps to be done", done_steps)
        finally:
            first.kill()  # SIGKILL: no cleanup, no final run status
            first.wait()
        assert first.returncode == -9

        with _read_only(home) as conn:
            status = dict(conn.execute("SELECT step_id, status FROM steps WHERE run_id = ?",
                                       (run_id,)).fetchall())
            calls_before = dict(conn.execute(
                "SELECT step_id, COUNT(*) FROM calls WHERE run_id = ? GROUP BY step_id",
                (run_id,)).fetchall())
            (run_status,) = conn.execute("SELECT status FROM runs WHERE id = ?",
                                         (run_id,)).fetchone()
        assert run_status == "running"  # nobody got to write the end of it
        assert {status[s] for s in ("s1", "s2")} == {"running"}, status
        assert "t1" not in status
        assert all(calls_before[s] == 1 for s in before)

        listed = as_json(run(cli_env, "runs", "--json"))["runs"]
        assert [(r["id"], r["status"]) for r in listed] == [(run_id, "interrupted")]

        resumed = run(cli_env, "run", plan, "--json", "-o", out, "--resume", run_id)
        assert resumed.returncode == 0, resumed.stderr
        assert run_id_of(resumed.stderr) == run_id
        assert f"({len(before)} already done)" in resumed.stderr
        summary = as_json(resumed)
    finally:
        loopback.stop(proc)

    assert summary["status"] == "done"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        [*(f"{s}.md" for s in everything), "run.json"])
    for name in everything:
        assert (out / f"{name}.md").read_text().startswith("echo: ")
    on_disk = json.loads((out / "run.json").read_text())
    assert sorted(s["id"] for s in on_disk["steps"]) == sorted(everything)
    assert {s["status"] for s in on_disk["steps"]} == {"done"}
    with db(cli_env) as conn:
        rows = conn.execute("SELECT step_id, status FROM steps WHERE run_id = ?",
                            (run_id,)).fetchall()
        calls = dict(conn.execute(
            "SELECT step_id, COUNT(*) FROM calls WHERE run_id = ? AND ok GROUP BY step_id",
            (run_id,)).fetchall())
        cut = conn.execute("SELECT price_method FROM calls WHERE error_kind = 'interrupted'"
                           ).fetchall()
        (final,) = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
    assert sorted(rows) == sorted((s, "done") for s in everything)
    assert final == "done"
    # One answered call per step: what was done before the kill was not asked again; what
    # the killed process held for the calls it cut counts in spend, once.
    assert calls == dict.fromkeys(everything, 1)
    assert cut == [("estimated:worst-case",)]


# -- an emergency stop from another process ------------------------------------------------


def run_in_flight(env: dict[str, str], plan: Path, tmp_path: Path, server: ScriptedServer
                   ) -> tuple[subprocess.Popen[str], str]:
    """A real `aetherflow run --json` whose slow call has reached the server, once its
    process is live in the store (what every other process counts it by)."""
    stderr = tmp_path / "run.stderr"
    with stderr.open("w") as err:
        proc = subprocess.Popen([*aetherflow_cmd(), "run", str(plan), "--json"], env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    home = Path(env["AETHERFLOW_HOME"])

    def live() -> bool:
        try:
            with _read_only(home) as conn:
                return conn.execute("SELECT 1 FROM processes WHERE pid = ?",
                                    (proc.pid,)).fetchone() is not None
        except sqlite3.OperationalError:  # no database, or no table, yet
            return False

    try:
        run_id = _poll("the run id on stderr", lambda: re.search(
            r"^run (\S+) started: ", stderr.read_text(), re.MULTILINE))[1]
        assert server.wait_for(lambda s: s.in_flight >= 1, 30), "the call never arrived"
        _poll("the run's process to be live", live)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, run_id


def held_plan(tmp_path: Path) -> Path:
    return write_plan(tmp_path / "plan.json", step("slow", "@@slow:30@@ wait"),
                      step("after", "@@ok@@ then", "slow"))


def ended(proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return json.loads(out)


def test_stop_counts_and_holds_a_run_in_another_process(cli_env, configure, server, tmp_path):
    configure(bouquet(provider("alpha", server.url)))
    proc, run_id = run_in_flight(cli_env, held_plan(tmp_path), tmp_path, server)
    stop = run(cli_env, "stop", "--yes", "--reason", "drill")
    summary = ended(proc)
    assert stop.returncode == 0, stop.stderr
    assert "emergency stop recorded" in stop.stdout
    assert "\n1 run(s) cancelled\n" in stop.stdout, stop.stdout
    # Held, not interrupted: exit 3, as for the budget, and the run can be resumed.
    assert proc.returncode == 3
    assert f"  pid {proc.pid} (run): 1 run(s) cancelled" in stop.stdout, stop.stdout
    assert summary["run_id"] == run_id and summary["status"] == "stopped-by-hold"
    assert summary["detail"] == "cancelled by an emergency stop: drill"
    assert {s["id"]: s["status"] for s in summary["steps"]} == {"slow": "cancelled",
                                                                "after": "pending"}


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_a_metrics_host_outside_loopback_is_warned_in_one_line(cli_env, configure, server,
                                                               tmp_path, host, warned):
    configure(bouquet(provider("alpha", server.url)))
    # The plan is missing, so the run stops (exit 2) before anything listens.
    done = run(cli_env, "run", tmp_path / "missing.json", "--metrics-port", "9464",
               "--metrics-host", host)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "not loopback" in line]
    if warned:
        assert lines == [f"aetherflow: warning: --metrics-host {host} is not loopback: "
                         "/metrics (provider names, spending) is open to the network, "
                         "without authentication; use 127.0.0.1 unless a firewall guards "
                         "the port"]
    else:
        assert lines == []
