"""Veille sources over real sockets: feeds and status pages served from 127.0.0.1, polled with
a real httpx client and parsed by the real feedparser.

Each source's problem must come back as outcome "error" with a one-line reason while the
other sources of the same poll succeed; every field of every item must be safe to show.
"""

from __future__ import annotations

import calendar
import os
import socket
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from aetherflow_tui.engine.veille.sources import (
    FeedItem,
    Source,
    Validators,
    dedupe,
    poll,
    poll_all,
)
from tests.support.feed_server import FeedServer, feed_xml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FEEDS = FIXTURES / "feeds"
STATUS_PAGES = FIXTURES / "statuspages"
NO_VALIDATORS: dict[str, Validators] = {}


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback port that is bound but not listening, so connecting is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/feed.xml"
    sock.close()


def served(feeds: FeedServer, fixture: str, name: str | None = None, **options) -> Source:
    url = feeds.serve(f"/{fixture}", (FEEDS / fixture).read_bytes(), **options)
    return Source(name or fixture, url, "feed")


def ts(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))


def fields(item: FeedItem) -> list[str]:
    return [item.source, item.title, item.summary, item.link or "", item.key]


async def test_rss_and_atom_become_items_with_titles_links_and_dates(feeds, client):
    rss, atom = served(feeds, "rss2.xml", "deepseek-news"), served(feeds, "atom.xml", "groq")

    results = await poll_all(client, [rss, atom], NO_VALIDATORS)

    assert [r.outcome for r in results] == ["new", "new"]
    assert [r.source for r in results] == [rss, atom]
    news, changelog = results[0].items, results[1].items
    assert [i.title for i in news] == [
        "DeepSeek-V3.2 pricing: input now $0.28 per million tokens",
        "Context caching on disk is now enabled by default",
        "Scheduled maintenance window on 12 July",
        "deepseek-reasoner gains function calling",
    ]
    assert {i.source for i in news} == {"deepseek-news"}
    assert news[0].link == ("https://api-docs.deepseek.example/news/news251104/"
                            "?utm_source=rss&utm_medium=feed")
    assert news[0].published_ts == ts("2025-11-04 09:30:00")
    assert news[1].published_ts == ts("2025-08-02 04:00:00")  # +0800 read as UTC
    assert news[3].link is None and news[3].published_ts is None
    assert news[0].summary.startswith("Starting November 5, deepseek-chat costs $0.28 per")
    assert "<" not in news[0].summary

    assert [i.title for i in changelog] == [
        "Llama 4 Scout at $0.11 / M input tokens",  # type="html": tags gone, text kept
        "Batch API discount raised to 50%",
        "Deprecation: gemma2-9b-it retires on 8 October",
    ]
    assert changelog[0].link == "https://console.groq.example/docs/changelog/llama-4-scout"
    assert changelog[0].published_ts == ts("2025-10-21 17:00:00")  # published over updated
    assert changelog[1].published_ts == ts("2025-09-30 08:00:00")  # only updated
    assert changelog[1].summary == ("Batch jobs now cost half the on-demand price, with a "
                                    "24 h completion window.")  # xhtml <content>
    assert all(r.error is None and r.duration_s > 0 for r in results)


async def test_a_second_poll_with_the_validators_is_a_304(feeds, client):
    source = served(feeds, "rss2.xml")

    first = await poll(client, source, Validators())
    second = await poll(client, source, first.validators)

    assert first.outcome == "new" and len(first.items) == 4
    assert first.validators.etag and first.validators.last_modified
    assert second.outcome == "not_modified"
    assert second.items == ()
    assert second.validators == first.validators
    sent = feeds.requests[-1]
    assert sent.if_none_match == first.validators.etag
    assert sent.status == 304
    assert (feeds.hits("/rss2.xml"), feeds.not_modified("/rss2.xml")) == (2, 1)


async def test_a_server_with_last_modified_only_answers_304_to_if_modified_since(feeds,
                                                                                 client):
    source = served(feeds, "atom.xml", etag=False)

    first = await poll(client, source, Validators())
    second = await poll(client, source, first.validators)

    assert first.validators.etag is None
    assert first.validators.last_modified == "Tue, 04 Nov 2025 09:30:00 GMT"
    assert second.outcome == "not_modified"
    assert feeds.requests[-1].if_none_match is None
    assert feeds.requests[-1].if_modified_since == "Tue, 04 Nov 2025 09:30:00 GMT"
    assert feeds.not_modified("/atom.xml") == 1


async def test_a_changed_feed_is_read_again_despite_old_validators(feeds, client):
    source = served(feeds, "rss2.xml")
    first = await poll(client, source, Validators())
    feeds.serve("/rss2.xml", (FEEDS / "syndicated.xml").read_bytes(),
                last_modified=time.time())

    second = await poll(client, source, first.validators)

    assert second.outcome == "new"
    assert second.validators.etag != first.validators.etag
    assert [i.title for i in second.items][2] == (
        "Mistral Medium 3 lands at $0.40 per million input tokens")


