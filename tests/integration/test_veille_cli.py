"""`aetherflow veille ...` as the operator runs it: the installed command, real files, the
real classifier, JSON on stdout, one-line errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_cli import run
from tests.support.plans import bouquet_text, model_entry, provider_table

FEED = """<?xml version="1.0"?><rss version="2.0"><channel><title>news</title>
<item><title>Groq cuts Llama 3.1 8B Instant to $0.04/M input and $0.07/M output</title>
<link>https://news.example/groq-cut</link>
<description>The new prices apply from today to every account.</description></item>
<item><title>Mistral API: elevated error rates and timeouts</title>
<link>https://news.example/mistral-incident</link>
<description>We are investigating failed requests on the chat completions API.
</description></item>
</channel></rss>"""


def offline_config(tmp_path: Path, cli_env: dict[str, str]) -> dict[str, str]:
    """The embedded bouquet's providers, no default sources: nothing leaves the machine."""
    config = tmp_path / "bouquet.toml"
    config.write_text(bouquet_text(
        provider_table("groq", model_entry("llama-3.1-8b-instant", roles=["fast", "cheap"],
                                           price_in=0.05, price_out=0.08),
                       base_url="http://127.0.0.1:9/v1",
                       console_url="https://console.groq.example/keys"),
        veille={"default_sources": False}), encoding="utf-8")
    return {**cli_env, "AETHERFLOW_CONFIG": str(config)}


def test_classify_jsonl_in_order_with_prices(cli_env):
    lines = [{"title": "Groq cuts Llama 3.1 8B Instant to $0.04/M input and $0.07/M output",
              "summary": "Effective today for every account."},
             {"title": "Elevated error rates on Chat Completions",
              "summary": "We are investigating increased latency and 503 errors."},
             {"title": "Join our developer meetup in Lyon", "summary": "Pizza and talks."}]
    done = run(cli_env, "veille", "classify", "--jsonl",
               stdin="\n".join(json.dumps(line) for line in lines) + "\n")
    assert done.returncode == 0, done.stderr
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert [o["label"] for o in out] == ["price_change", "outage", "noise"]
    assert all(0 < o["confidence"] <= 1 for o in out)
    assert out[0]["prices"] == [{"provider": "groq", "model": "llama-3.1-8b-instant",
                                 "input_per_mtok": 0.04, "output_per_mtok": 0.07}]
    assert out[1]["prices"] == [] and set(out[0]) == {"label", "confidence", "prices"}


def test_classify_refuses_bad_lines_with_their_number(cli_env):
    done = run(cli_env, "veille", "classify", "--jsonl",
               stdin='{"title": "fine"}\nnot json\n')
    assert done.returncode == 2
    assert done.stderr.startswith("aetherflow: error: stdin line 2: not JSON")
    assert len(done.stderr.splitlines()) == 1
    done = run(cli_env, "veille", "classify", stdin='{"title": 3}\n')
    assert done.returncode == 2 and "stdin line 1: needs a string title" in done.stderr


def test_add_poll_items_and_report(tmp_path, cli_env):
    env = offline_config(tmp_path, cli_env)
    feed = tmp_path / "news.xml"
    feed.write_text(FEED, encoding="utf-8")
    added = run(env, "veille", "add", str(feed), "--name", "local-news", "--json")
    assert added.returncode == 0, added.stderr
    polled = json.loads(added.stdout)
    assert [s["outcome"] for s in polled["sources"]] == ["new"]
    assert sorted(i["label"] for i in polled["items"]) == ["outage", "price_change"]
    # The price cut beats the bouquet's price for a provider with no key: an opportunity.
    assert [a["kind"] for a in polled["approvals"]] == ["veille_opportunity"]

    again = run(env, "veille", "poll", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["items"] == []

    items = json.loads(run(env, "veille", "items", "--label", "outage", "--json").stdout)
    assert [i["title"] for i in items] == ["Mistral API: elevated error rates and timeouts"]
    bad = run(env, "veille", "items", "--label", "rumour")
    assert bad.returncode == 2 and "unknown label 'rumour'" in bad.stderr

    report = json.loads(run(env, "veille", "report", "--json").stdout)
    (opportunity,) = report["opportunities"]
    facts = opportunity["payload"]["report"]
    assert facts["provider"] == "groq" and facts["funnel"] is True
    assert report["items_7d"]["price_change"] == 1
    assert [r["provider"] for r in report["matrix"]] == ["groq"]
    human = run(env, "veille", "report")
    assert human.returncode == 0 and "monthly cost at current usage" in human.stdout


def test_a_failing_source_is_exit_1_and_named(tmp_path, cli_env):
    env = offline_config(tmp_path, cli_env)
    broken = tmp_path / "broken.xml"
    broken.write_text("<html><body>not a feed</body></html>", encoding="utf-8")
    assert run(env, "veille", "add", str(broken), "--name", "broken").returncode == 1
    done = run(env, "veille", "sources", "--json")
    (source,) = json.loads(done.stdout)
    assert source["outcome"] == "error" and source["error"].startswith("not a feed")
    missing = run(env, "veille", "add", str(tmp_path / "nope.xml"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
