"""Veille sources without a network: dedup keys, link normalisation, the feed and status
parsers on fixture bytes, local files and the default sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from aetherflow_tui.engine import config
from aetherflow_tui.engine.veille.sources import (
    FeedItem,
    Source,
    SourceError,
    dedupe,
    default_sources,
    item_key,
    normalise_link,
    normalise_title,
    parse_feed,
    parse_status,
    read_local,
)
from tests.support.feed_server import feed_xml
from tests.support.plans import bouquet_text, provider_table

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FEEDS = FIXTURES / "feeds"
STATUS_PAGES = FIXTURES / "statuspages"


@pytest.mark.parametrize(
    ("link", "normal"),
    [
        ("https://example.com/news/a", "https://example.com/news/a"),
        ("HTTPS://Example.COM/News/A", "https://example.com/News/A"),  # paths keep case
        ("http://www.example.com/a/", "https://example.com/a"),
        ("https://example.com/", "https://example.com"),
        ("https://example.com/a#comments", "https://example.com/a"),
        ("https://example.com/a?utm_source=rss&utm_medium=feed", "https://example.com/a"),
        ("https://example.com/a?UTM_Campaign=x&fbclid=1&gclid=2&ref=hn",
         "https://example.com/a"),
        ("https://example.com/a?b=2&a=1&utm_source=x", "https://example.com/a?a=1&b=2"),
        ("https://example.com/a?id=7&empty=", "https://example.com/a?empty=&id=7"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80/a", "https://example.com/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("https://[2001:DB8::1]/a", "https://[2001:db8::1]/a"),
        ("  https://example.com/a  ", "https://example.com/a"),
    ],
)
def test_links_normalise_to_one_key_per_page(link, normal):
    assert normalise_link(link) == normal


@pytest.mark.parametrize("link", ["javascript:alert(1)", "/relative/path", "mailto:a@b.c",
                                  "data:text/html,x", "http://[::1", "https://h:port/",
                                  "https://", ""])
def test_what_is_no_absolute_http_link_has_no_link_key(link):
    assert normalise_link(link) is None


def test_the_key_prefers_the_link_then_the_id_then_the_title():
    by_link = item_key("https://example.com/a?utm_source=x", "id-1", "Title", source="s")
    by_id = item_key(None, "tag:example.com,2025:a", "Title", source="s")
    by_title = item_key(None, None, "Title", source="s")

    assert by_link == "url:https://example.com/a"
    assert by_id.startswith("id:")
    assert by_title.startswith("title:")
    assert item_key("javascript:x", None, "Title", source="s") == by_title


def test_an_id_that_is_a_url_keys_like_a_link():
    assert (item_key(None, "https://Example.com/a/", "T", source="s")
            == item_key("https://example.com/a", None, "Other", source="t"))


def test_global_ids_match_across_sources_local_ids_do_not():
    assert (item_key(None, "urn:uuid:1225c695", "T", source="a")
            == item_key(None, "urn:uuid:1225c695", "T", source="b"))
    assert item_key(None, "42", "T", source="a") != item_key(None, "42", "T", source="b")
    assert item_key(None, "42", "T", source="a") == item_key(None, " 42 ", "U", source="a")


def test_title_keys_ignore_case_spacing_and_punctuation():
    assert (item_key(None, None, "GPT-5  is out!", source="a")
            == item_key(None, None, "gpt 5 is OUT", source="b"))
    assert normalise_title("Ｆｕｌｌ-width — Title!") == "full width title"


def _item(title: str, key: str, source: str = "s") -> FeedItem:
    return FeedItem(source, title, "", None, None, key)


def test_dedupe_keeps_the_first_of_each_key_in_order():
    items = [_item("One story", "k1", "a"), _item("Two story", "k2"),
             _item("One story again", "k1", "b"), _item("Three story", "k3")]

    assert dedupe(items) == [items[0], items[1], items[3]]


def test_dedupe_collapses_the_same_specific_title_under_different_links():
    items = [_item("Mistral Medium 3 lands at $0.40", "url:a"),
             _item("Mistral medium 3 lands at $0.40!", "url:b"),
             _item("Weekly update", "url:c"), _item("Weekly update", "url:d")]

    kept = dedupe(items)

    # A generic title is not enough to call two links the same news.
    assert kept == [items[0], items[2], items[3]]


def test_parse_feed_never_reads_a_path_named_by_the_body(tmp_path):
    # Given bytes, feedparser would open this file and parse it as the feed.
    local = tmp_path / "secret.xml"
    local.write_bytes(feed_xml("secret", 3))

    with pytest.raises(SourceError) as caught:
        parse_feed(str(local).encode(), source="evil")

    assert caught.value.reason.startswith("not a feed")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty body"),
        (b"  \n ", "empty body"),
        ((FEEDS / "malformed.xml").read_bytes(), "not a feed: <unknown>:6:26: undefined entity"),
        ((FEEDS / "not_a_feed.html").read_bytes(), "not a feed: "),
        (b"<?xml version='1.0'?><config><item>1</item></config>",
         "not a feed: no RSS or Atom root element"),
        (b'{"version": "https://jsonfeed.org/version/1", "items": []}', "not a feed: "),
    ],
)
def test_what_is_not_a_feed_fails_with_one_line(body, reason):
    with pytest.raises(SourceError) as caught:
        parse_feed(body, source="https://example.com/feed.xml")

    assert caught.value.reason.startswith(reason), caught.value.reason
    assert str(caught.value) == f"{caught.value.reason} from https://example.com/feed.xml"


def test_a_feed_with_no_items_is_no_error():
    body = b'<rss version="2.0"><channel><title>Quiet</title></channel></rss>'

    assert parse_feed(body, source="s") == []


def test_a_feed_with_one_bad_character_is_still_read():
    body = (FEEDS / "rss2.xml").read_bytes().replace(b"Scheduled", b"Sched\x01uled")

    items = parse_feed(body, source="s")

    assert len(items) == 4  # not well-formed XML, read by the loose parser
    assert items[2].title == "Sched\\x01uled maintenance window on 12 July"


def test_items_are_capped():
    items = parse_feed(feed_xml("p", 50), source="s", max_items=10)

    assert [i.title.split(" ")[1] for i in items] == [f"model-{n}" for n in range(10)]


def test_an_entry_with_nothing_to_show_is_skipped():
    body = (b'<rss version="2.0"><channel><item><guid>x</guid></item>'
            b"<item><description>Only a &lt;b&gt;summary&lt;/b&gt;</description></item>"
            b"</channel></rss>")

    items = parse_feed(body, source="s")

    assert [(i.title, i.summary) for i in items] == [("Only a summary", "Only a summary")]


def test_parse_status_makes_an_item_of_each_open_incident():
    items = parse_status((STATUS_PAGES / "major_outage.json").read_bytes(), source="o")

    assert items
    for item in items:
        assert item.title.startswith("OpenAI: ")
        assert item.summary.startswith("Impact ")
        assert "affects " in item.summary
        assert item.link is None
        assert item.key == f"status:openai/{item.title.removeprefix('OpenAI: ').casefold()}"
    assert all(i.published_ts is None or i.published_ts > 1.7e9 for i in items)


@pytest.mark.parametrize("fixture", ["operational.json", "resolved_incident.json"])
def test_parse_status_says_nothing_when_nothing_is_open(fixture):
    assert parse_status((STATUS_PAGES / fixture).read_bytes(), source="o") == []


def test_parse_status_keeps_hostile_text_safe():
    items = parse_status((STATUS_PAGES / "hostile.json").read_bytes(), source="o")

    for item in items:
        for text in (item.title, item.summary):
            assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)
            assert len(text) <= 1_000


def test_parse_status_fails_with_the_status_page_reason():
    with pytest.raises(SourceError) as caught:
        parse_status(b"[]", source="o")

    assert caught.value.reason == "not a JSON object but a list"


def test_read_local_reads_bytes_up_to_the_cap(tmp_path):
    path = tmp_path / "feed.xml"
    path.write_bytes(b"x" * 100)

    assert read_local(path, 100) == b"x" * 100
    with pytest.raises(SourceError) as caught:
        read_local(str(path), 99)
    assert str(caught.value) == f"too large (over 99 bytes) from {path}"


def test_read_local_says_when_a_file_is_missing(tmp_path):
    with pytest.raises(SourceError) as caught:
        read_local(tmp_path / "nope.xml", 100)

    assert caught.value.reason == "no such file"


def test_default_sources_cover_the_default_bouquet():
    sources = default_sources(config.load(None))

    assert Source("openai-status", "https://status.openai.com/api/v2/summary.json", "status",
                  "openai") in sources
    assert Source("deepseek-status", "https://status.deepseek.com/api/v2/summary.json",
                  "status", "deepseek") in sources
    assert Source("openai-news", "https://openai.com/news/rss.xml", "feed",
                  "openai") in sources
    assert Source("google-ai-blog", "https://blog.google/technology/ai/rss/", "feed",
                  "gemini") in sources


BOUQUET = bouquet_text(
    provider_table("oai", "gpt-4o-mini", base_url="https://api.openai.com/v1",
                   status_page="https://status.openai.com/api/v2/summary.json"),
    provider_table("oai-eu", "gpt-4o-mini", base_url="https://eu.api.openai.com/v1"),
    provider_table("hf", "m", base_url="https://router.huggingface.co/v1", enabled=False,
                   status_page="https://status.huggingface.co/api/v2/summary.json"),
    provider_table("other", "m", base_url="https://llm.example.com/v1"))


def test_default_sources_follow_hosts_skip_disabled_providers_and_repeat_nothing():
    sources = default_sources(config.parse(BOUQUET, None))

    assert sources == [
        Source("oai-status", "https://status.openai.com/api/v2/summary.json", "status", "oai"),
        Source("openai-news", "https://openai.com/news/rss.xml", "feed", "oai"),
    ]
