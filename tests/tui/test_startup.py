"""The cockpit paints and fills its panes before its background work starts.

`aetherflow` hands the cockpit what starts the vigilance and the veille (start_watch): the
cockpit runs it once its first frame is up and its panes are filled, so none of that work
(status pages, canaries, the feeds and their classifier) delays what the operator sees.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aetherflow_tui.app import CockpitApp
from aetherflow_tui.engine import Engine
from aetherflow_tui.widgets.providers import ProviderTable
from aetherflow_tui.widgets.system import NOT_RUNNING, SystemPane
from tests.support.cockpit_fixture import fixture_engine
from tests.tui.screen import screen_text, settle, until
from tests.tui.test_pilot import SIZE


@pytest.fixture
def cockpit_engine(tmp_path: Path) -> Engine:
    return fixture_engine(tmp_path)


async def test_the_panes_fill_before_the_watch_starts_and_it_starts_after(
        cockpit_engine: Engine):
    release = asyncio.Event()
    calls: list[str] = []

    async def start_watch() -> None:
        calls.append("asked")
        await release.wait()  # held here until the test has seen the screen
        await cockpit_engine.start_vigilance(role="cockpit", canaries="off",
                                             status_pages=False)

    app = CockpitApp(cockpit_engine, start_watch=start_watch)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(ProviderTable)
        await until(pilot, lambda: calls, what="the cockpit to start its watch")
        # The watch is asked for only once the panes are filled, and is not running yet.
        assert table.row_count == len(cockpit_engine.bouquet.providers)
        assert cockpit_engine.vigilance is None
        shown = screen_text(app)
        assert "Quit" in shown and "groq" in shown and "billing-service" in shown
        # Starting, not "not running": the system pane says what is about to happen.
        assert "waiting for the first sample" in shown and NOT_RUNNING not in shown

        release.set()
        await settle(pilot)
        assert calls == ["asked"] and cockpit_engine.vigilance is not None
        assert not app.query_one(SystemPane).starting
        assert NOT_RUNNING not in screen_text(app)
    assert cockpit_engine.vigilance is None  # the cockpit started the engine, and stopped it
