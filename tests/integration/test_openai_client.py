"""OpenAICompatProvider against a real OpenAI-compatible server on 127.0.0.1.

Every call goes over real sockets to the scripted server (tests/support/scripted_server.py);
nothing in aiohttp or the client is patched. What the server received is read back from
`server.requests`; connection reuse is read from the OS's socket table via psutil.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from email.utils import format_datetime

import psutil
import pytest

from aetherflow_tui.engine.keys import Secret
from aetherflow_tui.engine.providers import openai_compat
from aetherflow_tui.engine.providers.base import (
    AuthFailed,
    ChatRequest,
    ChatResult,
    ConnectionFailed,
    MalformedResponse,
    Overloaded,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    Rejected,
    Unreachable,
)
from aetherflow_tui.engine.providers.openai_compat import OpenAICompatProvider
from tests.support.scripted_server import ScriptedServer

KEY = "sk-test-0123456789abcdef"
WRONG_KEY = "sk-wrong-fedcba9876543210"
PROMPT = "hello there world"
REPLY = "echo: hello there world"
REPLY_PIECES = ["echo:", " hello", " there", " world"]

BOTH_MODES = pytest.mark.parametrize("stream", [False, True], ids=["once", "stream"])


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer(api_key=KEY)
    srv.start()  # serves on its own thread
    try:
        yield srv
    finally:
        srv.stop()


@asynccontextmanager
async def _provider(url: str, *, key: str | None = KEY, timeout_s: float = 10.0
                    ) -> AsyncIterator[OpenAICompatProvider]:
    provider = OpenAICompatProvider("scripted", url, key=Secret(key) if key else None,
                                    timeout_s=timeout_s)
    try:
        yield provider
    finally:
        await provider.aclose()


@pytest.fixture
async def provider(server: ScriptedServer) -> AsyncIterator[OpenAICompatProvider]:
    async with _provider(server.url) as p:
        yield p


def _ask(model: str, *, stream: bool, prompt: str = PROMPT, **kw: object) -> ChatRequest:
    return ChatRequest.ask(model, prompt, stream=stream, **kw)


def _assert_no_key(err: BaseException, *keys: str) -> None:
    for key in (KEY, *keys):
        assert key not in str(err)
        assert key not in repr(err)
        assert all(key not in str(arg) for arg in err.args)
        if isinstance(err, ProviderError):
            assert key not in err.excerpt
            assert key not in err.message


async def _fails(provider: OpenAICompatProvider, request: ChatRequest,
                 expected: type[ProviderError], **kw: object) -> ProviderError:
    with pytest.raises(expected) as info:
        await provider.complete(request, **kw)  # type: ignore[arg-type]
    err = info.value
    assert type(err) is expected  # no subclass or sibling stands in for it
    assert err.provider == "scripted"
    _assert_no_key(err)
    return err


# --- answers ----------------------------------------------------------------------------


async def test_non_stream_reads_text_usage_and_timing(
        server: ScriptedServer, provider: OpenAICompatProvider) -> None:
    result = await provider.complete(_ask("ok", stream=False))

    assert isinstance(result, ChatResult)
    assert result.provider == "scripted"
    assert result.model == "ok"
    assert result.text == REPLY
    assert result.finish_reason == "stop"
    # Server counts words: 3 prompt words in, "echo:" + 3 words out.
    assert (result.usage.input_tokens, result.usage.output_tokens) == (3, 4)
    assert result.usage.cached_input_tokens == 0
    assert result.usage.estimated is False
    assert result.ttft_s is None
    assert result.duration_s > 0
    assert result.tokens_per_s is not None and result.tokens_per_s > 0
    assert result.tokens_per_s == pytest.approx(4 / result.duration_s)

    body = server.requests[-1]["body"]
    assert body == {"model": "ok", "messages": [{"role": "user", "content": PROMPT}]}


@pytest.mark.parametrize("callback", ["sync", "async"])
async def test_stream_reads_text_usage_tokens_in_order_and_ttft(
        server: ScriptedServer, provider: OpenAICompatProvider, callback: str) -> None:
    seen: list[str] = []
    if callback == "sync":
        def on_token(piece: str) -> None:
            seen.append(piece)
    else:
        async def on_token(piece: str) -> None:  # type: ignore[misc]
            await asyncio.sleep(0)  # a real suspension: the client must await it
            seen.append(piece)

    result = await provider.complete(_ask("ok", stream=True), on_token=on_token)

    assert seen == REPLY_PIECES
    assert result.text == REPLY == "".join(seen)
    assert result.model == "ok"
    assert result.finish_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (3, 4)
    assert result.usage.cached_input_tokens == 0
    assert result.usage.estimated is False  # read from the include_usage chunk
    assert result.ttft_s is not None
    assert 0 < result.ttft_s <= result.duration_s
    assert result.tokens_per_s is not None and result.tokens_per_s > 0

    body = server.requests[-1]["body"]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


@BOTH_MODES
async def test_cached_prompt_tokens_are_read(
        provider: OpenAICompatProvider, stream: bool) -> None:
    result = await provider.complete(_ask("cached:3", stream=stream,
                                          prompt="one two three four five"))
    assert result.usage.cached_input_tokens == 3
    assert result.usage.input_tokens == 5  # total input, cached included
    assert result.usage.output_tokens == 6
    assert result.text == "echo: one two three four five"


async def test_slow_first_byte_shows_in_ttft(provider: OpenAICompatProvider) -> None:
    streamed = await provider.complete(_ask("slow:0.3", stream=True))
    assert streamed.text == REPLY
    assert streamed.ttft_s is not None and streamed.ttft_s >= 0.3
    assert streamed.duration_s >= streamed.ttft_s

    once = await provider.complete(_ask("slow:0.3", stream=False))
    assert once.ttft_s is None
    assert once.duration_s >= 0.3


# --- the key ------------------------------------------------------------------------------


@BOTH_MODES
async def test_key_is_sent_as_bearer_and_never_shown(
        server: ScriptedServer, provider: OpenAICompatProvider, stream: bool) -> None:
    await provider.complete(_ask("ok", stream=stream))
    assert server.requests[-1]["headers"]["authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(provider)
    assert KEY not in str(provider)
    assert KEY not in repr(provider._session)


async def test_no_key_sends_no_authorization(server: ScriptedServer) -> None:
    async with _provider(server.url, key=None) as keyless:
        err = await _fails(keyless, _ask("ok", stream=False), AuthFailed)
    assert "authorization" not in server.requests[-1]["headers"]
    assert err.status == 401


@BOTH_MODES
async def test_wrong_key_is_auth_failed(server: ScriptedServer, stream: bool) -> None:
    async with _provider(server.url, key=WRONG_KEY) as wrong:
        err = await _fails(wrong, _ask("ok", stream=stream), AuthFailed)
        assert WRONG_KEY not in repr(wrong)
    _assert_no_key(err, WRONG_KEY)
    assert server.requests[-1]["headers"]["authorization"] == f"Bearer {WRONG_KEY}"
    assert err.kind == "auth"
    assert err.status == 401
    assert err.retryable is False
    assert "Incorrect API key provided" in err.excerpt


def test_error_excerpt_masks_an_echoed_key() -> None:
    err = Rejected("p", "x", excerpt=f"Incorrect API key provided: {KEY}")
    _assert_no_key(err)
    assert err.excerpt == "Incorrect API key provided: ***"
    assert str(err) == "p: x: Incorrect API key provided: ***"

    bearer = AuthFailed("p", "x", status=401, excerpt="got header Authorization: Bearer abc123xyz")
    assert "abc123xyz" not in str(bearer)
    assert "Bearer ***" in bearer.excerpt


# --- typed errors ------------------------------------------------------------------------


@BOTH_MODES
async def test_429_with_retry_after(provider: OpenAICompatProvider, stream: bool) -> None:
    err = await _fails(provider, _ask("status:429:2", stream=stream), RateLimited)
    assert isinstance(err, RateLimited)
    assert err.retry_after_s == 2.0
    assert err.retryable is True
    assert err.kind == "rate_limited"
    assert err.status == 429
    assert err.excerpt == "scripted 429"


@BOTH_MODES
async def test_429_without_retry_after(provider: OpenAICompatProvider, stream: bool) -> None:
    err = await _fails(provider, _ask("status:429", stream=stream), RateLimited)
    assert isinstance(err, RateLimited)
    assert err.retry_after_s is None
    assert err.retryable is True


@BOTH_MODES
@pytest.mark.parametrize("code", [500, 503])
async def test_5xx_is_overloaded(provider: OpenAICompatProvider, stream: bool, code: int) -> None:
    err = await _fails(provider, _ask(f"status:{code}", stream=stream), Overloaded)
    assert err.status == code
    assert err.retryable is True
    assert err.kind == "overloaded"
    assert err.excerpt == f"scripted {code}"


@BOTH_MODES
async def test_400_is_rejected(provider: OpenAICompatProvider, stream: bool) -> None:
    err = await _fails(provider, _ask("status:400", stream=stream), Rejected)
    assert err.status == 400
    assert err.retryable is False
    assert err.kind == "rejected"


@BOTH_MODES
async def test_hang_times_out(server: ScriptedServer, stream: bool) -> None:
    async with _provider(server.url, timeout_s=0.5) as quick:
        started = time.monotonic()
        err = await _fails(quick, _ask("hang", stream=stream), ProviderTimeout)
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 3.0  # the 0.5 s read timeout ended it, not the server
    assert err.retryable is True
    assert err.kind == "timeout"


@BOTH_MODES
async def test_closed_port_is_unreachable(stream: bool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with _provider(f"http://127.0.0.1:{port}/v1", timeout_s=5.0) as nowhere:
        err = await _fails(nowhere, _ask("ok", stream=stream), Unreachable)
    assert isinstance(err, ConnectionFailed)  # a connection failure, of the kind not worth
    # retrying on the same provider at once
    assert err.retryable is True
    assert err.kind == "connection"
    assert err.status is None


@BOTH_MODES
async def test_drop_is_connection_failed(
        server: ScriptedServer, provider: OpenAICompatProvider, stream: bool) -> None:
    err = await _fails(provider, _ask("drop", stream=stream), ConnectionFailed)
    assert err.retryable is True
    assert server.requests[-1]["body"]["model"] == "drop"  # it did reach the server


async def test_broken_stream_is_connection_failed(provider: OpenAICompatProvider) -> None:
    seen: list[str] = []
    err = await _fails(provider, _ask("broken-stream", stream=True), ConnectionFailed,
                       on_token=seen.append)
    assert seen == ["echo:"]  # the first word arrived before the cut
    assert err.retryable is True


async def test_broken_stream_without_streaming_is_connection_failed(
        provider: OpenAICompatProvider) -> None:
    await _fails(provider, _ask("broken-stream", stream=False), ConnectionFailed)


@BOTH_MODES
async def test_malformed_body_is_malformed_with_safe_excerpt(
        provider: OpenAICompatProvider, stream: bool) -> None:
    err = await _fails(provider, _ask("malformed", stream=stream), MalformedResponse)
    assert err.retryable is False
    assert err.kind == "malformed"
    assert err.status == 200
    assert "\x1b" not in err.excerpt
    assert "\x1b" not in str(err)
    assert "\\x1b[31m" in err.excerpt  # shown as a visible escape, not obeyed
    assert "<b>not json</b>" in err.excerpt
    assert 0 < len(err.excerpt) <= 200


@BOTH_MODES
async def test_no_choices_is_malformed(provider: OpenAICompatProvider, stream: bool) -> None:
    err = await _fails(provider, _ask("nochoices", stream=stream), MalformedResponse)
    assert err.retryable is False
    assert err.status == 200


def test_long_excerpt_is_bounded_and_one_line() -> None:
    err = MalformedResponse("p", "x", excerpt=("line\n\x1b[2J" * 200))
    assert len(err.excerpt) <= 200
    assert "\n" not in err.excerpt
    assert "\x1b" not in err.excerpt
    assert err.excerpt.endswith("…")


# --- connections -------------------------------------------------------------------------


def _client_ports(server_port: int) -> set[int]:
    """Local ports of this process's established TCP connections to the server."""
    return {
        c.laddr.port
        for c in psutil.Process(os.getpid()).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == server_port and c.laddr.port != server_port
        and c.status == psutil.CONN_ESTABLISHED
    }


