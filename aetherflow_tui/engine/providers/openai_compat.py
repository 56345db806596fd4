"""One client for every OpenAI-compatible chat-completions API (Groq, Mistral, DeepSeek,
Gemini's compatibility endpoint, OpenAI, OpenRouter, Ollama, llama.cpp server, vLLM...).

One pooled aiohttp session per provider keeps connections warm between calls. aiohttp,
not httpx, because a plan holds many calls in flight at once: httpcore's pool re-scans
every connection (a poll() each) for every queued request (encode/httpcore#1035), which
cost ~100 ms per call at 50 in flight on loopback, against ~5 ms here
(benchmarks/scheduler.py, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from aiohttp import http_exceptions

from ..keys import Secret
from .base import (
    AuthFailed,
    ChatRequest,
    ChatResult,
    ConnectionFailed,
    MalformedResponse,
    OnToken,
    Overloaded,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    Rejected,
    Unreachable,
    Usage,
)

_DRAIN_S = 1.0  # how long to wait for the end of a stream after [DONE]
_MAX_LINE = 1 << 20  # one server-sent event line; a longer one is a broken stream
_MAX_ERROR_BODY = 64 << 10  # of an error answer, only what its excerpt can show is read
DEFAULT_DEADLINE_S = 300.0
DEFAULT_MAX_ANSWER_BYTES = 8 << 20


class OpenAICompatProvider:
    def __init__(self, provider_id: str, base_url: str, *, key: Secret | None = None,
                 timeout_s: float = 60.0, deadline_s: float = DEFAULT_DEADLINE_S,
                 max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
                 max_connections: int = 32) -> None:
        self.id = provider_id
        self.base_url = base_url
        # A query in the base URL (some gateways take parameters there) stays at the end.
        base, sep, query = base_url.partition("?")
        self._url = base.rstrip("/") + "/chat/completions" + sep + query
        # Per socket operation, as a provider that keeps streaming is not timed out.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=None,
                                              sock_connect=min(10.0, timeout_s),
                                              sock_read=timeout_s)
        # The whole call, as a provider that keeps sending (tokens, keep-alive comments,
        # a byte a second) resets sock_read forever.
        self._deadline_s = deadline_s
        self._max_bytes = max_answer_bytes
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._headers: dict[str, str] = {}
        self.set_key(key)

    def __repr__(self) -> str:
        return f"OpenAICompatProvider({self.id!r}, {self.base_url!r})"

    def set_key(self, key: Secret | None) -> None:
        # Held per provider, sent per request: a session's default headers would show up
        # in its repr and in any debug dump of it.
        self._headers = {"Accept": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key.reveal()}"

    def _client(self) -> aiohttp.ClientSession:
        """The pooled session, opened on first use inside the running loop (aiohttp binds
        a session to its loop; a new loop, as in a second asyncio.run, gets a new one)."""
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0)
            # A line longer than twice read_bufsize makes readline() raise ValueError.
            session = self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, read_bufsize=_MAX_LINE // 2,
                auto_decompress=True, raise_for_status=False)
            self._loop = loop
        return session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            with contextlib.suppress(RuntimeError):  # its loop is gone: nothing to close
                await session.close()

    async def complete(self, request: ChatRequest, on_token: OnToken | None = None
                       ) -> ChatResult:
        body = _body(request)
        started = time.perf_counter()
        deadline = asyncio.timeout(self._deadline_s)
        try:
            async with deadline:
                if request.stream:
                    return await self._stream(request, body, started, on_token, deadline)
                return await self._once(request, body, started)
        except ProviderError:
            raise
        except TimeoutError as exc:  # aiohttp's socket timeouts are TimeoutErrors too
            if deadline.expired():
                raise ProviderTimeout(self.id, f"no complete answer within the call's "
                                               f"{self._deadline_s:g} s deadline_s") from None
            raise ProviderTimeout(self.id, f"no answer in time ({type(exc).__name__})") from None
        except http_exceptions.HttpProcessingError as exc:  # not aiohttp.ClientError
            raise MalformedResponse(self.id, f"not valid HTTP ({type(exc).__name__})"
                                    ) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise ConnectionFailed(self.id, f"connection cut ({type(exc).__name__})") from None
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(self.id, f"cannot reach {self.base_url} "
                                       f"({type(exc).__name__})") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionFailed(self.id, f"connection failed ({type(exc).__name__})"
                                   ) from None

    def _post(self, body: dict[str, Any]) -> Any:
        return self._client().post(self._url, json=body, headers=self._headers,
                                   allow_redirects=False)

    async def _once(self, request: ChatRequest, body: dict[str, Any], started: float
                    ) -> ChatResult:
        async with self._post(body) as response:
            await _refuse_error_status(self.id, response)
            raw = await _read(self.id, response, self._max_bytes)
            text_body = raw.decode("utf-8", "replace")
        duration = time.perf_counter() - started
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise MalformedResponse(self.id, "not a chat completion", status=200,
                                    excerpt=text_body) from None
        if not isinstance(text, str):
            raise MalformedResponse(self.id, "message content is not text", status=200,
                                    excerpt=text_body)
        usage = _usage(data.get("usage")) or _estimate(request, text, None)
        return ChatResult(self.id, str(data.get("model") or request.model), text, usage,
                          None, duration, choice.get("finish_reason"),
                          _billed(data.get("usage")))

    async def _stream(self, request: ChatRequest, body: dict[str, Any], started: float,
                      on_token: OnToken | None, deadline: asyncio.Timeout) -> ChatResult:
        pieces: list[str] = []
        chunks = 0
        ttft: float | None = None
        usage: Usage | None = None
        billed: float | None = None
        model = request.model
        finish: str | None = None
        done = False
        events = 0  # "data:" lines seen
        stray: list[str] = []  # lines that are not server-sent events at all
        max_pieces = request.max_tokens if request.max_tokens is not None else math.inf
        overrun = False
        async with self._post(body) as response:
            await _refuse_error_status(self.id, response)
            lines = _lines(self.id, response.content, self._max_bytes)
            async for line in lines:
                if not line.startswith("data:"):
                    # SSE comments (": keep-alive"), event names, blank separators.
                    if (line.strip() and len(stray) < 8
                            and not line.startswith((":", "event:", "id:", "retry:"))):
                        stray.append(line)
                    continue
                events += 1
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    raise MalformedResponse(self.id, "stream chunk is not JSON", status=200,
                                            excerpt=payload) from None
                if not isinstance(chunk, dict):
                    raise MalformedResponse(self.id, "stream chunk is not an object",
                                            status=200, excerpt=payload)
                if "error" in chunk:
                    raise Overloaded(self.id, "error inside the stream", status=200,
                                     excerpt=json.dumps(chunk["error"]))
                model = chunk.get("model") or model
                usage = _usage(chunk.get("usage")) or usage
                billed = _billed(chunk.get("usage")) if billed is None else billed
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    token = delta.get("content") or ""
                    thinking = delta.get("reasoning_content") or delta.get("reasoning") or ""
                    if token and len(pieces) >= max_pieces:
                        # Each piece is at least a token, so the provider is past
                        # max_tokens: what was asked for is here, the rest is not read.
                        finish, overrun = "length", True
                        break
                    if token or thinking:
                        chunks += 1
                        if ttft is None:
                            ttft = time.perf_counter() - started
                    if token:
                        pieces.append(token)
                        if on_token is not None:
                            pending = on_token(token)
                            if pending is not None:
                                await pending
                    finish = choice.get("finish_reason") or finish
                if overrun:
                    break
            ended = time.perf_counter()
            if done:
                deadline.reschedule(None)  # the answer is in: only _DRAIN_S bounds the rest
                await _drain(lines)
        if not done and finish is None:
            if not events and stray:
                # A complete 200 answer that is not an event stream (an error page, a
                # JSON body): retrying will not change it.
                raise MalformedResponse(self.id, "not an event stream", status=200,
                                        excerpt="\n".join(stray))
            raise ConnectionFailed(self.id, "stream ended before the answer finished",
                                   excerpt="".join(pieces))
        text = "".join(pieces)
        duration = ended - started
        return ChatResult(self.id, str(model), text, usage or _estimate(request, text, chunks),
                          ttft, duration, finish, billed)


async def _lines(provider: str, content: aiohttp.StreamReader, max_bytes: int
                 ) -> AsyncIterator[str]:
    """The body's lines, decoded, without their line ends; at most max_bytes of them."""
    read = 0
    while True:
        try:
            raw = await content.readline()
        except (ValueError, http_exceptions.LineTooLong):  # over twice the read buffer
            raise MalformedResponse(provider, "stream line too long", status=200,
                                    excerpt="") from None
        if not raw:
            return
        read += len(raw)
        if read > max_bytes:
            raise _too_large(provider, max_bytes)
        yield raw.decode("utf-8", "replace").rstrip("\r\n")