async def test_an_unasked_304_is_an_error_not_an_empty_feed(feeds, client):
    url = feeds.serve("/304.xml", b"", status=304)

    result = await poll(client, Source("odd", url, "feed"), Validators())

    assert (result.outcome, result.error) == ("error", "HTTP 304")


async def test_malformed_feeds_fail_with_one_line_while_the_others_succeed(feeds, client):
    sources = [served(feeds, "rss2.xml"), served(feeds, "malformed.xml"),
               served(feeds, "not_a_feed.html", content_type="text/html"),
               served(feeds, "atom.xml")]

    results = await poll_all(client, sources, NO_VALIDATORS)

    assert [r.outcome for r in results] == ["new", "error", "error", "new"]
    for bad in results[1:3]:
        assert bad.items == ()
        assert bad.error is not None and bad.error.startswith("not a feed: "), bad.error
        assert "\n" not in bad.error and len(bad.error) < 200
    assert "undefined entity" in results[1].error
    assert bad.validators == Validators()  # a failed read is not remembered as read


async def test_dead_sources_do_not_stop_the_others(feeds, client, refused_url):
    good = served(feeds, "rss2.xml")
    feeds.serve("/500.xml", b"<html>Internal Server Error</html>", status=500)
    sources = [Source("refused", refused_url, "feed"), Source("500", feeds.url + "/500.xml",
               "feed"), Source("hang", feeds.hang_url, "feed"),
               Source("404", feeds.url + "/gone.xml", "feed"), good]
    started = time.monotonic()

    results = await poll_all(client, sources, NO_VALIDATORS, timeout_s=0.5)

    assert time.monotonic() - started < 3  # the hang cost its timeout, not more
    assert [r.outcome for r in results] == ["error"] * 4 + ["new"]
    reasons = [r.error or "" for r in results[:4]]
    assert reasons[0].startswith("could not connect: "), reasons[0]
    assert reasons[1:] == ["HTTP 500", "timed out after 0.5 s", "HTTP 404"]
    assert len(results[4].items) == 4


async def test_a_feed_over_max_bytes_is_too_large_declared_or_not(feeds, client):
    huge = feed_xml("huge", 5_000)  # about 2.7 MB
    declared = Source("declared", feeds.serve("/big.xml", huge), "feed")
    chunked = Source("chunked", feeds.serve("/big-chunked.xml", huge, declare_length=False),
                     "feed")

    results = await poll_all(client, [declared, chunked], NO_VALIDATORS, max_bytes=1_000_000)

    assert [r.error for r in results] == ["too large (over 1 MB)"] * 2
    assert len(huge) > 2_000_000


async def test_a_large_real_feed_within_the_cap_is_read_and_capped_to_200_items(feeds,
                                                                               client):
    source = Source("big", feeds.serve("/big.xml", feed_xml("big", 1_000)), "feed")

    result = await poll(client, source, Validators())

    assert result.outcome == "new"
    assert len(result.items) == 200
    assert result.items[-1].title.startswith("big: model-199 ")


async def test_a_hostile_feed_is_kept_as_literal_safe_text(feeds, client):
    result = await poll(client, served(feeds, "hostile.xml"), Validators())

    assert result.outcome == "new"  # not well-formed, but it has entries: kept
    items = result.items
    assert len(items) == 4
    for item in items:
        for text in fields(item):
            assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text), text[:80]
        assert len(item.title) <= 300 and len(item.summary) <= 1_000
        assert item.link is None or item.link.startswith("https://")
    first, second, long, relative = items
    # Markup stays data: the UI shows it literally, so it is neither stripped nor escaped.
    assert first.title == ("\\x1b[31mRED ALERT\\x1b[0m [bold red]x[/] [@click=app.quit]quit[/] "
                           "bell\\x07 back\\x08space")
    assert first.link is None  # javascript:
    assert "<" not in first.summary and "alert" not in first.summary
    assert "steal" not in first.summary
    assert first.summary.startswith("Prices cut to $0.01 per million tokens")
    assert "[link=https://evil.example]click[/link]" in first.summary
    assert "\\x1b]8;;https://evil.example" in second.title  # the OSC 8 hyperlink, visible
    assert "sk-proj-" not in second.summary  # a key-shaped string is masked
    assert second.link == "https://Deals.Example/offer?utm_source=spam"
    assert second.key == "url:https://deals.example/offer"
    assert len(long.title) == 300 and long.title.endswith("…")
    assert long.title.startswith("FREE TOKENS [bold]forever[/] ")
    assert long.link is None  # data:
    assert relative.link is None  # no host to resolve it against