async def test_sequential_calls_reuse_one_connection(
        server: ScriptedServer, provider: OpenAICompatProvider) -> None:
    server_port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    ports: list[set[int]] = []
    for i in range(20):
        result = await provider.complete(_ask("ok", stream=bool(i % 2), prompt=f"call {i}"))
        assert result.text == f"echo: call {i}"
        ports.append(_client_ports(server_port))
    assert len(server.requests) == 20
    # Observed in the OS socket table: after every call exactly one connection is open,
    # and it is the same one throughout.
    assert all(len(p) == 1 for p in ports), ports
    assert len(set().union(*ports)) == 1, ports


async def test_fifty_concurrent_calls_all_succeed(
        server: ScriptedServer, provider: OpenAICompatProvider) -> None:
    requests = [_ask("ok", stream=bool(i % 2), prompt=f"job {i}") for i in range(50)]
    results = await asyncio.gather(*(provider.complete(r) for r in requests))
    assert [r.text for r in results] == [f"echo: job {i}" for i in range(50)]
    assert all(r.usage.output_tokens == 3 and not r.usage.estimated for r in results)
    assert len(server.requests) == 50


def _sse_chunk(payload: str) -> bytes:
    data = f"data: {payload}\n\n".encode()
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@asynccontextmanager
async def _raw_stream_server(then: str) -> AsyncIterator[str]:
    """A raw HTTP/1.1 server on 127.0.0.1 for stream endings the scripted server lacks.

    "cut" and "stall": the answer is complete up to [DONE], then the socket is aborted
    without the chunked-body end, or held open without finishing. "early": one content
    chunk, then a cleanly finished body with no finish_reason and no [DONE].
    Yields its base URL."""
    release = asyncio.Event()
    handlers: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        try:
            await serve(reader, writer)
        finally:
            writer.transport.abort()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        chunk = ('{"model": "raw", "choices": [{"index": 0, "delta": {"content": "%s"}, '
                 '"finish_reason": %s}]}')
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"
                     + _sse_chunk(chunk % ("complete answer", "null")))
        if then == "early":
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(_sse_chunk(chunk % ("", '"stop"')) + _sse_chunk("[DONE]"))
        await writer.drain()
        if then == "early":
            await reader.read()  # the client hangs up once it has read the end
        elif then == "stall":
            await release.wait()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/v1"
    finally:
        release.set()
        srv.close()
        await srv.wait_closed()
        # Python 3.11's wait_closed() does not wait for handlers; they end once released
        # or once the client (closed before this runs) has hung up.
        await asyncio.gather(*handlers, return_exceptions=True)


