"""Veille sources: RSS/Atom feeds and status pages, fetched and parsed as untrusted data.

Every byte comes from somebody else's server or file. Bodies are fetched with bounded time
and size (fetch.bounded_get, conditional GET so an unchanged feed costs one 304) and parsed
off the event loop. Every text field of an item is one bounded line (the summary: HTML
reduced to text) with control sequences made visible; markup such as `[bold]` stays literal
data, since the UI renders it as text. A source's problem becomes a one-line reason, never an
exception out of `poll`: a dead feed never stops the others.

Feed policy:
- feedparser only ever sees a stream of bytes we fetched: given bytes or a str, it first
  tries to open them as a path (and a str as a URL), so a body naming a local file would
  be read from disk.
- Entity declarations are defused before parsing: feedparser's fallback (loose) parser
  expands the ones it deems safe without limit, so a 100 kB body can become 100 MB.
- "bozo" (not well-formed) with no entries is an error; bozo with entries is kept: a feed
  with one bad character is still news, and the loose parser reads what it can.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import html
import io
import re
import stat
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import statuspage
from ..fetch import FetchError, bounded_get
from ..text import excerpt

if TYPE_CHECKING:
    import httpx

    from ..config import Bouquet

TITLE_MAX = 300
SUMMARY_MAX = 1_000
LINK_MAX = 2_048
# Raw text is cut to this many characters before tags are stripped: bounds the work on a
# hostile multi-megabyte field; the kept text is at most SUMMARY_MAX anyway.
_RAW_MAX = 50_000
# Titles shorter than this once normalised ("Update", "Release notes") are too generic for
# two sources' items to be taken for the same news on the title alone.
_MIN_SHARED_TITLE = 16

_ACCEPT = {
    "feed": "application/atom+xml, application/rss+xml, application/xml;q=0.9, "
            "text/xml;q=0.9, */*;q=0.1",
    "status": "application/json",
}
# Query parameters that say who sent the reader, not what the page is.
_TRACKING = frozenset({
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid", "igshid",
    "mc_cid", "mc_eid", "_hsenc", "_hsmi", "mkt_tok", "ref", "ref_src", "ref_url", "spm",
})
_TAG = re.compile(r"<[^<>]*>")  # [^<>]: each scan stops at the next "<", so linear time
_WORD = re.compile(r"\w+")
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f]")  # whitespace and controls, never in a URL
# A feed's own identifier that is meant to be unique everywhere, not just within the feed.
_GLOBAL_ID = re.compile(r"(?i)(tag|urn):")

# The head of a Statuspage history entry (history.rss / history.atom): its newest update's
# state in <strong>, after the update's date. Bounded repetition only: hostile HTML costs
# a short scan.
_STATUS_UPDATE = re.compile(
    r"\s{0,20}(?:<p>\s{0,20})?(?:<small>[^<>]{0,200}(?:<var[^<>]{0,100}>[^<>]{0,50}</var>"
    r"[^<>]{0,50}){0,4}</small>\s{0,20})?(?:<br\s{0,5}/?>\s{0,20})?"
    r"<strong>\s{0,5}([a-z][a-z ]{0,29}?)\s{0,5}</strong>\s{0,5}-", re.I)
_UPDATE_STATES = frozenset({"investigating", "identified", "monitoring", "update", "resolved",
                            "postmortem", "scheduled", "in progress", "verifying", "completed"})

# Well-known public feeds, by the host of a provider's base_url. These URLs could not be
# verified from here (no network): each was public when this table was written.
_FEEDS: tuple[tuple[str, str, str], ...] = (
    ("openai.com", "openai-news", "https://openai.com/news/rss.xml"),
    ("googleapis.com", "google-ai-blog", "https://blog.google/technology/ai/rss/"),
    ("huggingface.co", "huggingface-blog", "https://huggingface.co/blog/feed.xml"),
)


# A source could not be read or parsed; `reason` says why in one line. One class with
# fetch's (and statuspage's).
SourceError = FetchError


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    location: str  # an http(s) URL, or a local file path (offline use)
    kind: Literal["feed", "status"]
    provider: str | None = None  # the provider it speaks about, when it is one provider's


@dataclass(frozen=True, slots=True)
class FeedItem:
    source: str
    title: str  # one line, at most TITLE_MAX characters
    summary: str  # text (HTML stripped), one line, at most SUMMARY_MAX characters
    link: str | None  # an absolute http(s) URL, or None
    published_ts: float | None  # epoch seconds
    key: str  # the same news gets the same key whichever source carried it (see item_key)
    # The incident's state as the source itself gives it (a status page's incident status,
    # the newest update of a Statuspage history feed entry), lower case; None if it says none.
    status: str | None = None


@dataclass(frozen=True, slots=True)
class Validators:
    """What the server said identifies the body we have: sent back for a conditional GET."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class PollResult:
    source: Source
    # new: a body was read and parsed (its items may include ones seen before; dedupe by
    # key); not_modified: the server answered 304; error: see `error`.
    outcome: Literal["new", "not_modified", "error"]
    items: tuple[FeedItem, ...]
    # For the next poll. After an error, the ones the poll was given: a failed read must
    # not make the next one conditional on a body we never parsed.
    validators: Validators
    error: str | None  # the one-line reason when outcome is "error"
    duration_s: float


