"""A real HTTP server on 127.0.0.1 serving feeds and status pages, for tests and benchmarks.

Standard library only (a loopback.ThreadedServer, like scripted_server.py). Each path serves a
body registered with ``serve()``: with its own ETag and Last-Modified validators, answering
304 to a matching If-None-Match (or, without one, a fresh enough If-Modified-Since), and
optionally slow, failing or without a declared length::

    with FeedServer() as feeds:
        url = feeds.serve("/news.xml", body)                      # ETag + Last-Modified
        feeds.serve("/lm.xml", body, etag=False)                  # Last-Modified only
        feeds.serve("/slow.xml", body, delay_s=0.05)              # a delay before the head
        feeds.serve("/boom.xml", b"oops", status=500)             # an error status
        feeds.serve("/big.xml", body, declare_length=False)       # chunked, no length
        urls = feeds.serve_many(100, items=20, slow_every=4, delay_s=0.05)  # /feed/<n>.xml
        feeds.hang_url                                            # never answers

Unknown paths are 404. Every request is recorded (``requests``); ``hits(path)`` counts the
requests for a path and ``not_modified(path)`` the 304s among them, so a test can check
that a conditional GET really went out and was answered 304.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support import loopback

# Every Last-Modified is this instant unless a route says otherwise: a fixed date keeps
# If-Modified-Since comparisons independent of when the test runs.
DEFAULT_MODIFIED_TS = 1_762_248_600.0  # 2025-11-04 09:30:00 UTC


@dataclass(frozen=True, slots=True)
class Route:
    body: bytes
    content_type: str
    status: int
    etag: str | None
    last_modified_ts: float | None
    delay_s: float
    declare_length: bool


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    if_none_match: str | None
    if_modified_since: str | None
    accept: str | None
    status: int  # what the server answers (0: nothing, the request hangs until stop())
    received: float


class _HTTPServer(loopback.QuietHTTPServer):
    # Quiet: a client that hung up mid-body (as "too large" does) is not news.
    request_queue_size = 512  # the benchmark opens a hundred connections at once

    owner: FeedServer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        route = owner._route(path)
        if path == FeedServer.HANG_PATH:
            status = 0
        elif route is None:
            status = 404
        else:
            status = 304 if route.status == 200 and _unchanged(route, inm, ims) else route.status
        # Recorded before answering, so a client that has its answer finds it recorded.
        owner._record(Request(path, inm, ims, self.headers.get("Accept"), status, time.time()))
        if route is None or (route.delay_s and owner.stopping.wait(route.delay_s)):
            if status == 404:
                self._send(404, b"not found", "text/plain")
            else:  # a hang, or a delay cut short by stop(): no answer at all
                owner.stopping.wait()
                self.close_connection = True
            return
        self._send(status, b"" if status == 304 else route.body, route.content_type, route,
                   declare_length=route.declare_length)

    def _send(self, status: int, body: bytes, content_type: str, route: Route | None = None,
              *, declare_length: bool = True) -> None:
        self.send_response(status)
        if status != 304:
            self.send_header("Content-Type", content_type)
        if route is not None and route.etag is not None:
            self.send_header("ETag", route.etag)
        if route is not None and route.last_modified_ts is not None:
            self.send_header("Last-Modified", formatdate(route.last_modified_ts, usegmt=True))
        chunked = status != 304 and not declare_length
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if chunked:
                for start in range(0, len(body), 65_536):
                    piece = body[start:start + 65_536]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            elif status != 304:
                self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (too large), as it may


def _unchanged(route: Route, inm: str | None, ims: str | None) -> bool:
    """RFC 9110: If-None-Match decides when present; else If-Modified-Since."""
    if inm is not None:
        if route.etag is None:
            return False
        tags = {tag.strip().removeprefix("W/") for tag in inm.split(",")}
        return "*" in tags or route.etag.removeprefix("W/") in tags
    if ims is not None and route.last_modified_ts is not None:
        try:
            since = parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError):
            return False
        return int(route.last_modified_ts) <= since
    return False


def feed_xml(name: str, items: int, *, base: str = "https://news.example") -> bytes:
    """A realistic RSS 2.0 feed: `items` news items about LLM prices, some HTML in each."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0">\n<channel>\n'
        f"<title>{name} news</title>\n<link>{base}/{name}</link>\n"
        f"<description>Releases and pricing from {name}.</description>\n"
    ]
    for i in range(items):
        day = 1 + i % 28
        parts.append(
            "<item>\n"
            f"<title>{name}: model-{i} now ${0.05 + i / 100:.2f} per million input tokens"
            "</title>\n"
            f"<link>{base}/{name}/posts/{i}?utm_source=rss</link>\n"
            f'<guid isPermaLink="false">{name}-{i}</guid>\n'
            f"<pubDate>Tue, {day:02d} Oct 2025 09:{i % 60:02d}:00 GMT</pubDate>\n"
            "<description><![CDATA[<p>Starting today <strong>model-"
            f"{i}</strong> costs ${0.05 + i / 100:.2f} per million input tokens and "
            f"${0.20 + i / 50:.2f} per million output tokens.</p><p>Batch jobs get 50% "
            "off; cached prompt prefixes are billed at a tenth of the input rate. "
            "Rate limits are unchanged.</p>]]></description>\n</item>\n"
        )
    parts.append("</channel>\n</rss>\n")
    return "".join(parts).encode()


class FeedServer(loopback.ThreadedServer):
    """In-process feed server; binds in __init__ so ``url`` is known before start()."""

    HANG_PATH = "/hang"
    handler = _Handler
    server_class = _HTTPServer
    thread_name = "feed-server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[Request] = []
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        super().__init__(host, port)

    @property
    def hang_url(self) -> str:
        return self.url + self.HANG_PATH

    def serve(self, path: str, body: bytes, *,
              content_type: str = "application/rss+xml; charset=utf-8", status: int = 200,
              etag: bool | str = True, last_modified: bool | float = True,
              delay_s: float = 0.0, declare_length: bool = True) -> str:
        """Serve body at path (replacing what was there); returns its URL.

        etag: True for one derived from the body, a string for that one, False for none.
        last_modified: True for DEFAULT_MODIFIED_TS, a timestamp, or False for none.
        """
        if etag is True:
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if last_modified is True:
            last_modified = DEFAULT_MODIFIED_TS
        route = Route(body, content_type, status, etag or None,
                      None if last_modified is False else float(last_modified), delay_s,
                      declare_length)
        with self._lock:
            self._routes[path] = route
        return self.url + path

    def serve_many(self, count: int, *, items: int = 20, slow_every: int = 0,
                   delay_s: float = 0.0) -> list[str]:
        """/feed/<n>.xml for n in range(count), each a distinct `items`-item feed; every
        slow_every-th one (n % slow_every == 0) waits delay_s before answering."""
        return [
            self.serve(f"/feed/{n}.xml", feed_xml(f"provider{n}", items),
                       delay_s=delay_s if slow_every and n % slow_every == 0 else 0.0)
            for n in range(count)
        ]

    def hits(self, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def not_modified(self, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests
                       if r.status == 304 and (path is None or r.path == path))

    # --- used by the handler ----------------------------------------------------------

    def _route(self, path: str) -> Route | None:
        with self._lock:
            return self._routes.get(path)

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)
