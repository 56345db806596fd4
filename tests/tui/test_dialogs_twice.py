"""Every dialog of the cockpit opens, closes, and opens again, through Pilot.

A dialog that works once and crashes the second time (the run dialog pre-filled with the
last plan's path, a Path where the Input takes text) is only found by opening it twice.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from keyrings.alt.file import PlaintextKeyring
from textual.command import CommandPalette
from textual.screen import ModalScreen
from textual.widgets import Input

import aetherflow_tui.widgets as widgets
from aetherflow_tui.app import CockpitApp
from aetherflow_tui.engine import Engine
from aetherflow_tui.engine.keys import KeyVault
from aetherflow_tui.engine.progress import RunStatus
from aetherflow_tui.widgets.approvals import ApprovalsScreen
from aetherflow_tui.widgets.confirm import ConfirmScreen
from aetherflow_tui.widgets.help import HelpScreen
from aetherflow_tui.widgets.key_modal import KeyModal
from aetherflow_tui.widgets.run_modal import RunPlanModal
from aetherflow_tui.widgets.steps import StepsPane
from aetherflow_tui.widgets.throttle_modal import ThrottleModal
from aetherflow_tui.widgets.veille import VeilleItemScreen
from tests.conftest import TEST_KEY
from tests.support.cockpit_fixture import fixture_engine
from tests.support.scripted_server import ScriptedServer
from tests.tui.screen import screen_text, settle, until
from tests.tui.test_pilot import SIZE, engine_on
from tests.tui.test_steps_pane import write_plan


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


# What opens the dialog (after `before`), what closes it, and a line it must show.
DIALOGS = {
    "key": ((), ("k",), ("escape",), KeyModal, "API key for groq"),
    "throttle": ((), ("h",), ("escape",), ThrottleModal, "Emergency throttle"),
    "confirm": ((), ("exclamation_mark",), ("n",), ConfirmScreen, "EMERGENCY STOP?"),
    "approvals": ((), ("a",), ("escape",), ApprovalsScreen, "Pending approvals"),
    "help": ((), ("question_mark",), ("escape",), HelpScreen, "Keys — esc closes"),
    "veille item": (("4",), ("enter",), ("escape",), VeilleItemScreen,
                    "Groq cuts Llama 3.3 70B"),
    "palette": ((), ("ctrl+p",), ("escape",), CommandPalette, "Search for commands"),
}


@pytest.mark.parametrize("name", list(DIALOGS))
async def test_each_dialog_opens_twice(cockpit_engine: Engine, name: str):
    before, keys, close, kind, shows = DIALOGS[name]
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press(*before)
        for time in ("first", "second"):
            await pilot.press(*keys)
            await settle(pilot)
            assert isinstance(app.screen, kind), (time, app.screen)
            assert shows in screen_text(app), time
            await pilot.press(*close)
            await settle(pilot)
            assert app.screen is app.default_screen, time
        assert app.is_running


def test_every_modal_of_the_cockpit_is_in_the_list():
    """A new dialog gets its line in DIALOGS (the run dialog has its own test below)."""
    found = set()
    for module in Path(widgets.__file__).parent.glob("*.py"):
        mod = importlib.import_module(f"aetherflow_tui.widgets.{module.stem}")
        found |= {v for v in vars(mod).values() if isinstance(v, type)
                  and issubclass(v, ModalScreen) and v.__module__ == mod.__name__}
    listed = {kind for *_, kind, _ in DIALOGS.values()} | {RunPlanModal}
    assert found <= listed, sorted(c.__name__ for c in found - listed)


async def test_the_run_dialog_opens_again_after_a_run_with_its_path(
        scripted_engine: Engine, tmp_path: Path):
    plan = write_plan(tmp_path, "first", "second")
    app = CockpitApp(scripted_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        modal = app.screen
        assert isinstance(modal, RunPlanModal)
        modal.query_one("#plan-path", Input).value = str(plan)
        await pilot.press("enter")
        await settle(pilot)
        steps = app.query_one(StepsPane)
        await until(pilot, lambda: steps.run is not None and steps.run.status is RunStatus.DONE,
                    what="the run to finish")

        await pilot.press("r")  # the second time: pre-filled with the last plan's path
        await settle(pilot)
        again = app.screen
        assert isinstance(again, RunPlanModal) and again is not modal
        assert again.query_one("#plan-path", Input).value == str(plan.resolve())
        assert str(plan.resolve()) in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is app.default_screen and app.is_running
