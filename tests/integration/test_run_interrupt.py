"""Ctrl-C on `aetherflow run`: the in-flight call is cancelled and recorded, the run says how
to resume, and the resume finishes the job."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.conftest import aetherflow_cmd
from tests.support.plans import bouquet_text, model_entry, provider_table
from tests.support.scripted_server import ScriptedServer


def _ctrl_c_as_in_a_terminal() -> None:
    # A test run started in the background (`cmd &`, nohup) ignores SIGINT, and a child
    # inherits that: Python would then leave Ctrl-C ignored, as it should for an operator's
    # `nohup aetherflow run ... &`. The run under test gets SIGINT as from a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_cancels_records_and_resumes(tmp_path: Path, cli_env: dict[str, str]) -> None:
    with ScriptedServer() as server:
        config = tmp_path / "bouquet.toml"
        config.write_text(bouquet_text(provider_table(
            "local", model_entry("echo", roles=["cheap"], price_in=0.1, price_out=0.2),
            base_url=server.url, key="none")))
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"task_id": "interrupt-me", "steps": [
            {"id": "quick", "type": "analysis", "prompt": "first"},
            {"id": "stuck", "type": "analysis", "prompt": "@@hang@@ never answers",
             "depends_on": ["quick"]},
            {"id": "last", "type": "analysis", "prompt": "after", "depends_on": ["stuck"]},
        ]}, indent=2))
        cli_env["AETHERFLOW_CONFIG"] = str(config)
        database = Path(cli_env["AETHERFLOW_HOME"]) / "aetherflow.db"
        process = subprocess.Popen([*aetherflow_cmd(), "run", str(plan), "--json"],
                                   env=cli_env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True,
                                   preexec_fn=_ctrl_c_as_in_a_terminal)
        try:
            deadline = time.monotonic() + 30
            while _state(database, "stuck") != "running":
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the stuck step never started"
                time.sleep(0.05)
            # Its row says running before the request leaves: wait for the server to hold it.
            assert server.wait_for(lambda s: s.in_flight == 1, timeout=30)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 130, err
        summary = json.loads(out)
        assert summary["status"] == "cancelled"
        states = {s["id"]: s["status"] for s in summary["steps"]}
        assert states == {"quick": "done", "stuck": "cancelled", "last": "pending"}
        run_id = summary["run_id"]
        assert f"--resume {run_id}" in err
        with sqlite3.connect(database) as db:
            kinds = [row[0] for row in db.execute(
                "SELECT error_kind FROM calls WHERE run_id = ? AND step_id = 'stuck'",
                (run_id,))]
        assert kinds == ["cancelled"]

        # The hang was in the prompt: make the resumed call answer by scripting the server.
        server.script("ok", "ok")
        resumed = subprocess.run([*aetherflow_cmd(), "run", str(plan), "--json", "--resume",
                                  run_id], env=cli_env, capture_output=True, text=True,
                                 timeout=60)
        assert resumed.returncode == 0, resumed.stderr
        done = json.loads(resumed.stdout)
        assert {s["id"]: s["status"] for s in done["steps"]} == {
            "quick": "done", "stuck": "done", "last": "done"}
        prompts = [r["body"]["messages"][-1]["content"] for r in server.requests
                   if r["path"] == "/v1/chat/completions"]
        assert sum(p.startswith("## Your step: quick") for p in prompts) == 1, "quick ran again"


def _state(database: Path, step_id: str) -> str | None:
    if not database.exists():
        return None
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute("SELECT status FROM steps WHERE step_id = ?", (step_id,)).fetchone()
    except sqlite3.OperationalError:
        return None  # not created yet
    return row[0] if row else None