async def _read(provider: str, response: aiohttp.ClientResponse, max_bytes: int, *,
                cut: bool = False) -> bytes:
    """The body, up to max_bytes: beyond that, the first max_bytes when `cut`, else an
    error. Never more is held in memory, whatever the provider sends or announces."""
    if not cut and (response.content_length or 0) > max_bytes:
        raise _too_large(provider, max_bytes)
    body = bytearray()
    async for piece in response.content.iter_chunked(1 << 16):
        body += piece
        if len(body) > max_bytes:
            if cut:
                return bytes(body[:max_bytes])
            raise _too_large(provider, max_bytes)
    return bytes(body)


async def _refuse_error_status(provider: str, response: aiohttp.ClientResponse) -> None:
    """Anything but a 200 as the ProviderError its status and (bounded) body say."""
    if response.status != 200:
        raw = await _read(provider, response, _MAX_ERROR_BODY, cut=True)
        raise _http_error(provider, response.status, response.headers,
                          raw.decode("utf-8", "replace"))


def _too_large(provider: str, max_bytes: int) -> MalformedResponse:
    return MalformedResponse(provider, f"answer larger than {max_bytes} bytes "
                                       "(max_answer_bytes)", status=200)


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read what follows [DONE] (the chunked-body end) so the connection returns to the
    pool; a response left unfinished makes aiohttp close its connection. The answer is
    complete already, so a server that stalls or cuts here costs only that connection."""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
        async with asyncio.timeout(_DRAIN_S):
            async for _ in lines:
                pass


def _body(request: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
    }
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.json_mode:
        body["response_format"] = {"type": "json_object"}
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _billed(raw: object) -> float | None:
    """usage.cost, where the provider reports its charge (OpenRouter does)."""
    cost = raw.get("cost") if isinstance(raw, dict) else None
    if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
        return float(cost)
    return None


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    try:
        prompt = int(raw.get("prompt_tokens") or 0)
        completion = int(raw.get("completion_tokens") or 0)
        details = raw.get("prompt_tokens_details") or {}
        cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
        # DeepSeek reports cache hits under its own name.
        cached = cached or int(raw.get("prompt_cache_hit_tokens") or 0)
    except (TypeError, ValueError):
        return None
    return Usage(prompt, completion, min(cached, prompt))


def _estimate(request: ChatRequest, text: str, chunks: int | None) -> Usage:
    """Rough counts when the provider sends none: about four characters a token."""
    chars_in = sum(len(m.content) for m in request.messages)
    output = chunks if chunks else max(1, len(text) // 4) if text else 0
    return Usage(max(1, chars_in // 4), output, 0, estimated=True)


def _http_error(provider: str, status: int, headers: Mapping[str, str], body: str
                ) -> ProviderError:
    detail = _error_message(body)
    if status in (401, 403):
        return AuthFailed(provider, "the key was refused", status=status, excerpt=detail)
    if status == 429:
        return RateLimited(provider, "rate limited", status=status, excerpt=detail,
                           retry_after_s=_retry_after(headers.get("retry-after")))
    if status == 408:
        return ProviderTimeout(provider, "the provider timed out", status=status,
                               excerpt=detail)
    if status >= 500:
        return Overloaded(provider, "the provider is failing", status=status, excerpt=detail,
                          retry_after_s=_retry_after(headers.get("retry-after")))
    return Rejected(provider, "the request was refused", status=status, excerpt=detail)


def _error_message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
    return body


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        # Zoneless forms (asctime, "-0000") are GMT in HTTP, not the local time.
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())
