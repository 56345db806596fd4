"""A real OpenAI-compatible chat-completions server for tests and benchmarks.

It plays healthy, slow and failing LLM providers over real HTTP/1.1 on 127.0.0.1 so
client code is exercised end to end (sockets, keep-alive, chunked SSE, timeouts).
Standard library only, so it can run anywhere the tests run.

Behaviour of each ``POST /v1/chat/completions`` comes from the next string queued with
``ScriptedServer.script()`` or, when the queue is empty, from the request's ``model``:

    ok | <any other model>   echo the last user message
    slow:SECONDS             like ok, after a delay before the first byte
    cached:N                 like ok, reporting N cached prompt tokens
    billed:USD               like ok, reporting usage.cost = USD (as OpenRouter does)
    status:CODE[:RETRY]      error status with an OpenAI-style body (429 or 503 +
                             Retry-After)
    hang                     never answer until the server stops
    malformed                200 with a body that is not JSON (and carries markup)
    nochoices                200 with valid JSON lacking "choices"
    broken-stream            stream: 2 chunks then abrupt close; non-stream: close
    drop                     close the connection without responding
    say                      like ok, but reply with the text after the last "SAY:" in
                             the last user message (whitespace-normalised), no "echo:",
                             up to a closing "/SAY" if there is one
    sum                      answer "What is A + B?" in the last user message with the
                             sum, as a healthy provider answers Aetherflow's canary
    usage:IN:OUT             like ok, but report IN prompt and OUT completion tokens (a
                             hostile provider: negative, or far past max_tokens)

The server keeps the bill a real provider would send: ``billed_input`` counts the prompt
tokens of every request it took (answered, cut mid-stream, hung, or answered with garbage)
and ``billed_output`` the completion tokens it sent, whatever usage it reported.
``billed_usd(price_in, price_out)`` prices them; ``GET /v1/billing`` returns both counts
(for servers in another process).

Hostile providers (each holds its connection until the client hangs up or stop()):

    endless[:SECONDS]        stream: one word every SECONDS (default 0.01), never ending
    keepalive[:SECONDS]      stream headers, then ": keep-alive" comments every SECONDS
                             (default 0.05), never an event
    trickle[:SECONDS]        a healthy answer (stream or not) sent one byte every SECONDS
                             (default 1)
    hugeline:BYTES           stream: one "data:" line of BYTES bytes; non-stream: a 200
                             body of BYTES bytes (a JSON completion whose text fills it)
    flood:WORDS              stream: WORDS words whatever max_tokens says, then a clean
                             end with [DONE]

A directive ``@@BEHAVIOUR@@`` in the last user message (e.g. ``@@slow:0.05@@``) takes
precedence over the model, so concurrent requests can each carry their own behaviour;
the queue set with ``script()`` still comes first.

Each recorded request carries ``received`` (time.time() on arrival). ``in_flight`` counts
the requests held in a ``slow`` delay or a ``hang`` right now and ``max_in_flight`` the most
at once (a held request's record gets ``in_flight`` as it was when its hold began, itself
included). A held request has reached the server and has not sent a byte of its answer
yet, so a client's concurrency limit bounds these counts exactly. ``wait_for(predicate)``
blocks until the server's state satisfies it (call it off the event loop in async tests).

Run as ``python -m tests.support.scripted_server [--port 0] [--api-key K]``; it prints
``READY <url>`` once and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support import loopback

DEFAULT_MAX_WORDS = 16
# Markup and an ANSI escape so clients that render raw bodies get caught out.
MALFORMED_BODY = '{"choices": [' + "<b>not json</b> [red]markup[/red] \x1b[31m"

# Errors a client hanging up mid-response produces; never worth reporting.
# (all OSError subclasses; also covers sockets shut by stop()).
_DISCONNECT_ERRORS = (OSError,)


def _text_of(content: Any) -> str:
    """Message content as plain text; tolerates the list-of-parts form."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return str(content)


def _parse_behaviour(raw: str) -> tuple[str, list[str]]:
    """Split "kind:arg1:arg2" into ("kind", [args]); unknown kinds become "ok"."""
    kind, *args = raw.strip().split(":")
    known = {
        "ok",
        "slow",
        "cached",
        "billed",
        "status",
        "hang",
        "malformed",
        "nochoices",
        "broken-stream",
        "drop",
        "say",
        "sum",
        "endless",
        "keepalive",
        "trickle",
        "hugeline",
        "flood",
        "usage",
    }
    return (kind, args) if kind in known else ("ok", [])