@pytest.mark.parametrize("then", ["cut", "stall"])
async def test_answer_complete_at_done_survives_a_bad_stream_end(then: str) -> None:
    async with _raw_stream_server(then) as url, _provider(url, timeout_s=10.0) as raw:
        started = time.monotonic()
        result = await raw.complete(_ask("raw", stream=True))
        elapsed = time.monotonic() - started
    assert result.text == "complete answer"
    assert result.finish_reason == "stop"
    # The wait for the stream's end is bounded, and not counted as generation time.
    assert elapsed < openai_compat._DRAIN_S + 2.0
    assert result.duration_s < openai_compat._DRAIN_S


async def test_stream_ending_cleanly_before_the_answer_is_connection_failed() -> None:
    async with _raw_stream_server("early") as url, _provider(url) as raw:
        seen: list[str] = []
        err = await _fails(raw, _ask("raw", stream=True), ConnectionFailed,
                           on_token=seen.append)
    assert seen == ["complete answer"]
    assert err.retryable is True
    assert "complete answer" in err.excerpt  # what did arrive, for the log


# --- hostile providers: a deadline and a size cap on every call ----------------------------

# Each would hang the call for minutes (or forever) without a deadline; the guard makes a
# regression fail in seconds instead of hanging the suite.
GUARD_S = 8.0


