"""Plan text through the real `aetherflow` command: task ids and step ids full of terminal
escapes and Rich markup are shown inert by `plan check`, `run`, `runs` and `report`, and kept
exact, safely escaped, in their JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import aetherflow_cmd
from tests.support.plans import bouquet, provider, step, write_plan


def run(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*aetherflow_cmd(), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=60)


def one_line_error(done: subprocess.CompletedProcess[str], *parts: str) -> None:
    error = done.stderr.strip()
    assert done.returncode == 2, done.stderr
    assert "\n" not in error and "Traceback" not in error, error
    for part in parts:
        assert part in error, error


# An OSC title, a screen clear, a C1 CSI (U+009B), a bell, and Rich markup.
HOSTILE = "t\x1b]0;pwned\x07\x1b[2J\x9b31m[bold]b[/bold]\x07"
SHOWN = r"t\x1b]0;pwned\x07\x1b[2J\x9b31m[bold]b[/bold]\x07"
RAW = ("\x1b", "\x07", "\x9b")


def assert_inert(*outputs: str) -> None:
    for output in outputs:
        for char in RAW:
            assert char not in output, repr(output)


def assert_exact_in_json(stdout: str, pick: Any) -> None:
    assert_inert(stdout)
    assert pick(json.loads(stdout)) == HOSTILE


def test_plan_check_shows_a_hostile_task_id_escaped_and_json_keeps_it_exact(cli_env, tmp_path):
    plan = write_plan(tmp_path / "plan.json", step("a", "x"), task_id=HOSTILE)
    human = run(cli_env, "plan", "check", plan)
    assert human.returncode == 0, human.stderr
    assert_inert(human.stdout, human.stderr)
    assert f"valid — {SHOWN}: 1 steps" in human.stdout, human.stdout
    as_json = run(cli_env, "plan", "check", plan, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert_exact_in_json(as_json.stdout, lambda d: d["task_id"])


@pytest.mark.parametrize("step_id", ["a\x1b[2J", "[bold]a", "a\x9b31m", "a\n"])
def test_a_hostile_step_id_is_refused_and_the_error_is_inert(cli_env, tmp_path, step_id):
    plan = write_plan(tmp_path / "plan.json", step(step_id, "x"),
                      step("b", "y", step_id), task_id=HOSTILE)
    for args in (("plan", "check", plan), ("plan", "check", plan, "--json"), ("run", plan)):
        done = run(cli_env, *args)
        one_line_error(done, 'steps[0] "', ".id: String should match pattern")
        assert_inert(done.stdout, done.stderr)
    if step_id.startswith("["):
        assert '"[bold]a"' in done.stderr  # markup shown as written


def test_a_hostile_dependency_name_is_inert_in_the_error(cli_env, tmp_path):
    plan = write_plan(tmp_path / "plan.json", step("a", "x", "\x1b]0;pwned\x07"))
    done = run(cli_env, "plan", "check", plan)
    one_line_error(done, r"unknown step '\x1b]0;pwned\x07'")
    assert_inert(done.stderr)


def test_run_and_runs_show_a_hostile_task_id_escaped_and_json_keeps_it_exact(
        cli_env, configure, server, tmp_path):
    configure(bouquet(provider("alpha", server.url)))
    plan = write_plan(tmp_path / "plan.json", step("a", "x"), task_id=HOSTILE)
    human = run(cli_env, "run", plan)
    assert human.returncode == 0, human.stderr
    assert_inert(human.stdout, human.stderr)
    assert f"started: {SHOWN}, 1 steps" in human.stderr, human.stderr
    as_json = run(cli_env, "run", plan, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert_inert(as_json.stderr)
    assert_exact_in_json(as_json.stdout, lambda d: d["task_id"])

    cli_env["COLUMNS"] = "300"  # the whole task id on one table line
    listed = run(cli_env, "runs")
    assert listed.returncode == 0, listed.stderr
    assert_inert(listed.stdout)
    # Twice, once per run; "[bold]" still there: printed as written, not taken as markup.
    assert listed.stdout.count(SHOWN) == 2, listed.stdout
    listed_json = run(cli_env, "runs", "--json")
    assert_exact_in_json(listed_json.stdout, lambda d: d["runs"][0]["task_id"])

    run_id = json.loads(as_json.stdout)["run_id"]
    report = run(cli_env, "report", run_id)
    assert report.returncode == 0, report.stderr
    assert_inert(report.stdout)
    assert report.stdout.startswith(f"# Run {run_id} — {SHOWN}\n")