class _HTTPServer(loopback.QuietHTTPServer):
    owner: ScriptedServer


class _Handler(BaseHTTPRequestHandler):
    # Headers and body go out as separate writes: without this, the body waits for
    # the client's delayed ACK (about 40 ms a call).
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    # --- plumbing -----------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except _DISCONNECT_ERRORS:
            pass
        finally:
            self.server.owner._track(self.connection, add=False)

    def handle(self) -> None:
        try:
            super().handle()
        except _DISCONNECT_ERRORS:
            # Client went away (or stop() shut the socket); nothing to answer.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        # Read exactly the framed body so the next request on a keep-alive
        # connection starts at the right byte.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Skip trailers up to the blank line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _abort(self) -> None:
        """Drop the connection without a (complete) response."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_json(
        self,
        status: int,
        payload: Any,
        extra: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        # Hand-written HTTP/1.1 chunked framing; one flush per chunk so clients see
        # tokens as they are "generated".
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _sse(self, payload: Any) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self._write_chunk(f"data: {text}\n\n".encode())

    # --- dispatch -----------------------------------------------------------------

    def _dispatch(self) -> None:
        owner = self.server.owner
        raw = self._read_body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        path = self.path.split("?", 1)[0].rstrip("/")
        entry = {
            "method": self.command,
            "path": path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
            "received": time.time(),
        }
        owner._record(entry)

        if self.command == "GET" and path == "/v1/billing":
            with owner._lock:
                bill = {"input_tokens": owner.billed_input,
                        "output_tokens": owner.billed_output}
            self._send_json(200, bill)
        elif self.command == "GET" and path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": "echo", "object": "model"}]})
        elif self.command == "POST" and path == "/v1/chat/completions":
            self._chat(body, entry)
        else:
            self._send_json(
                404,
                {
                    "error": {
                        "message": f"no route for {self.command} {path}",
                        "type": "invalid_request_error",
                        "code": "not_found",
                    }
                },
            )

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def _chat(self, body: Any, entry: dict[str, Any]) -> None:
        owner = self.server.owner
        expected = f"Bearer {owner.api_key}"
        if owner.api_key is not None and self.headers.get("Authorization", "") != expected:
            self._send_json(
                401,
                {
                    "error": {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
            return
        if not isinstance(body, dict):
            self._send_json(
                400,
                {
                    "error": {
                        "message": "request body must be a JSON object",
                        "type": "invalid_request_error",
                    }
                },
            )
            return

        model = str(body.get("model") or "echo")
        # Scripted behaviours are consumed only by authorised, well-formed requests so a
        # script lines up with the calls a client actually gets through.
        kind, args = _parse_behaviour(owner._next_scripted() or _directive(body) or model)
        stream = bool(body.get("stream"))

        if kind == "drop":
            self._abort()
            return
        if kind == "hang":
            owner._bill(_reply_and_usage(body, 0)[1]["prompt_tokens"], 0)
            with owner._held(entry):
                owner.stopping.wait()
            self._abort()
            return
        if kind == "status":
            self._scripted_status(args)
            return
        # From here on the provider took the request: it bills the prompt.
        owner._bill(_reply_and_usage(body, 0)[1]["prompt_tokens"], 0)
        if kind == "malformed":
            self._send_json(200, None, raw=MALFORMED_BODY.encode())
            return
        if kind == "nochoices":
            self._send_json(200, {"id": "x", "object": "chat.completion"})
            return
        if kind == "broken-stream" and not stream:
            self._abort()
            return
        if kind in ("endless", "keepalive", "hugeline"):
            self._hostile(kind, args, body, model, stream)
            return

        cached = 0
        if kind == "slow":
            try:
                delay = float(args[0])
            except (IndexError, ValueError):
                delay = 0.0
            # Interruptible so stop() stays fast.
            with owner._held(entry):
                stopped = owner.stopping.wait(max(0.0, delay))
            if stopped:
                self._abort()
                return
        elif kind == "cached":
            try:
                cached = max(0, int(args[0]))
            except (IndexError, ValueError):
                cached = 0

        words, usage = _reply_and_usage(body, cached, say=(kind == "say"),
                                        add=(kind == "sum"))
        if kind == "flood":
            words = ["flood"] * _count(args, 100_000)
            usage["completion_tokens"] = len(words)
        # Every word it sends is billed (a cut stream sends one).
        owner._bill(0, 1 if kind == "broken-stream" and stream else len(words))
        trickle = _seconds(args, 1.0) if kind == "trickle" else None
        if trickle is not None:
            # Compose the whole answer, then hand it out a byte at a time.
            real, self.wfile = self.wfile, io.BytesIO()  # type: ignore[assignment]
        if kind == "billed":
            # OpenRouter-style: the provider reports what it charged, in usage.cost.
            with contextlib.suppress(IndexError, ValueError):
                usage["cost"] = float(args[0])
        if kind == "usage":
            with contextlib.suppress(IndexError, ValueError):
                usage["prompt_tokens"], usage["completion_tokens"] = int(args[0]), int(args[1])
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        completion_id = f"chatcmpl-{owner._next_id()}"
        if stream:
            self._stream(body, model, completion_id, words, usage, broken=(kind == "broken-stream"))
        else:
            self._send_json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " ".join(words)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
        if trickle is not None:
            answer, self.wfile = self.wfile.getvalue(), real  # type: ignore[attr-defined]
            self._trickle(answer, trickle)

    def _trickle(self, data: bytes, interval: float) -> None:
        for i in range(len(data)):
            if self.server.owner.stopping.wait(interval):
                self._abort()
                return
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()

    def _hostile(self, kind: str, args: list[str], body: dict[str, Any], model: str,
                 stream: bool) -> None:
        """endless, keepalive, hugeline: a provider that never finishes, or sends too much."""
        stopping = self.server.owner.stopping
        if kind == "hugeline" and not stream:
            size = _count(args, 1 << 22)
            head = json.dumps({"model": model, "choices": [{"index": 0, "message": {
                "role": "assistant", "content": ""}, "finish_reason": "stop"}]})
            at = head.index('"content": ""') + len('"content": "')
            filler = b"x" * max(0, size - len(head))
            self._send_json(200, None, raw=head[:at].encode() + filler + head[at:].encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        # Said, not only done: a client that reused the connection would race our close.
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if kind == "hugeline":
            self._write_chunk(b"data: " + b"x" * _count(args, 1 << 22) + b"\n\n")
            self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        interval = _seconds(args, 0.01 if kind == "endless" else 0.05)
        chunk = {"model": model, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": {"content": " more"},
                              "finish_reason": None}]}
        while not stopping.wait(interval):
            if kind == "endless":
                self._sse(chunk)
            else:
                self._write_chunk(b": keep-alive\n\n")
        self._abort()

    def _scripted_status(self, args: list[str]) -> None:
        try:
            code = int(args[0])
        except (IndexError, ValueError):
            code = 500
        if not 100 <= code <= 599:
            code = 500
        extra = {}
        if code in (429, 503) and len(args) > 1 and args[1]:
            extra["Retry-After"] = args[1]
        self._send_json(
            code, {"error": {"message": f"scripted {code}", "type": "scripted"}}, extra=extra
        )

    def _stream(
        self,
        body: dict[str, Any],
        model: str,
        completion_id: str,
        words: list[str],
        usage: dict[str, Any],
        broken: bool,
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        self._sse(chunk({"role": "assistant", "content": ""}))
        for i, word in enumerate(words):
            if broken and i >= 1:
                # Two good chunks went out (role + first word); now die mid-body.
                self._abort()
                return
            self._sse(chunk({"content": word if i == 0 else " " + word}))
        if broken:
            self._abort()
            return
        self._sse(chunk({}, "stop"))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            self._sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        self._sse("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _seconds(args: list[str], default: float) -> float:
    try:
        return max(0.0, float(args[0]))
    except (IndexError, ValueError):
        return default


def _count(args: list[str], default: int) -> int:
    try:
        return max(1, int(args[0]))
    except (IndexError, ValueError):
        return default


def _last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    last = next((m for m in reversed(messages) if isinstance(m, dict)
                 and m.get("role") == "user"), None)
    return _text_of(last.get("content")) if last else ""


def _directive(body: Any) -> str | None:
    text = _last_user_text(body) if isinstance(body, dict) else ""
    start = text.rfind("@@", 0, max(0, text.rfind("@@")))
    if start < 0:
        return None
    end = text.find("@@", start + 2)
    return text[start + 2:end] or None


def _reply_and_usage(body: dict[str, Any], cached: int, say: bool = False,
                     add: bool = False) -> tuple[list[str], dict[str, Any]]:
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    msgs = [m for m in messages if isinstance(m, dict)]
    last_user = next((m for m in reversed(msgs) if m.get("role") == "user"), None)
    limit = body.get("max_tokens", body.get("max_completion_tokens"))
    try:
        limit = max(1, int(limit)) if limit is not None else DEFAULT_MAX_WORDS
    except (TypeError, ValueError):
        limit = DEFAULT_MAX_WORDS
    text = "echo: " + (_text_of(last_user.get("content")) if last_user else "")
    if say:
        said = _last_user_text(body)
        text = said[said.rfind("SAY:") + 4:] if "SAY:" in said else said
        text = text.split("/SAY", 1)[0]
    if add:
        import re

        terms = re.search(r"(-?\d+)\s*\+\s*(-?\d+)", _last_user_text(body))
        text = str(int(terms.group(1)) + int(terms.group(2))) if terms else "no sum asked"
    words = text.split()[:limit]
    prompt = max(1, sum(len(_text_of(m.get("content")).split()) for m in msgs))
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": len(words),
        "total_tokens": prompt + len(words),
        "prompt_tokens_details": {"cached_tokens": min(cached, prompt)},
    }
    return words, usage


class ScriptedServer(loopback.ThreadedServer):
    """In-process scripted provider; bind happens in __init__ so ``url`` is known early."""

    handler = _Handler
    server_class = _HTTPServer
    thread_name = "scripted-server"

    def __init__(self, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.billed_input = 0  # prompt tokens of the requests it took
        self.billed_output = 0  # completion tokens it sent
        self.in_flight = 0  # requests held in a slow delay or a hang now
        self.max_in_flight = 0  # the most held at once
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._script: deque[str] = deque()
        self._ids = itertools.count(1)
        self._connections: set[socket.socket] = set()
        super().__init__(host, port)

    @property
    def url(self) -> str:
        return f"{self.origin}/v1"

    def _closing(self) -> None:
        # stop() set `stopping` (releasing "hang" and "slow" handlers) and ended the
        # serving loop; wake the handler threads parked on idle keep-alive sockets.
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def script(self, *behaviours: str) -> None:
        """Queue behaviours, consumed FIFO one per chat-completions request."""
        with self._lock:
            self._script.extend(behaviours)

    def wait_for(self, predicate: Callable[[ScriptedServer], bool], timeout: float = 10.0
                 ) -> bool:
        """Block until predicate(self) holds (checked on each request and hold change)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    # --- used by the handler ----------------------------------------------------------

    @contextlib.contextmanager
    def _held(self, entry: dict[str, Any]) -> Iterator[None]:
        with self._changed:
            self.in_flight += 1
            entry["in_flight"] = self.in_flight
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()

    def billed_usd(self, price_in: float, price_out: float) -> float:
        """What it billed, at these $ per million tokens."""
        with self._lock:
            return (self.billed_input * price_in + self.billed_output * price_out) / 1e6

    def _bill(self, input_tokens: int, output_tokens: int) -> None:
        with self._lock:
            self.billed_input += input_tokens
            self.billed_output += output_tokens

    def _next_scripted(self) -> str | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def _record(self, entry: dict[str, Any]) -> None:
        with self._changed:
            self.requests.append(entry)
            self._changed.notify_all()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def spawn_server(
    api_key: str | None = None, port: int = 0, timeout: float = 15.0
) -> tuple[subprocess.Popen[str], str]:
    """Run the server in a subprocess (for clients under test in other processes).

    Returns (proc, url) once READY is printed; stop it with loopback.stop(proc).
    """
    args = ["--port", str(port), *(["--api-key", api_key] if api_key is not None else [])]
    return loopback.spawn("tests.support.scripted_server", *args, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible test server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    server = ScriptedServer(api_key=args.api_key, host=args.host, port=args.port).start()
    loopback.announce(server.url)
    # Poll so signal handlers get to run on the main thread promptly.
    while not done.wait(0.2):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
