"""fetch() against a real HTTP server on 127.0.0.1 playing good, broken and hostile status pages.

Nothing in httpx is patched: every case goes over real sockets. Each failure must come back
as a StatusPageError with the reason an operator would need, and never as anything else.
"""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from aetherflow_tui.engine.statuspage import StatusLevel, StatusPageError, fetch, parse
from tests.support import loopback

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "statuspages"
MAX_BYTES = 100_000
# Generous: these endpoints never finish on their own before it, so a fetch that does not
# enforce its timeout fails the test instead of hanging it.
HOLD_S = 5.0


class _Handler(BaseHTTPRequestHandler):
    server: loopback.QuietHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean

    def do_GET(self) -> None:
        path = self.path
        if path.startswith("/pages/"):
            self._send(200, (FIXTURES / path.removeprefix("/pages/")).read_bytes())
        elif path.startswith("/status/"):
            self._send(int(path.removeprefix("/status/")), b"<html>Service Unavailable</html>",
                       "text/html")
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/pages/operational.json")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/hang":
            self.server.owner.stopping.wait(HOLD_S)  # no byte at all until the test ends
        elif path == "/dribble":
            self._dribble()
        elif path == "/huge-declared":
            # Declares too much, sends a little, then holds: only a client that checks the
            # declared length fails fast with "too large" instead of timing out.
            self._head(200, MAX_BYTES + 1)
            self.wfile.write(b'{"status": ')
            self.wfile.flush()
            self.server.owner.stopping.wait(HOLD_S)
        elif path == "/huge-chunked":
            self._endless_chunks()
        elif path == "/gzip-bomb":
            self._send(200, gzip.compress(b" " * (MAX_BYTES * 20)), encoding="gzip")
        elif path == "/drop":
            self._head(200, 1_000)
            self.wfile.write(b'{"status": {"indicator": ')
            self.wfile.flush()
            self.close_connection = True  # the socket closes with 975 bytes still owed
        else:
            self._send(404, b"not found", "text/plain")

    def _head(self, code: int, length: int | None, content_type: str = "application/json",
              encoding: str | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if encoding:
            self.send_header("Content-Encoding", encoding)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, code: int, body: bytes, content_type: str = "application/json",
              encoding: str | None = None) -> None:
        self._head(code, len(body), content_type, encoding)
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _dribble(self) -> None:
        """A byte every 20 ms: each read is quick, the whole body never arrives in time."""
        self._head(200, None)
        try:
            deadline = time.monotonic() + HOLD_S
            while time.monotonic() < deadline and not self.server.owner.stopping.wait(0.02):
                self._chunk(b" ")
            self._chunk(b"{}")
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client gave up, as it should

    def _endless_chunks(self) -> None:
        """64 kB chunks with no declared length until the client hangs up (or 50 MB)."""
        self._head(200, None)
        try:
            for _ in range(800):
                self._chunk(b" " * 65_536)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass


class _StatusPages(loopback.ThreadedServer):
    handler = _Handler


@pytest.fixture
def server() -> Iterator[str]:
    with _StatusPages() as pages:
        yield pages.url


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback port that is bound but not listening, so connecting is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}/api/v2/summary.json"
    sock.close()


async def failure(client: httpx.AsyncClient, url: str, **kwargs: float) -> StatusPageError:
    """The StatusPageError fetch raises; any other outcome fails the test."""
    with pytest.raises(StatusPageError) as caught:
        await fetch(client, url, **kwargs)
    assert caught.value.source == url
    return caught.value


@pytest.mark.parametrize(
    ("fixture", "level"),
    [
        ("operational.json", StatusLevel.OPERATIONAL),
        ("degraded_component.json", StatusLevel.DEGRADED),
        ("major_outage.json", StatusLevel.OUTAGE),
        ("resolved_incident.json", StatusLevel.OPERATIONAL),
        ("maintenance.json", StatusLevel.DEGRADED),
        ("hostile.json", StatusLevel.OUTAGE),
    ],
)
async def test_served_pages_become_reports(server, client, fixture, level):
    url = f"{server}/pages/{fixture}"

    report = await fetch(client, url)

    assert report == parse((FIXTURES / fixture).read_bytes(), source=url)
    assert report.verdict()[0] is level


async def test_a_redirect_is_followed(server, client):
    report = await fetch(client, f"{server}/redirect")

    assert report.page == "OpenAI"
    assert report.verdict()[0] is StatusLevel.OPERATIONAL


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("truncated.json", "not JSON at byte 700"),
        ("list.json", "not a JSON object but a list"),
        ("no_status.json", "no 'status' object"),
        ("indicator_number.json", "'status.indicator' is a number, not a string"),
    ],
)
async def test_malformed_pages_fail_with_the_parse_reason(server, client, fixture, reason):
    error = await failure(client, f"{server}/pages/{fixture}")

    assert error.reason.startswith(reason), error.reason


@pytest.mark.parametrize("code", [503, 404, 500, 429])
async def test_an_error_status_fails_with_the_code(server, client, code):
    url = f"{server}/status/{code}"

    error = await failure(client, url)

    assert error.reason == f"HTTP {code}"
    assert str(error) == f"HTTP {code} from {url}"


async def test_a_silent_server_times_out(server, client):
    started = time.monotonic()

    error = await failure(client, f"{server}/hang", timeout_s=0.3)

    assert error.reason == "timed out after 0.3 s"
    assert time.monotonic() - started < HOLD_S / 2


async def test_a_dribbling_server_hits_the_overall_deadline(server, client):
    started = time.monotonic()

    error = await failure(client, f"{server}/dribble", timeout_s=0.3)

    assert error.reason == "timed out after 0.3 s"
    assert time.monotonic() - started < HOLD_S / 2


async def test_a_declared_oversized_body_is_refused_before_reading_it(server, client):
    error = await failure(client, f"{server}/huge-declared", max_bytes=MAX_BYTES, timeout_s=3)

    assert error.reason == "too large (over 100 kB)"


async def test_an_undeclared_oversized_body_is_cut_off(server, client):
    error = await failure(client, f"{server}/huge-chunked", max_bytes=MAX_BYTES)

    assert error.reason == "too large (over 100 kB)"


async def test_the_size_cap_counts_decompressed_bytes(server, client):
    error = await failure(client, f"{server}/gzip-bomb", max_bytes=MAX_BYTES)

    assert error.reason == "too large (over 100 kB)"


async def test_the_default_cap_is_two_megabytes(server, client):
    error = await failure(client, f"{server}/huge-chunked")

    assert error.reason == "too large (over 2 MB)"


async def test_a_connection_dropped_mid_body_fails_cleanly(server, client):
    error = await failure(client, f"{server}/drop")

    assert error.reason.startswith("request failed: "), error.reason


async def test_a_refused_connection_fails_with_could_not_connect(client, refused_url):
    error = await failure(client, refused_url)

    assert error.reason.startswith("could not connect: "), error.reason


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/summary.json", "summary.json", "http://[::1"])
async def test_an_unusable_url_fails_cleanly(client, url):
    error = await failure(client, url)

    assert error.reason.startswith("request failed: "), error.reason


async def test_the_client_stays_usable_after_failures(server, client):
    for path in ("/huge-chunked", "/drop", "/status/503"):
        with pytest.raises(StatusPageError):
            await fetch(client, server + path, max_bytes=MAX_BYTES)

    report = await fetch(client, f"{server}/pages/operational.json")

    assert report.verdict()[0] is StatusLevel.OPERATIONAL
