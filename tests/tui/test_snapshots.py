"""The cockpit as the operator sees it, at 80x24 and 160x48, on the seeded fixture engine.

Update with `pytest tests/tui/test_snapshots.py --snapshot-update`, then look at every
changed SVG before committing it (tests/tui/__snapshots__/).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from aetherflow_tui.app import CockpitApp
from tests.support.cockpit_fixture import fixture_app
from tests.tui.screen import settle

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
# The keys the fixture stores in the keyring file: none of them may reach the screen.
FIXTURE_KEYS = "fixture-key-for-"


def cockpit(tmp_path: Path) -> CockpitApp:
    app = fixture_app(tmp_path)
    app.animation_level = "none"
    return app


def after(*keys: str) -> Callable[[Pilot], Awaitable[None]]:
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot)  # the panes are filled from the engine in workers
        await pilot.press(*keys)
        await settle(pilot)
        for box in pilot.app.screen.query(Input):
            box.cursor_blink = False  # a blinking cursor would flip between runs
        await pilot.pause()
        assert not pilot.app.screen.query("Toast"), "a notification would cover the snapshot"
        assert FIXTURE_KEYS not in pilot.app.export_screenshot()

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_cockpit(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(cockpit(tmp_path), terminal_size=size, run_before=after())


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(cockpit(tmp_path), terminal_size=size,
                        run_before=after("question_mark"))


@pytest.mark.parametrize("size", SIZES)
def test_approvals(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(cockpit(tmp_path), terminal_size=size, run_before=after("a"))


@pytest.mark.parametrize("size", SIZES)
def test_key_modal_for_groq(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(cockpit(tmp_path), terminal_size=size, run_before=after("k"))
