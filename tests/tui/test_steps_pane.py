"""The step monitor and its keys: r runs a plan, x cancels it, z zooms a pane.

Runs go through the real engine to a ScriptedServer on 127.0.0.1 (the `envkey` provider
of the Pilot bouquet, its key in the environment); the seeded fixture shows a run the
budget stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from keyrings.alt.file import PlaintextKeyring
from textual.widgets import Input

from aetherflow_tui.app import CockpitApp
from aetherflow_tui.engine import Engine
from aetherflow_tui.engine.keys import KeyVault
from aetherflow_tui.engine.progress import RunStatus, StepState
from aetherflow_tui.widgets.confirm import ConfirmScreen
from aetherflow_tui.widgets.run_modal import RunPlanModal
from aetherflow_tui.widgets.steps import StepsPane, StepTable
from tests.conftest import TEST_KEY
from tests.support.cockpit_fixture import RUN_ID, fixture_engine
from tests.support.scripted_server import ScriptedServer
from tests.tui.screen import screen_text, settle, until
from tests.tui.test_pilot import SIZE, Notes, engine_on


@pytest.fixture
def cockpit_engine(tmp_path: Path) -> Engine:
    return fixture_engine(tmp_path)


@pytest.fixture
def scripted_engine(scripted: ScriptedServer, tmp_path: Path) -> Engine:
    """The Pilot bouquet, with the `envkey` provider's key in its environment variable."""
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring" / "keyring_pass.cfg")
    return engine_on(scripted, KeyVault(backend=backend,
                                        environ={"ENVKEY_API_KEY": TEST_KEY}), tmp_path)


def write_plan(directory: Path, *prompts: str, name: str = "plan.json",
               depends: bool = True) -> Path:
    steps = []
    for index, prompt in enumerate(prompts):
        step = {"id": f"s{index}", "type": "analysis", "prompt": prompt, "provider": "envkey"}
        if depends and index:
            step["depends_on"] = [f"s{index - 1}"]
        steps.append(step)
    path = directory / name
    path.write_text(json.dumps({"task_id": "pilot-task", "steps": steps}, indent=2))
    return path


def pane(app: CockpitApp) -> StepsPane:
    return app.query_one(StepsPane)


async def open_run_dialog(pilot, path: Path | str) -> RunPlanModal:
    await pilot.press("r")
    await pilot.pause()
    modal = pilot.app.screen
    assert isinstance(modal, RunPlanModal)
    box = modal.query_one("#plan-path", Input)
    box.value = str(path)
    await pilot.press("enter")
    await settle(pilot)
    return modal