# -- parsing -------------------------------------------------------------------------------

def parse_feed(body: bytes, *, source: str, max_items: int = 200) -> list[FeedItem]:
    """An RSS or Atom body as items (at most max_items); SourceError if it is not a feed."""
    # Imported here: feedparser costs ~45 ms to import, and only a poll needs it.
    import feedparser
    from feedparser.encodings import convert_to_utf8

    if not body.strip():
        raise SourceError("empty body", source)
    try:
        # The decoding feedparser does first, done here so that the defusing below sees the
        # text feedparser will see, whatever the body's encoding (UTF-16, EBCDIC, ...).
        utf8 = convert_to_utf8({}, body, {})
        # "<!-ENTITY" is no declaration to either parser, and the replacement cannot form a
        # new "<!ENTITY" with its neighbours. Undeclared references stay literal text.
        defused = utf8.replace(b"<!ENTITY", b"<!-ENTITY")
        # sanitize_html drops <script> and <style> with their content, which stripping tags
        # alone would leave as text; resolve_relative_uris would only rewrite links inside
        # HTML that is reduced to text anyway.
        parsed = feedparser.parse(io.BytesIO(defused), sanitize_html=True,
                                  resolve_relative_uris=False)
    # feedparser reports bad input in `bozo`; an exception is a bug it hit on a hostile
    # body, and one hostile body must not take the poll down.
    except Exception as exc:
        raise SourceError(f"feed parser failed: {type(exc).__name__}", source) from None
    entries = parsed.get("entries") or []
    # No version: feedparser found no RSS or Atom root (an HTML page, JSON, some other XML),
    # even if it saw <item> elements somewhere.
    if not parsed.get("version") or (parsed.get("bozo") and not entries):
        why = excerpt(str(parsed.get("bozo_exception") or ""), 120) if parsed.get("bozo") else ""
        raise SourceError(f"not a feed: {why or 'no RSS or Atom root element'}", source)
    items = (_item(entry, source) for entry in entries[:max_items])
    return [item for item in items if item is not None]


def parse_status(body: bytes, *, source: str) -> list[FeedItem]:
    """A Statuspage summary.json as one item per unresolved incident (none when all is fine)."""
    try:
        report = statuspage.parse(body, source=source)
    except statuspage.StatusPageError as exc:
        raise SourceError(exc.reason, source) from None
    items = []
    for incident in report.incidents:
        affects = ", ".join(incident.components) or "all components"
        items.append(FeedItem(
            source=source,
            title=excerpt(f"{report.page}: {incident.name}", TITLE_MAX),
            summary=excerpt(f"Impact {incident.impact}, status {incident.status}; "
                            f"affects {affects}", SUMMARY_MAX),
            link=None,
            published_ts=_iso_ts(incident.updated_at),
            key=f"status:{report.page.casefold()}/{incident.name.casefold()}",
            status=incident.status.casefold(),
        ))
    return items


def read_local(path: str | Path, max_bytes: int) -> bytes:
    """A local source's bytes; SourceError if missing, unreadable or over max_bytes."""
    where = Path(path).expanduser()
    label = str(path)
    try:
        mode = where.stat().st_mode
        if stat.S_ISDIR(mode):
            raise SourceError("is a directory", label)
        # A FIFO or a device would block or never end: only plain files are sources.
        if not stat.S_ISREG(mode):
            raise SourceError("not a regular file", label)
        with where.open("rb") as file:
            data = file.read(max_bytes + 1)  # one byte over tells a file that is too large
    except FileNotFoundError:
        raise SourceError("no such file", label) from None
    except PermissionError:
        raise SourceError("permission denied", label) from None
    except OSError as exc:
        raise SourceError(f"unreadable: {excerpt(exc.strerror or str(exc), 120)}",
                          label) from None
    if len(data) > max_bytes:
        raise SourceError(f"too large (over {max_bytes:,} bytes)", label)
    return data


