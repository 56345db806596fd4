"""The market watch on the real engine: feeds in, classified items stored, proposals out,
and the acquisition funnel to its end — a real key, a real sandbox call on 127.0.0.1, the
bill checked against the announcement, the provider in routing at the announced price.

Real feedparser, real onnxruntime inference, real SQLite, a real keyring file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aetherflow_tui.engine import Engine, config
from aetherflow_tui.engine.approvals import ACTIVATE_KEY, OPPORTUNITY, PRICE_UPDATE
from aetherflow_tui.engine.errors import UsageError
from aetherflow_tui.engine.events import AlertRaised, VeilleItemClassified, VeillePolled
from aetherflow_tui.engine.keycheck import KeyCheckState
from aetherflow_tui.engine.keys import KeyVault
from tests.conftest import TEST_KEY
from tests.support.plans import bouquet_text, model_entry, provider_table

FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Provider news</title>
<item><title>Scripted cuts echo-2 prices to $0.25 per million input tokens and $0.75 per million
output tokens</title><link>https://news.example/scripted-price-cut</link>
<description>The new rates for echo-2 apply to every account from Monday.</description></item>
<item><title>Groq launches llama-3.1-8b-instant on GroqCloud at $0.02/M input and $0.05/M
output</title><link>https://news.example/groq-launch</link>
<description>The new model is available today to every developer, with a free tier.
</description></item>
<item><title>Scripted API: elevated error rates on chat completions</title>
<link>https://news.example/scripted-incident</link>
<description>We are investigating elevated error rates and timeouts on the scripted chat
completions API. Some requests fail with 503.</description></item>
<item><title>[bold red]Join us[/] at our developer meetup \x1b[31m in Lyon</title>
<link>https://news.example/meetup</link>
<description>Pizza, talks and a hiring booth. [@click=app.quit]RSVP[/]</description></item>
</channel></rss>
"""


def bouquet(scripted_url: str, feed: Path, *sources: dict[str, object]) -> str:
    """scripted (its key in the environment) and groq (keyring), no canaries; the news feed
    then `sources` watched."""
    return bouquet_text(
        provider_table("scripted", model_entry("echo-2", roles=["chat", "cheap"], price_in=0.5,
                                               price_out=1.5),
                       base_url=scripted_url, key="env:SCRIPTED_KEY", zone="FRA", canary=False),
        provider_table("groq", model_entry("llama-3.1-8b-instant", roles=["fast", "cheap"],
                                           price_in=0.05, price_out=0.08),
                       base_url=scripted_url, key="keyring", zone="USA", canary=False,
                       console_url="https://console.groq.example/keys"),
        budget={"daily_usd": 1.0},
        veille={"default_sources": False, "min_confidence": 0.3,
                "sources": [{"name": "news", "path": feed}, *sources]})


@pytest.fixture
def feed(tmp_path: Path) -> Path:
    path = tmp_path / "news.xml"
    path.write_text(FEED.replace("\\x1b", "&#x1b;"), encoding="utf-8")
    return path


@pytest.fixture
async def engine_for(tmp_path, keyring_backend, scripted, feed):
    engines = []

    async def make(*sources: dict[str, object]) -> Engine:
        parsed = config.parse(bouquet(scripted.url, feed, *sources), None)
        engine = Engine(parsed, tmp_path / "home", vault=KeyVault(
            backend=keyring_backend, environ={"SCRIPTED_KEY": TEST_KEY}))
        engines.append(engine)
        return await engine.start()

    yield make
    for engine in engines:
        if engine.started:
            await engine.stop()


async def test_a_poll_stores_classifies_and_proposes(engine_for):
    engine = await engine_for()
    events = engine.bus.subscribe()
    await engine.provider_views()
    summary = await engine.veille.poll()

    (status,) = summary.sources
    assert status.outcome == "new" and status.error is None and status.new_items == 4
    by_title = {i.title.split(" ")[0]: i for i in summary.items}
    assert by_title["Scripted"].label in ("price_change", "outage")
    labels = sorted(i.label for i in summary.items)
    assert labels == ["new_offer", "noise", "outage", "price_change"], labels
    cut = next(i for i in summary.items if i.label == "price_change")
    assert [q.as_json() for q in cut.prices] == [
        {"provider": "scripted", "model": "echo-2", "input_per_mtok": 0.25,
         "output_per_mtok": 0.75}]
    hostile = next(i for i in summary.items if i.label == "noise")
    # Markup stays literal text; the escape character is made visible, never obeyed.
    assert hostile.title.startswith("[bold red]Join us[/]") and "\x1b" not in hostile.title
    assert "[@click=app.quit]RSVP[/]" in hostile.summary

    # Durable before reported: the store has every item, newest first.
    assert [i.id for i in await engine.veille_items()] == sorted(
        (i.id for i in summary.items), reverse=True)
    seen = []
    while (event := events.get_nowait()) is not None:
        seen.append(event)
    assert sum(isinstance(e, VeilleItemClassified) for e in seen) == 4
    assert any(isinstance(e, VeillePolled) and e.new_items == 4 for e in seen)
    assert any(isinstance(e, AlertRaised) and "scripted" in e.title for e in seen)

    # The price cut on a bouquet model is a proposal; the offer from a provider with no key
    # that beats the bouquet is an opportunity with its report.
    kinds = {a.kind: a for a in summary.approvals}
    assert set(kinds) == {PRICE_UPDATE, OPPORTUNITY}
    report = kinds[OPPORTUNITY].payload["report"]
    assert report["provider"] == "groq" and report["funnel"] is True
    assert report["baseline_per_mtok"] == pytest.approx(0.75)  # echo-2 at 3:1, no traffic
    assert report["saving_pct"] > 90
    assert "monthly cost at current usage" in kinds[OPPORTUNITY].evidence

    # A second poll of the same feed finds nothing new and proposes nothing again.
    again = await engine.veille.poll()
    assert again.items == () and again.approvals == ()
    assert len(await engine.approvals.pending()) == 2