async def test_the_same_story_from_two_sources_is_kept_once(feeds, client):
    sources = [served(feeds, "rss2.xml"), served(feeds, "atom.xml"),
               served(feeds, "syndicated.xml")]

    results = await poll_all(client, sources, NO_VALIDATORS)
    everything = [item for r in results for item in r.items]
    kept = dedupe(everything)

    assert len(everything) == 10
    titles = [i.title for i in kept]
    assert len(kept) == 8
    # Same link once normalised (host case, utm_*, ref, fragment, trailing slash).
    assert titles.count("DeepSeek-V3.2 pricing: input now $0.28 per million tokens") == 1
    assert kept[0].source == "rss2.xml"
    # Different links, same title but for punctuation: the first source's copy is kept.
    assert "Batch API discount raised to 50%" in titles
    assert "Batch API discount raised to 50%!" not in titles
    assert titles[-1] == "Mistral Medium 3 lands at $0.40 per million input tokens"


async def test_a_status_page_source_gives_one_item_per_open_incident(feeds, client):
    outage = feeds.serve("/outage.json", (STATUS_PAGES / "major_outage.json").read_bytes(),
                         content_type="application/json")
    fine = feeds.serve("/fine.json", (STATUS_PAGES / "operational.json").read_bytes(),
                       content_type="application/json")
    sources = [Source("openai-status", outage, "status", "openai"),
               Source("quiet", fine, "status")]

    results = await poll_all(client, sources, NO_VALIDATORS)

    assert [r.outcome for r in results] == ["new", "new"]
    assert results[1].items == ()
    items = results[0].items
    assert items and all(i.title.startswith("OpenAI: ") for i in items)
    assert all(i.source == "openai-status" for i in items)
    assert all(i.summary.startswith("Impact ") and "status " in i.summary for i in items)
    assert all(i.key.startswith("status:openai/") for i in items)
    assert feeds.requests[0].accept == "application/json"


async def test_a_broken_status_page_is_an_error_with_the_parse_reason(feeds, client):
    url = feeds.serve("/list.json", (STATUS_PAGES / "list.json").read_bytes(),
                      content_type="application/json")

    result = await poll(client, Source("s", url, "status"), Validators())

    assert result.outcome == "error"
    assert result.error == "not a JSON object but a list"


async def test_local_files_are_sources_for_offline_use(client, tmp_path):
    fifo = tmp_path / "fifo.xml"
    os.mkfifo(fifo)
    big = tmp_path / "big.xml"
    big.write_bytes(feed_xml("big", 3_000))
    sources = [Source("local", str(FEEDS / "rss2.xml"), "feed"),
               Source("status", str(STATUS_PAGES / "major_outage.json"), "status"),
               Source("missing", str(tmp_path / "nope.xml"), "feed"),
               Source("dir", str(tmp_path), "feed"),
               Source("fifo", str(fifo), "feed"),
               Source("big", str(big), "feed"),
               Source("ftp", "ftp://127.0.0.1/feed.xml", "feed")]

    results = await poll_all(client, sources, NO_VALIDATORS, max_bytes=1_000_000)

    assert [r.outcome for r in results] == ["new", "new"] + ["error"] * 5
    assert len(results[0].items) == 4 and results[0].validators == Validators()
    assert results[1].items
    assert [r.error for r in results[2:]] == [
        "no such file", "is a directory", "not a regular file",
        "too large (over 1,000,000 bytes)", "not an http(s) URL or a local path"]


def _entity_bomb(value_len: int, refs: int) -> bytes:
    """One entity of value_len characters referenced refs times ("quadratic blowup")."""
    return ('<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY a "' + "a" * value_len
            + '">\n]>\n<rss version="2.0"><channel><title>t</title><item><title>bomb &a;'
            "</title><link>https://bomb.example/1</link><description>" + "&a;" * refs
            + "</description></item></channel></rss>").encode()


@pytest.mark.parametrize(
    "body",
    [
        (FEEDS / "billion_laughs.xml").read_bytes(),
        # 130 kB that would expand to 3 GB: feedparser alone keeps such an entity.
        _entity_bomb(100_000, 30_000),
        # The same in UTF-16, where a byte search for "<!ENTITY" finds nothing.
        b"\xff\xfe" + _entity_bomb(20_000, 10_000).decode()
        .replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="utf-16"?>')
        .encode("utf-16-le"),
    ],
    ids=["billion laughs", "quadratic", "quadratic in UTF-16"],
)
async def test_entity_expansion_finishes_quickly_in_little_memory(feeds, client, body):
    source = Source("bomb", feeds.serve("/bomb.xml", body), "feed")
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = await poll(client, source, Validators())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert time.monotonic() - started < 10  # tracemalloc slows parsing several times
    assert peak < 60_000_000, peak
    assert result.outcome == "new"
    assert len(result.items) == 1
    assert len(result.items[0].summary) <= 1_000
