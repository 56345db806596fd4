"""The cockpit as the operator sees it, at 80x24 and 160x48, on the seeded fixture engine.

Update with `pytest tests/tui/test_snapshots.py --snapshot-update`, then look at every
changed SVG before committing it (tests/tui/__snapshots__/).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from aetherflow_tui.app import CockpitApp
from aetherflow_tui.widgets.system import SystemPane
from tests.support.cockpit_fixture import (
    fixture_app,
    publish_system,
    stressed_decision,
    system_samples,
)
from tests.tui.screen import settle, until

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
# The keys the fixture stores in the keyring file: none of them may reach the screen.
FIXTURE_KEYS = "fixture-key-for-"


def cockpit(tmp_path: Path) -> CockpitApp:
    app = fixture_app(tmp_path)
    app.animation_level = "none"
    return app


def after(*keys: str, system: bool = False) -> Callable[[Pilot], Awaitable[None]]:
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot)  # the panes are filled from the engine in workers
        if system:  # what a running regulator publishes: a minute of samples, a decision
            publish_system(pilot.app.engine, system_samples(), stressed_decision())
            pane = pilot.app.query_one(SystemPane)
            await until(pilot, lambda: pane.decision is not None and len(pane.samples) == 60,
                        what="the regulator's events")
            await settle(pilot)
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


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch):
    """The decision's time is local: the same on every machine in UTC."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("size", SIZES)
def test_system_pane(snap_compare, tmp_path: Path, size: tuple[int, int], utc) -> None:
    assert snap_compare(cockpit(tmp_path), terminal_size=size,
                        run_before=after("5", system=True))


def test_system_pane_zoomed_at_80x24(snap_compare, tmp_path: Path, utc) -> None:
    assert snap_compare(cockpit(tmp_path), terminal_size=(80, 24),
                        run_before=after("5", "z", system=True))


@pytest.mark.parametrize("size", SIZES)
def test_throttle_modal(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(cockpit(tmp_path), terminal_size=size, run_before=after("h"))