@pytest.mark.parametrize(("model", "stream"), [
    ("endless", True), ("keepalive", True), ("trickle", True), ("trickle", False),
    ("trickle:0.2", True), ("trickle:0.2", False)])
async def test_a_call_that_never_finishes_stops_at_its_deadline(
        server: ScriptedServer, stream: bool, model: str) -> None:
    provider = OpenAICompatProvider("scripted", server.url, key=Secret(KEY), timeout_s=5.0,
                                    deadline_s=0.5)
    try:
        started = time.monotonic()
        async with asyncio.timeout(GUARD_S):
            err = await _fails(provider, _ask(model, stream=stream), ProviderTimeout)
        elapsed = time.monotonic() - started
    finally:
        await provider.aclose()
    # Bytes kept coming faster than the 5 s read timeout: only the deadline ended it.
    assert 0.45 <= elapsed < 2.0, elapsed
    assert "0.5 s deadline_s" in err.message
    assert err.retryable is True and err.kind == "timeout"


async def test_a_deadline_does_not_cut_an_answer_that_arrives_in_time(
        server: ScriptedServer) -> None:
    provider = OpenAICompatProvider("scripted", server.url, key=Secret(KEY), deadline_s=5.0)
    try:
        result = await provider.complete(_ask("trickle:0.001", stream=True))
    finally:
        await provider.aclose()
    assert result.text == REPLY and result.finish_reason == "stop"