# -- keys and dedup ------------------------------------------------------------------------

def normalise_link(url: str) -> str | None:
    """The link as a dedup key: None unless it is an absolute http(s) URL.

    Scheme and host are folded (http and https, "www." or not: the same page), fragment,
    tracking parameters (utm_*, fbclid, ...) and a trailing slash dropped, the remaining
    query parameters sorted.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # a malformed IPv6 host or a port that is no number
        return None
    host = (parts.hostname or "").removeprefix("www.")
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port not in (80, 443):
        host = f"{host}:{port}"
    query = sorted((name, value) for name, value in parse_qsl(parts.query,
                                                              keep_blank_values=True)
                   if not _is_tracking(name))
    return urlunsplit(("https", host, parts.path.rstrip("/"), urlencode(query), ""))


def item_key(link: str | None, entry_id: str | None, title: str, *, source: str) -> str:
    """The dedup key: the normalised link, else the entry's id, else a hash of the title.

    An id meant to be unique everywhere (tag:, urn:, a URL) is taken as is; any other id is
    unique only within its feed ("1", "42"), so it is scoped to the source.
    """
    if link and (normal := normalise_link(link)):
        return f"url:{normal}"
    entry_id = (entry_id or "").strip()
    if entry_id:
        if normal := normalise_link(entry_id):
            return f"url:{normal}"
        scoped = entry_id if _GLOBAL_ID.match(entry_id) else f"{source}\x1f{entry_id}"
        return f"id:{_sha256(scoped)}"
    return f"title:{_sha256(normalise_title(title))}"


def normalise_title(title: str) -> str:
    """Words only, case-folded: "GPT-5 is out!" and "gpt 5 is OUT" read the same."""
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", title).casefold()))


def dedupe(items: Iterable[FeedItem]) -> list[FeedItem]:
    """The first item of each key, also collapsing items with the same (specific) title:
    the same news syndicated under different links."""
    seen_keys: set[str] = set()
    seen_titles: set[str] = set()
    kept = []
    for item in items:
        title = normalise_title(item.title)
        shared = len(title) >= _MIN_SHARED_TITLE
        if item.key in seen_keys or (shared and title in seen_titles):
            continue
        seen_keys.add(item.key)
        if shared:
            seen_titles.add(title)
        kept.append(item)
    return kept


# -- polling -------------------------------------------------------------------------------

async def poll(client: httpx.AsyncClient, source: Source, validators: Validators, *,
               timeout_s: float = 10.0, max_bytes: int = 5_000_000) -> PollResult:
    """Read and parse one source; its problems come back as outcome "error", never raised."""
    started = time.perf_counter()
    try:
        if _is_http(source.location):
            fetched = await bounded_get(
                client, source.location, timeout_s=timeout_s, max_bytes=max_bytes,
                accept=_ACCEPT[source.kind], etag=validators.etag,
                last_modified=validators.last_modified)
            fresh = Validators(fetched.etag, fetched.last_modified)
            if fetched.status == 304:
                return PollResult(source, "not_modified", (), fresh, None,
                                  time.perf_counter() - started)
            body = fetched.body
        elif "://" in source.location:
            raise SourceError("not an http(s) URL or a local path", source.location)
        else:
            body = await asyncio.to_thread(read_local, source.location, max_bytes)
            fresh = Validators()
        parse = parse_feed if source.kind == "feed" else parse_status
        # Off the loop: feedparser on a 5 MB body takes a while, and the cockpit must not
        # freeze meanwhile.
        items = await asyncio.to_thread(parse, body, source=source.name)
    except SourceError as exc:  # FetchError: the same class
        return PollResult(source, "error", (), validators, exc.reason,
                          time.perf_counter() - started)
    return PollResult(source, "new", tuple(items), fresh, None, time.perf_counter() - started)


async def poll_all(client: httpx.AsyncClient, sources: Sequence[Source],
                   validators: Mapping[str, Validators], *, concurrency: int = 32,
                   timeout_s: float = 10.0, max_bytes: int = 5_000_000) -> list[PollResult]:
    """Poll every source, at most `concurrency` at once; results in source order.

    validators maps a source's name to what its last poll returned (absent: none yet).
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(source: Source) -> PollResult:
        async with gate:
            return await poll(client, source, validators.get(source.name, Validators()),
                              timeout_s=timeout_s, max_bytes=max_bytes)

    return list(await asyncio.gather(*(one(source) for source in sources)))


