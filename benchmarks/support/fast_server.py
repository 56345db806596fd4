"""A fast OpenAI-compatible chat-completions server for benchmarks: raw asyncio streams.

tests/support/scripted_server.py is a ThreadingHTTPServer: one thread per connection,
several hundred microseconds of CPU per request. Benchmarks that push hundreds of calls a
second, or hold hundreds of slow requests open at once, need a server that is neither the
bottleneck nor the noise. This one parses just enough HTTP/1.1 (Content-Length or chunked
request bodies, keep-alive), answers every ``POST .../chat/completions`` with a short echo
of the last user message, non-streamed or as SSE (chunked, ``[DONE]``, usage when
``stream_options.include_usage`` is set), and honours one directive from the scripted
server: ``@@slow:SECONDS@@`` in the last user message waits that long (asyncio.sleep)
before answering. Everything else is answered at once. ``GET .../stats`` returns how many
completions it served and how many connections it accepted. Standard library only.

Run as ``python benchmarks/support/fast_server.py [--host H] [--port 0]``: it prints
``READY <url>`` (the base URL, ending in /v1) and serves until SIGTERM or SIGINT, the
handshake of tests/support/loopback.py. ``spawn_fast_server()`` runs it in a subprocess, so
its CPU is not the client's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: the repo root, for tests.support
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import loopback

REPLY_WORDS = 8  # words of the echoed prompt in each answer


def _last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return ""
    return ""


def _delay(text: str) -> float:
    """The @@slow:SECONDS@@ directive (the last @@...@@ pair, as the scripted server reads)."""
    end = text.rfind("@@")
    if end <= 0:
        return 0.0
    start = text.rfind("@@", 0, end)
    if start < 0:
        return 0.0
    directive = text[start + 2:end]
    if not directive.startswith("slow:"):
        return 0.0
    try:
        return max(0.0, float(directive[5:]))
    except ValueError:
        return 0.0


def _head(status: str, content_type: str, length: int | None, close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}"]
    if length is None:
        lines += ["Cache-Control: no-cache", "Transfer-Encoding: chunked"]
    else:
        lines.append(f"Content-Length: {length}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class FastServer:
    def __init__(self) -> None:
        self._ids = 0
        self.requests = 0
        self.connections = 0
        self.open: set[asyncio.StreamWriter] = set()

    def _completion(self, body: dict[str, Any]) -> bytes:
        """The whole response (head and body) for one chat completion."""
        self._ids += 1
        self.requests += 1
        model = str(body.get("model") or "echo")
        text = _last_user_text(body)
        words = ("echo: " + text).split()
        limit = body.get("max_tokens")
        n = min(REPLY_WORDS, int(limit)) if isinstance(limit, int) and limit > 0 \
            else REPLY_WORDS
        words = words[:n]
        prompt_tokens = max(1, sum(len(str(m.get("content", "")).split())
                                   for m in body.get("messages") or () if isinstance(m, dict)))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                 "total_tokens": prompt_tokens + len(words),
                 "prompt_tokens_details": {"cached_tokens": 0}}
        cid = f"chatcmpl-{self._ids}"
        created = int(time.time())
        if not body.get("stream"):
            payload = json.dumps({
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant",
                                                     "content": " ".join(words)},
                             "finish_reason": "stop"}],
                "usage": usage,
            }).encode()
            return _head("200 OK", "application/json", len(payload), False) + payload

        def event(delta: dict[str, Any] | None, finish: str | None = None,
                  with_usage: bool = False) -> bytes:
            data = {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model,
                    "choices": [] if delta is None else
                    [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if with_usage:
                data["usage"] = usage
            return _chunk(b"data: " + json.dumps(data).encode() + b"\n\n")

        parts = [_head("200 OK", "text/event-stream", None, False),
                 event({"role": "assistant", "content": ""})]
        for i, word in enumerate(words):
            parts.append(event({"content": word if i == 0 else " " + word}))
        parts.append(event({}, "stop"))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            parts.append(event(None, with_usage=True))
        parts.append(_chunk(b"data: [DONE]\n\n"))
        parts.append(b"0\r\n\r\n")
        return b"".join(parts)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                request_line, _, rest = head.decode("latin-1").partition("\r\n")
                method, _, target = request_line.partition(" ")
                path = target.split(" ", 1)[0].split("?", 1)[0].rstrip("/")
                headers: dict[str, str] = {}
                for line in rest.split("\r\n"):
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    raw = bytearray()
                    while True:
                        size = int((await reader.readline()).split(b";")[0].strip() or b"0",
                                   16)
                        if size == 0:
                            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        raw += await reader.readexactly(size)
                        await reader.readline()
                    data = bytes(raw)
                else:
                    length = int(headers.get("content-length") or 0)
                    data = await reader.readexactly(length) if length else b""
                close = headers.get("connection", "").lower() == "close"
                if method == "POST" and path.endswith("/chat/completions"):
                    try:
                        body = json.loads(data) if data else None
                    except ValueError:
                        body = None
                    if not isinstance(body, dict):
                        payload = b'{"error": {"message": "body must be a JSON object"}}'
                        response = _head("400 Bad Request", "application/json",
                                         len(payload), close) + payload
                    else:
                        delay = _delay(_last_user_text(body))
                        if delay > 0:
                            await asyncio.sleep(delay)
                        response = self._completion(body)
                elif method == "GET" and path.endswith("/stats"):
                    payload = json.dumps({"requests": self.requests,
                                          "connections": self.connections}).encode()
                    response = _head("200 OK", "application/json", len(payload), close) + payload
                elif method == "GET" and path.endswith("/models"):
                    payload = b'{"object": "list", "data": [{"id": "echo", "object": "model"}]}'
                    response = _head("200 OK", "application/json", len(payload), close) + payload
                else:
                    payload = b'{"error": {"message": "no route"}}'
                    response = _head("404 Not Found", "application/json", len(payload),
                                     close) + payload
                writer.write(response)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            self.open.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


async def _serve(host: str, port: int) -> None:
    server = FastServer()
    listener = await asyncio.start_server(server.handle, host, port, backlog=1024)
    bound = listener.sockets[0].getsockname()
    loopback.announce(f"http://{bound[0]}:{bound[1]}/v1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with listener:
        await stop.wait()
        # Close the kept-alive connections so their handlers end on their own, not by
        # cancellation (which asyncio reports on stderr).
        for writer in list(server.open):
            writer.close()
        for _ in range(100):
            if not server.open:
                break
            await asyncio.sleep(0.01)


def spawn_fast_server(host: str = "127.0.0.1", timeout: float = 15.0
                      ) -> tuple[subprocess.Popen[str], str]:
    """Run the server in a subprocess; returns (proc, base url) once it is READY.

    Stop it with loopback.stop(proc), or loopback.kill(proc) for an outage.
    """
    return loopback.spawn("benchmarks.support.fast_server", "--host", host, "--port", "0",
                          timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