async def test_an_approved_price_changes_the_matrix_and_survives_a_restart(engine_for):
    engine = await engine_for()
    await engine.provider_views()
    summary = await engine.veille.poll()
    (update,) = [a for a in summary.approvals if a.kind == PRICE_UPDATE]
    before = {(r.provider, r.model): r for r in await engine.comparison_matrix()}
    assert before[("scripted", "echo-2")].input_per_mtok == 0.5
    await engine.approvals.decide(update.id, approve=True)
    after = {(r.provider, r.model): r for r in await engine.comparison_matrix()}
    row = after[("scripted", "echo-2")]
    assert (row.input_per_mtok, row.output_per_mtok, row.price_source) == (0.25, 0.75, "veille")
    # The router prices calls with it at once.
    outcome = await engine.ask("hello", provider="scripted", model="echo-2")
    assert outcome.error is None, outcome.error.message
    usage = outcome.result.usage
    assert outcome.record.cost.usd == pytest.approx(
        (usage.input_tokens * 0.25 + usage.output_tokens * 0.75) / 1e6)
    await engine.stop()

    engine = await engine_for()
    row = {(r.provider, r.model): r for r in await engine.comparison_matrix()}[
        ("scripted", "echo-2")]
    assert row.price_source == "veille" and row.input_per_mtok == 0.25


async def test_the_funnel_ends_with_the_provider_in_routing_at_the_announced_price(
        engine_for, scripted):
    engine = await engine_for()
    await engine.provider_views()
    summary = await engine.veille.poll()
    (offer,) = [a for a in summary.approvals if a.kind == OPPORTUNITY]
    await engine.approvals.decide(offer.id, approve=True)
    assert "groq" not in engine.router.routable

    # The provider bills more than announced: the sandbox test fails, nothing is routed.
    scripted.script("billed:0.001")
    check = await engine.inject_key("groq", TEST_KEY)
    assert check.state is KeyCheckState.FAILED, check.reason
    assert "more than announced" in check.reason

    # As announced (6 tokens in at $0.02/M, 7 out at $0.05/M): awaiting the last approval.
    scripted.script("billed:0.00000047")
    check = await engine.test_key("groq")
    assert check.state is KeyCheckState.AWAITING_APPROVAL, check.reason
    assert "as announced" in check.reason
    (activation,) = [a for a in await engine.approvals.pending() if a.kind == ACTIVATE_KEY]
    assert "announced price" in activation.proposed_action
    await engine.approvals.decide(activation.id, approve=True)

    assert "groq" in engine.router.routable
    matrix = {(r.provider, r.model): r for r in await engine.comparison_matrix()}
    groq = matrix[("groq", "llama-3.1-8b-instant")]
    assert (groq.input_per_mtok, groq.output_per_mtok, groq.price_source) == (
        0.02, 0.05, "veille")
    assert await engine.store.setting("announced:groq") is None


async def test_sources_added_from_the_command_line(engine_for, tmp_path, feed):
    engine = await engine_for()
    other = tmp_path / "status.json"
    other.write_text('{"page": {"name": "Scripted"}, "status": {"indicator": "major", '
                     '"description": "Major outage"}, "components": [], "incidents": '
                     '[{"name": "API unavailable", "impact": "major", "status": '
                     '"investigating", "components": []}]}', encoding="utf-8")
    source = await engine.veille.add_source(str(other), provider="scripted")
    assert (source.kind, source.name) == ("status", "status")
    summary = await engine.veille.poll(only=[source])
    (item,) = summary.items
    assert "API unavailable" in item.title and item.label == "outage"
    with pytest.raises(UsageError, match="already watched"):
        await engine.veille.add_source(str(feed))
    with pytest.raises(UsageError, match="no such file"):
        await engine.veille.add_source(str(tmp_path / "missing.xml"))
    with pytest.raises(UsageError, match="only http"):
        await engine.veille.add_source("ftp://example.com/feed.xml")
    names = [s.name for s in await engine.veille.statuses()]
    assert names == ["news", "status"]
    await engine.veille.remove_source("status")
    assert [s.name for s in await engine.veille.statuses()] == ["news"]


async def test_a_broken_source_is_reported_and_the_others_still_read(engine_for, tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<rss><channel><title>cut off", encoding="utf-8")
    engine = await engine_for({"name": "broken", "path": broken},
                              {"name": "gone", "url": "http://127.0.0.1:9/feed.xml"})
    summary = await engine.veille.poll()
    by_name = {s.name: s for s in summary.sources}
    assert by_name["news"].outcome == "new" and by_name["news"].new_items == 4
    assert by_name["broken"].outcome == "error" and by_name["broken"].error
    assert by_name["gone"].outcome == "error" and "connect" in by_name["gone"].error
    assert "\n" not in by_name["broken"].error
    assert summary.errors == 2