async def test_the_last_run_is_on_screen_at_start(cockpit_engine: Engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        steps = pane(app)
        assert steps.run is not None and steps.run.run_id == RUN_ID
        assert steps.run.status is RunStatus.BUDGET
        table = app.query_one(StepTable)
        assert table.row_count == 8  # every step of the plan, pending ones included
        assert table.get_cell("migrate", "state").plain == "✗"
        assert table.get_cell("docs", "state").plain == "○"
        shown = screen_text(app)
        assert "billing-service" in shown and "stopped-by-budget" in shown
        assert f"run {RUN_ID}" in shown
        # The failed step's provider error, markup and all, is shown as typed.
        await pilot.press("2")
        table.move_cursor(row=list(table.rows).index("migrate"))
        await pilot.pause()
        assert "[b]busy[/b]" in screen_text(app)


async def test_r_runs_a_plan_and_the_rows_follow_it(scripted_engine: Engine, tmp_path: Path):
    plan = write_plan(tmp_path, "first", "second", "third")
    app = CockpitApp(scripted_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await open_run_dialog(pilot, plan)
        assert not isinstance(app.screen, RunPlanModal)
        await until(pilot, lambda: pane(app).run is not None
                    and pane(app).run.status is RunStatus.DONE, what="the run to finish")
        await pilot.pause()
        table = app.query_one(StepTable)
        assert [str(k.value) for k in table.rows] == ["s0", "s1", "s2"]
        assert {table.get_cell(s, "state").plain for s in ("s0", "s1", "s2")} == {"✓"}
        assert table.get_cell("s2", "who").plain == "envkey/echo"
        assert "3/3" in screen_text(app) and "done" in screen_text(app)


async def test_an_invalid_plan_keeps_the_dialog_open_with_the_reason(
        scripted_engine: Engine, tmp_path: Path):
    missing = tmp_path / "nope.json"
    cyclic = tmp_path / "cyclic.json"
    cyclic.write_text(json.dumps({"task_id": "t", "steps": [
        {"id": "a", "type": "review", "prompt": "x", "depends_on": ["b"]},
        {"id": "b", "type": "review", "prompt": "x", "depends_on": ["a"]}]}, indent=2))
    app = CockpitApp(scripted_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        modal = await open_run_dialog(pilot, missing)
        assert app.screen is modal
        assert "plan file not found" in screen_text(app)
        modal.query_one("#plan-path", Input).value = str(cyclic)
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is modal
        assert "dependency cycle: a → b → a" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, RunPlanModal)
        assert pane(app).run is None


async def test_x_cancels_the_run_after_asking(scripted_engine: Engine, tmp_path: Path):
    plan = write_plan(tmp_path, "@@hang@@ never answers", "after it")
    app = CockpitApp(scripted_engine)
    notes = Notes()
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await settle(pilot)
        await pilot.press("x")
        await pilot.pause()
        assert notes.any("no run in progress")
        await open_run_dialog(pilot, plan)
        await until(pilot, lambda: scripted_engine.busy() == 1, what="the call to start")
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "pending step(s) stay pending" in screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: pane(app).run.status is RunStatus.CANCELLED,
                    what="the run to be cancelled")
        await pilot.pause()
        table = app.query_one(StepTable)
        assert table.get_cell("s0", "state").plain == StepState.CANCELLED.glyph
        assert table.get_cell("s1", "state").plain == StepState.PENDING.glyph
        calls = await scripted_engine.store.run_calls(pane(app).run.run_id)
        assert [c.error_kind for c in calls] == ["cancelled"]


async def test_z_zooms_the_focused_pane_and_back(cockpit_engine: Engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2", "z")
        await pilot.pause()
        assert app.screen.maximized is pane(app)
        assert "survey" in screen_text(app) and "release" in screen_text(app)
        await pilot.press("z")
        await pilot.pause()
        assert app.screen.maximized is None


def test_a_step_waiting_for_budget_says_so_in_its_row():
    from aetherflow_tui.engine.progress import StepView
    from aetherflow_tui.widgets.steps import cells

    waiting = StepView("s3", "analysis", StepState.WAITING, "alpha", "echo", 1, 100.0,
                       error="waiting for budget: worst case $0.1300 waits for ...")

    row = cells(waiting, now=102.0)

    assert row["state"].plain == "⧗" and row["who"].plain == "waiting for budget"
    assert row["elapsed"].plain == "2.0 s"


def test_a_task_id_with_escape_sequences_is_shown_escaped_in_the_headline():
    # Plan text is untrusted: an OSC title sequence or a screen clear must not reach the
    # terminal, and Rich markup stays literal.
    from aetherflow_tui.engine.progress import RunStatus, RunView
    from aetherflow_tui.widgets.steps import headline

    task = "evil\x1b]0;pwned\x07\x1b[2J[bold]x[/bold]"
    run = RunView("r1", task, "build", RunStatus.RUNNING, 3, 0, 0, 0, 1, 0, 100.0, None,
                  0.0, None)

    shown = headline(run).plain

    assert "\x1b" not in shown and "\x07" not in shown
    assert "\\x1b]0;pwned" in shown and "[bold]x[/bold]" in shown
