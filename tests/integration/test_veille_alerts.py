"""Veille outage alerts (issue 14): what a source says of its incident comes before the
classifier, and an outage label raises an alert only above the threshold measured on the
held-out set. Real feedparser, real onnxruntime inference, real SQLite, real engine.
"""

from __future__ import annotations

import json
from pathlib import Path

from aetherflow_tui.engine import Engine, config
from aetherflow_tui.engine.events import AlertRaised
from aetherflow_tui.engine.keys import KeyVault
from aetherflow_tui.engine.veille.sources import parse_feed, parse_status
from tests.support.plans import bouquet_text, model_entry, provider_table

# The shape of a Statuspage history feed (history.rss): each entry lists its updates,
# newest first, each led by its state in <strong>.
HISTORY = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Groq Status - Incident History</title>
<item><title>Elevated error rates on llama-3.3-70b-versatile</title>
<link>https://groqstatus.example/incidents/a1</link>
<description><![CDATA[<p><small>Dec <var data-var='date'> 7</var>, <var data-var='time'>15:42
</var> UTC</small><br><strong>Resolved</strong> - This incident has been resolved.</p>
<p><small>Dec 7, 15:10 UTC</small><br><strong>Investigating</strong> - We are investigating
elevated error rates and timeouts on Groq API requests to llama-3.3-70b-versatile.</p>]]>
</description></item>
<item><title>Groq API requests failing with 503</title>
<link>https://groqstatus.example/incidents/a2</link>
<description><![CDATA[<p><small>Dec 8, 09:02 UTC</small><br><strong>Investigating</strong> -
We are investigating 503 errors on all Groq API requests.</p>]]></description>
</item>
</channel></rss>
"""

SLUGGISH = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Forum digest</title>
<item><title>Groq playground feels sluggish</title><link>https://forum.example/t/1</link>
<description></description></item>
</channel></rss>
"""


def bouquet(scripted_url: str, feed: Path) -> str:
    return bouquet_text(
        provider_table("groq", model_entry("llama-3.3-70b-versatile", roles=["chat", "cheap"],
                                           price_in=0.59, price_out=0.79),
                       base_url=scripted_url, key="keyring", canary=False),
        veille={"default_sources": False, "min_confidence": 0.3,
                "sources": [{"name": "groq-history", "path": feed}]})


async def _poll(tmp_path: Path, keyring_backend, scripted, body: str):
    feed = tmp_path / "feed.xml"
    feed.write_text(body, encoding="utf-8")
    engine = Engine(config.parse(bouquet(scripted.url, feed), None), tmp_path / "home",
                    vault=KeyVault(backend=keyring_backend, environ={}))
    await engine.start()
    events = engine.bus.subscribe()
    try:
        summary = await engine.veille.poll()
        threshold = engine.veille.outage_threshold()
    finally:
        await engine.stop()
    alerts = []
    while (event := events.get_nowait()) is not None:
        if isinstance(event, AlertRaised) and event.title.startswith("Veille: outage"):
            alerts.append(event)
    return summary, threshold, alerts


def test_a_statuspage_history_entry_carries_the_state_of_its_newest_update():
    items = parse_feed(HISTORY.encode(), source="groq-history")

    assert [i.status for i in items] == ["resolved", "investigating"]
    # Feed text is still the text: the state is read from the markup, not added to it.
    assert "UTC Resolved - This incident has been resolved." in items[0].summary
    plain = parse_feed(SLUGGISH.encode(), source="forum")
    assert [i.status for i in plain] == [None]


def test_a_status_page_item_carries_its_incident_status():
    body = json.dumps({
        "page": {"name": "Groq"}, "status": {"indicator": "minor", "description": "Minor"},
        "incidents": [{"name": "Slow responses", "impact": "minor", "status": "Monitoring"}],
    }).encode()

    (item,) = parse_status(body, source="groq-status")
    assert item.status == "monitoring"


async def test_an_incident_its_source_says_is_resolved_is_no_outage_and_raises_no_alert(
        tmp_path, keyring_backend, scripted):
    summary, _, alerts = await _poll(tmp_path, keyring_backend, scripted, HISTORY)

    by_title = {i.title: i for i in summary.items}
    resolved = by_title["Elevated error rates on llama-3.3-70b-versatile"]
    assert (resolved.label, resolved.confidence) == ("noise", 1.0)
    assert by_title["Groq API requests failing with 503"].label == "outage"
    assert [a.message for a in alerts] == ["Groq API requests failing with 503 (groq-history)"]


async def test_an_outage_label_below_the_measured_threshold_raises_no_alert(
        tmp_path, keyring_backend, scripted):
    summary, threshold, alerts = await _poll(tmp_path, keyring_backend, scripted, SLUGGISH)

    (item,) = summary.items
    # The premise: the shipped head calls this forum post an outage, but unsure of it.
    assert item.label == "outage" and 0.3 <= item.confidence < threshold, (
        f"{item.label} at {item.confidence:.2f}, threshold {threshold:.2f}: retrained head? "
        "pick another low-confidence outage text")
    assert alerts == []