def default_sources(bouquet: Bouquet) -> list[Source]:
    """The status page of each enabled provider that declares one, and the built-in feeds
    of the providers the bouquet uses (matched by their base_url's host)."""
    sources: list[Source] = []
    locations: set[str] = set()

    def add(source: Source) -> None:
        if source.location not in locations:
            locations.add(source.location)
            sources.append(source)

    enabled = [spec for spec in bouquet.providers.values() if spec.enabled]
    for spec in enabled:
        if spec.status_page:
            add(Source(f"{spec.id}-status", spec.status_page, "status", spec.id))
    for spec in enabled:
        host = urlsplit(spec.base_url or "").hostname or ""
        for domain, name, url in _FEEDS:
            if host == domain or host.endswith(f".{domain}"):
                add(Source(name, url, "feed", spec.id))
    return sources


# -- helpers -------------------------------------------------------------------------------

def _item(entry: Any, source: str) -> FeedItem | None:
    """One feed entry made safe, or None when it carries nothing to show."""
    # Atom's <content> when there is no <summary>.
    contents = entry.get("content")
    summary = _text(entry.get("summary_detail")) or _text(contents[0] if contents else None)
    title = _text(entry.get("title_detail"))
    link = _safe_link(entry.get("link"))
    if not (title or summary or link):
        return None
    title = excerpt(title or summary or link or "", TITLE_MAX)
    entry_id = entry.get("id")
    return FeedItem(
        source=source,
        title=title,
        summary=excerpt(summary, SUMMARY_MAX),
        link=link,
        published_ts=_struct_ts(entry.get("published_parsed") or entry.get("updated_parsed")),
        key=item_key(link, entry_id if isinstance(entry_id, str) else None, title,
                     source=source),
        status=_update_status(entry.get("summary_detail"))
        or _update_status(contents[0] if contents else None),
    )


def _update_status(detail: Any) -> str | None:
    """The state a Statuspage history entry ("<small>date</small><br><strong>Resolved</strong>
    - ...", newest update first) gives its incident, lower case; None for any other entry."""
    if not isinstance(detail, Mapping) or not isinstance(detail.get("value"), str):
        return None
    found = _STATUS_UPDATE.match(detail["value"][:_RAW_MAX])
    status = " ".join(found.group(1).split()).casefold() if found else None
    return status if status in _UPDATE_STATES else None


def _text(detail: Any) -> str:
    """A feedparser text construct ({"type", "value"}) as plain text: HTML (which feedparser
    has sanitised) reduced to its text, plain text left as it is."""
    if not isinstance(detail, Mapping) or not isinstance(detail.get("value"), str):
        return ""
    value = detail["value"][:_RAW_MAX]
    if "html" in str(detail.get("type", "")):  # text/html, application/xhtml+xml
        value = html.unescape(_TAG.sub(" ", value))
    return value


def _safe_link(value: Any) -> str | None:
    """An absolute http(s) URL, or None (javascript:, data:, relative, malformed...)."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url or len(url) > LINK_MAX or _URL_FORBIDDEN.search(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


def _struct_ts(value: Any) -> float | None:
    """feedparser's parsed date (a UTC struct_time) as epoch seconds."""
    if value is None:
        return None
    try:
        return float(calendar.timegm(value))
    except (TypeError, ValueError, OverflowError):
        return None


def _iso_ts(value: str | None) -> float | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:  # Statuspage writes UTC; a zone-less time is taken as UTC too
        when = when.replace(tzinfo=UTC)
    try:
        return when.timestamp()
    except (ValueError, OverflowError):
        return None


def _is_http(location: str) -> bool:
    # The scheme alone, not urlsplit: a malformed URL must reach the fetch and fail there
    # with its reason, not be taken for a path.
    return location.split(":", 1)[0].lower() in ("http", "https")


def _is_tracking(name: str) -> bool:
    name = name.lower()
    return name.startswith("utm_") or name in _TRACKING


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
