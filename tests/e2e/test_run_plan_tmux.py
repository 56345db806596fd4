"""The installed `aetherflow` in tmux: r runs a plan, the step monitor follows it to the end.

An operator at 80×24 over SSH: opens the run dialog, types a path that does not exist
(and reads why), types the real plan, watches the rows turn ✓, zooms the pane, quits.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.tmux import Tmux, aetherflow_command, tmux_path
from tests.support.plans import bouquet_text, model_entry, provider_table
from tests.support.scripted_server import ScriptedServer

SESSION = "run-plan"

pytestmark = pytest.mark.skipif(
    tmux_path() is None, reason="tmux is not installed (apt-get install -y tmux)")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    server = Tmux()
    try:
        yield server
    finally:
        server.kill()


def test_r_runs_a_plan_and_the_monitor_shows_it_done(tmp_path: Path, tmux: Tmux) -> None:
    command = aetherflow_command()
    assert command is not None, "the aetherflow console script is not installed"
    with ScriptedServer() as server:
        config = tmp_path / "bouquet.toml"
        config.write_text(bouquet_text(provider_table(
            "local", model_entry("echo", roles=["cheap", "code", "fast", "quality"],
                                 price_in=0.0, price_out=0.0),
            base_url=server.url, key="none")))
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"task_id": "e2e-plan", "steps": [
            {"id": "survey", "type": "analysis", "prompt": "@@slow:0.5@@ look around"},
            {"id": "build", "type": "code_generation", "prompt": "write it",
             "depends_on": ["survey"]},
            {"id": "notes", "type": "documentation", "prompt": "note it",
             "depends_on": ["survey"]},
        ]}, indent=2))
        env = {"AETHERFLOW_CONFIG": str(config), "AETHERFLOW_HOME": str(tmp_path / "home")}
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        script = f"env {assignments} {shlex.quote(command)}; echo EXIT=$?; exec sleep 600"
        tmux.new_session(SESSION, ["/bin/sh", "-c", script], width=80, height=24)
        tmux.wait_for(SESSION, lambda s: "no run yet" in s and "Run plan" in s,
                      "the cockpit with an idle step monitor")

        tmux.send(SESSION, "r")
        tmux.wait_for(SESSION, lambda s: "Run a plan" in s, "the run dialog")
        tmux.type(SESSION, f"{plan}x")  # a typo: the file does not exist
        tmux.send(SESSION, "Enter")
        tmux.wait_for(SESSION, lambda s: "plan file not found" in s,
                      "the dialog to say the plan is missing")
        tmux.send(SESSION, "BSpace", "Enter")
        tmux.wait_for(SESSION, lambda s: "Run a plan" not in s and "e2e-plan · build" in s
                      and "⟳" in s, "the dialog to close and the first step to run")
        tmux.send(SESSION, "z")  # the step monitor has the focus once a run starts
        done = tmux.wait_for(SESSION, lambda s: re.search(r"3/3.*done", s) is not None
                             and s.count("✓") >= 3, "all three steps done", timeout=30)
        for step in ("survey", "build", "notes"):
            assert re.search(rf"✓\s+{step}\s+local/echo", done), done
        tmux.send(SESSION, "z", "q")
        tmux.wait_for(SESSION, lambda s: "EXIT=0" in s, "the cockpit to exit cleanly")
        chats = [r for r in server.requests if r["path"] == "/v1/chat/completions"]
        # The three steps, and the cockpit's canary for the keyless provider.
        canaries = [r for r in chats if "What is 7 + 5" in json.dumps(r["body"])]
        assert len(chats) - len(canaries) == 3 and len(canaries) >= 1
