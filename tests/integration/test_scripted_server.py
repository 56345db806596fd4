"""Self-test for the scripted provider server: other tests trust it, so pin its contract."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import loopback
from tests.support.scripted_server import ScriptedServer, spawn_server


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def _chat(model: str = "echo", content: str = "hello there world", **extra: Any) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def _sse_payloads(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def test_models_and_unknown_route(server: ScriptedServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        models = client.get("/models")
        assert models.status_code == 200
        assert models.json() == {"object": "list", "data": [{"id": "echo", "object": "model"}]}
        missing = client.get("/nope")
        assert missing.status_code == 404
        assert "error" in missing.json()


def test_ok_non_stream_shape_and_usage(server: ScriptedServer) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there world"},
        ],
    }
    resp = httpx.post(f"{server.url}/chat/completions", json=body)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    data = resp.json()
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert data["model"] == "gpt-4o-mini"
    assert isinstance(data["created"], int)
    choice = data["choices"][0]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": "echo: hello there world"}
    # 2 system words + 3 user words; reply is "echo:" + 3 words.
    assert data["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 4,
        "total_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    recorded = server.requests[-1]
    assert recorded["path"] == "/v1/chat/completions"
    assert recorded["body"] == body
    assert recorded["headers"]["content-type"] == "application/json"


def test_max_tokens_truncates_and_default_cap(server: ScriptedServer) -> None:
    long_text = " ".join(f"w{i}" for i in range(40))
    with httpx.Client(base_url=server.url) as client:
        short = client.post("/chat/completions", json=_chat(content=long_text, max_tokens=3))
        assert short.json()["choices"][0]["message"]["content"] == "echo: w0 w1"
        assert short.json()["usage"]["completion_tokens"] == 3
        capped = client.post("/chat/completions", json=_chat(content=long_text))
        assert capped.json()["usage"]["completion_tokens"] == 16


def test_cached_tokens(server: ScriptedServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        resp = client.post("/chat/completions", json=_chat("cached:2"))
        assert resp.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}
        # Capped at prompt_tokens (3 words).
        resp = client.post("/chat/completions", json=_chat("cached:50"))
        assert resp.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}


def test_stream_reassembles_with_usage(server: ScriptedServer) -> None:
    body = _chat("echo", stream=True, stream_options={"include_usage": True})
    with httpx.Client(base_url=server.url) as client:
        with client.stream("POST", "/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "text/event-stream"
            assert resp.headers["transfer-encoding"] == "chunked"
            text = resp.read().decode()
        payloads = _sse_payloads(text)
        assert payloads[-1] == "[DONE]"
        chunks = [json.loads(p) for p in payloads[:-1]]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert all(c["model"] == "echo" for c in chunks)
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        content = "".join(
            c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]
        )
        assert content == "echo: hello there world"
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["completion_tokens"] == 4
        assert chunks[-1]["usage"]["prompt_tokens"] == 3

        # Same keep-alive client still works, and without include_usage there is no usage.
        plain = client.post("/chat/completions", json=_chat(stream=True))
        plain_chunks = [json.loads(p) for p in _sse_payloads(plain.text)[:-1]]
        assert all("usage" not in c for c in plain_chunks)


def test_status_429_retry_after(server: ScriptedServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        resp = client.post("/chat/completions", json=_chat("status:429:2"))
        assert resp.status_code == 429
        assert resp.headers["retry-after"] == "2"
        assert resp.json() == {"error": {"message": "scripted 429", "type": "scripted"}}
        bare = client.post("/chat/completions", json=_chat("status:429"))
        assert bare.status_code == 429
        assert "retry-after" not in bare.headers
        assert client.post("/chat/completions", json=_chat("status:503")).status_code == 503


def test_status_503_retry_after(server: ScriptedServer) -> None:
    resp = httpx.post(f"{server.url}/chat/completions", json=_chat("status:503:4"))
    assert resp.status_code == 503 and resp.headers["retry-after"] == "4"


def test_hostile_modes(server: ScriptedServer) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        flood = client.post("/chat/completions",
                            json=_chat("flood:300", stream=True, max_tokens=2))
        words = [json.loads(p)["choices"][0]["delta"].get("content", "")
                 for p in _sse_payloads(flood.text)[:-1] if json.loads(p)["choices"]]
        assert "".join(words).split() == ["flood"] * 300  # max_tokens ignored
        huge = client.post("/chat/completions", json=_chat("hugeline:100000", stream=True))
        assert max(len(line) for line in huge.text.splitlines()) == len("data: ") + 100000
        body = client.post("/chat/completions", json=_chat("hugeline:100000"))
        assert len(body.content) == 100000 and body.json()["choices"]
        started = time.monotonic()
        slow = client.post("/chat/completions", json=_chat("trickle:0.001"))
        assert slow.json()["choices"][0]["message"]["content"] == "echo: hello there world"
        assert time.monotonic() - started >= 0.001 * len(slow.content)
        for model, marker in (("endless", "data: "), ("keepalive", ": keep-alive")):
            with client.stream("POST", "/chat/completions",
                               json=_chat(model, stream=True)) as resp:
                lines = resp.iter_lines()
                seen = [next(lines) for _ in range(6)]
            assert sum(line.startswith(marker) for line in seen) >= 3


def test_api_key_enforced() -> None:
    with ScriptedServer(api_key="sk-right") as srv:
        wrong = httpx.post(
            f"{srv.url}/chat/completions",
            json=_chat(),
            headers={"Authorization": "Bearer sk-wrong"},
        )
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        missing = httpx.post(f"{srv.url}/chat/completions", json=_chat())
        assert missing.status_code == 401
        right = httpx.post(
            f"{srv.url}/chat/completions",
            json=_chat(),
            headers={"Authorization": "Bearer sk-right"},
        )
        assert right.status_code == 200


def test_malformed_and_nochoices(server: ScriptedServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        bad = client.post("/chat/completions", json=_chat("malformed"))
        assert bad.status_code == 200
        assert bad.headers["content-type"] == "application/json"
        assert "[red]" in bad.text and "\x1b[31m" in bad.text
        with pytest.raises(json.JSONDecodeError):
            bad.json()
        empty = client.post("/chat/completions", json=_chat("nochoices"))
        assert empty.json() == {"id": "x", "object": "chat.completion"}


def test_slow_delays_first_byte(server: ScriptedServer) -> None:
    started = time.monotonic()
    resp = httpx.post(f"{server.url}/chat/completions", json=_chat("slow:0.3"))
    assert resp.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_drop_and_broken_stream(server: ScriptedServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        with pytest.raises(httpx.TransportError):
            client.post("/chat/completions", json=_chat("drop"))
        with pytest.raises(httpx.TransportError):
            client.post("/chat/completions", json=_chat("broken-stream"))
    received: list[str] = []
    client = httpx.Client(base_url=server.url)
    stream = client.stream("POST", "/chat/completions", json=_chat("broken-stream", stream=True))
    with client, pytest.raises(httpx.TransportError), stream as resp:
        for line in resp.iter_lines():
            received.append(line)
    payloads = [p for p in (line.removeprefix("data: ") for line in received if line) if p]
    assert len(payloads) == 2
    assert "[DONE]" not in payloads


def test_hang_times_out_and_stop_is_fast() -> None:
    srv = ScriptedServer().start()
    try:
        client = httpx.Client(base_url=srv.url, timeout=0.3)
        with client, pytest.raises(httpx.ReadTimeout):
            client.post("/chat/completions", json=_chat("hang"))
        # A second hanging request whose client stays connected while we stop.
        idle = httpx.Client(base_url=srv.url, timeout=5)
        srv.script("hang")
        errors: list[BaseException] = []

        def call() -> None:
            try:
                idle.post("/chat/completions", json=_chat())
            except BaseException as exc:  # recorded for the assertion below
                errors.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 2
        while len(srv.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(srv.requests) == 2
    finally:
        started = time.monotonic()
        srv.stop()
        elapsed = time.monotonic() - started
    assert elapsed < 2
    caller.join(timeout=2)
    assert not caller.is_alive()
    assert errors and isinstance(errors[0], httpx.TransportError)
    idle.close()


def test_script_queue_fifo_overrides_model(server: ScriptedServer) -> None:
    server.script("status:500", "status:503", "cached:1")
    with httpx.Client(base_url=server.url) as client:
        codes = [client.post("/chat/completions", json=_chat("echo")) for _ in range(4)]
    assert [r.status_code for r in codes] == [500, 503, 200, 200]
    assert codes[2].json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 1
    # Queue exhausted: back to the model-name behaviour (plain ok).
    assert codes[3].json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def test_concurrent_requests(server: ScriptedServer) -> None:
    def one(i: int) -> str:
        resp = httpx.post(f"{server.url}/chat/completions", json=_chat("slow:0.2", f"n{i}"))
        return resp.json()["choices"][0]["message"]["content"]

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(one, range(32)))
    # Served in parallel: well under 32 * 0.2s.
    assert time.monotonic() - started < 3
    assert results == [f"echo: n{i}" for i in range(32)]


def test_spawn_server_subprocess() -> None:
    proc, url = spawn_server(api_key="sk-sub")
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        resp = httpx.post(
            f"{url}/chat/completions",
            json=_chat(),
            headers={"Authorization": "Bearer sk-sub"},
            timeout=5,
        )
        assert resp.status_code == 200
        assert resp.json()["choices"][0]["message"]["content"] == "echo: hello there world"
    finally:
        loopback.stop(proc)
    assert proc.returncode == 0
