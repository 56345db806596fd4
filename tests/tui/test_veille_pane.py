"""Pane 4, Veille: newest first, label badges, the filter, an item in full, a poll from the
keyboard, and the acquisition funnel an approved opportunity opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from aetherflow_tui.app import CockpitApp
from aetherflow_tui.engine import Engine, config
from aetherflow_tui.engine.clock import FixedClock
from aetherflow_tui.engine.keys import KeyVault
from aetherflow_tui.widgets.approvals import ApprovalsScreen
from aetherflow_tui.widgets.key_modal import KeyModal
from aetherflow_tui.widgets.veille import VeilleItemScreen, VeillePane
from tests.support.cockpit_fixture import FIXED_NOW, fixture_engine
from tests.support.plans import scripted_bouquet
from tests.tui.screen import screen_text, settle, until

SIZE = (160, 48)


@pytest.fixture
def cockpit_engine(tmp_path: Path) -> Engine:
    return fixture_engine(tmp_path)


def titles(pane: VeillePane) -> list[str]:
    table = pane.table
    return [table.get_row_at(i)[4].plain for i in range(table.row_count)]


async def started(pilot) -> VeillePane:
    await settle(pilot)
    return pilot.app.query_one(VeillePane)


async def test_items_newest_first_filtered_by_label_and_opened(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        pane = await started(pilot)
        assert titles(pane)[0].startswith("Groq cuts Llama 3.3 70B")
        assert titles(pane)[-1].startswith("New export controls")
        labels = [pane.table.get_row_at(i)[1].plain.strip() for i in range(5)]
        assert labels == ["PRICE", "OUTAGE", "noise", "OFFER", "GEO"]
        # The hostile title is on screen as typed: markup not obeyed, the escape visible.
        text = screen_text(app)
        assert "[bold red]FREE[/] credits [@click=app.quit]click[/] \\x1b[31m now" in text
        assert "1 failing: openai-status" in text

        await pilot.press("4")
        assert pane.table.has_focus
        await pilot.press("f")  # price_change only
        assert titles(pane) == ["Groq cuts Llama 3.3 70B to $0.39/M input, $0.59/M output"]
        assert "filter: price_change" in screen_text(app)
        await pilot.press("enter")
        assert isinstance(app.screen, VeilleItemScreen)
        shown = screen_text(app)
        assert "groq/llama-3.3-70b-versatile  in 0.39  out 0.59 $/Mtok" in shown
        assert "93% confident" in shown and "https://example.com/news/0" in shown
        await pilot.press("escape")
        assert not isinstance(app.screen, VeilleItemScreen)
        for _ in range(5):  # outage, new_offer, geopolitical_risk, noise, back to all
            await pilot.press("f")
        assert len(titles(pane)) == 5


async def test_approving_an_opportunity_copies_the_billing_url_and_opens_the_key_dialog(
        cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(app.screen, ApprovalsScreen)
        table = app.screen.query_one("#approvals-table")
        table.move_cursor(row=1)
        await pilot.pause()
        report = screen_text(app)
        for fact in ("monthly cost at current usage", "dependency risk: LOW",
                     "latency: not measured yet", "Opportunity: gemini/gemini-2.5-flash"):
            assert fact in report, fact
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, KeyModal),
                    what="the key dialog for gemini")
        assert app.screen.provider_id == "gemini"
        assert app.clipboard == "https://aistudio.google.com/apikey"
        assert await cockpit_engine.store.setting("announced:gemini") == {
            "model": "gemini-2.5-flash", "input_per_mtok": 0.1, "output_per_mtok": 0.4,
            "item_id": 1}


FEED = """<?xml version="1.0"?><rss version="2.0"><channel><title>news</title>
<item><title>Scripted is down: elevated error rates on all models</title>
<link>https://news.example/a</link><description>We are investigating failed requests
and timeouts.</description></item></channel></rss>"""


async def test_u_polls_and_new_items_arrive_at_the_top(scripted, keyring_backend, tmp_path):
    feed = tmp_path / "feed.xml"
    feed.write_text(FEED, encoding="utf-8")
    text = scripted_bouquet(scripted.url,
                            veille={"sources": [{"name": "local-news", "path": feed}]})
    engine = Engine(config.parse(text, None), tmp_path / "home",
                    vault=KeyVault(backend=keyring_backend, environ={}),
                    clock=FixedClock(FIXED_NOW))
    app = CockpitApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        pane = await started(pilot)
        assert pane.table.row_count == 0 and "no items yet" in screen_text(app)
        await pilot.press("4", "u")
        await until(pilot, lambda: pane.table.row_count == 1, what="the polled item")
        assert titles(pane) == ["Scripted is down: elevated error rates on all models"]
        assert pane.table.get_row_at(0)[1].plain.strip() == "OUTAGE"
        assert "1 source(s)" in screen_text(app)