async def test_a_stream_line_over_the_reader_limit_is_malformed(server: ScriptedServer,
                                                                provider: OpenAICompatProvider
                                                                ) -> None:
    err = await _fails(provider, _ask("hugeline:4194304", stream=True), MalformedResponse)
    assert "line too long" in err.message
    assert err.retryable is False and err.kind == "malformed"


@BOTH_MODES
async def test_an_answer_over_max_answer_bytes_is_refused_unread(
        server: ScriptedServer, stream: bool) -> None:
    provider = OpenAICompatProvider("scripted", server.url, key=Secret(KEY),
                                    max_answer_bytes=256 << 10)
    try:
        # Lines short enough for the reader, a stream far bigger than the cap.
        model = "flood:100000" if stream else "hugeline:4194304"
        async with asyncio.timeout(GUARD_S):
            err = await _fails(provider, _ask(model, stream=stream), MalformedResponse)
    finally:
        await provider.aclose()
    assert f"larger than {256 << 10} bytes (max_answer_bytes)" in err.message


async def test_a_stream_past_max_tokens_stops_being_read_at_max_tokens(
        provider: OpenAICompatProvider) -> None:
    seen: list[str] = []
    async with asyncio.timeout(GUARD_S):
        result = await provider.complete(_ask("flood:200000", stream=True, max_tokens=8),
                                         on_token=seen.append)
    assert result.text == "flood" + " flood" * 7
    assert len(seen) == 8
    assert result.finish_reason == "length"
    assert result.usage.output_tokens == 8 and result.usage.estimated


async def test_an_endless_stream_stops_at_max_tokens(provider: OpenAICompatProvider) -> None:
    async with asyncio.timeout(GUARD_S):
        result = await provider.complete(_ask("endless:0.001", stream=True, max_tokens=5))
    assert result.text == " more" * 5 and result.finish_reason == "length"


@BOTH_MODES
async def test_503_with_retry_after(provider: OpenAICompatProvider, stream: bool) -> None:
    err = await _fails(provider, _ask("status:503:3", stream=stream), Overloaded)
    assert isinstance(err, Overloaded)
    assert err.retry_after_s == 3.0


# --- Retry-After parsing -----------------------------------------------------------------


def test_retry_after_http_date() -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    value = format_datetime(when, usegmt=True)
    seconds = openai_compat._retry_after(value)
    assert seconds is not None and 3 <= seconds <= 6


@pytest.fixture
def eastern_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Process local time five hours behind UTC (POSIX TZ rule; no tz database needed)."""
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


def test_retry_after_zoneless_date_is_gmt(eastern_local_time: None) -> None:
    # RFC 9110 says recipients accept asctime dates, which carry no zone and mean GMT.
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    value = when.strftime("%a %b %d %H:%M:%S %Y")
    seconds = openai_compat._retry_after(value)
    assert seconds is not None and 3 <= seconds <= 6


@pytest.mark.parametrize(("value", "expected"), [
    ("2", 2.0), ("0", 0.0), ("1.5", 1.5), ("-3", 0.0),
    (None, None), ("", None), ("soon", None),
    ("inf", None), ("nan", None), ("1e400", None),
])
def test_retry_after_values(value: str | None, expected: float | None) -> None:
    assert openai_compat._retry_after(value) == expected


def test_retry_after_past_date_is_zero() -> None:
    when = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    assert openai_compat._retry_after(format_datetime(when, usegmt=True)) == 0.0


async def test_a_key_in_the_base_url_never_reaches_the_error_message():
    from aetherflow_tui.engine.keys import REDACTOR, Secret

    secret = "AIza" + "SyA1234567890abcdefghijklmnopqrs"  # split: not a real key
    REDACTOR.remember(Secret(secret))
    provider = OpenAICompatProvider("gemini", f"http://127.0.0.1:9/v1?key={secret}",
                                    timeout_s=2)
    try:
        with pytest.raises(ConnectionFailed) as caught:
            await provider.complete(ChatRequest.ask("m", "hi", stream=False))
    finally:
        await provider.aclose()
    assert secret not in str(caught.value)
    assert secret not in caught.value.message
