"""Latency the engine adds to one chat call, against a bare aiohttp client, side by side.

The bare reference is a shared aiohttp.ClientSession, the client library the engine's
provider uses, with the engine's pool size and timeouts and nothing else. The scripted
OpenAI-compatible server runs in a subprocess so its CPU does not share our GIL. Bare and
engine calls are interleaved against the same server, each over its own kept-alive
connection, with the same request body (the one the engine sends, streamed or not). The
order alternates per pair (bare-engine, engine-bare, ...) so neither path always runs
right after the other.

Two passes per variant:
- back-to-back: durability is never awaited; the store's writer (energy estimate, SQLite
  commit) runs whenever the event loop lets it, and its work lands in whichever call comes
  next, half the time a bare one. The target applies to this pass.
- quiet: after each engine call, outside the timed region, wait for the writer's commit,
  so no writer work lands in a timed call: the call path alone.
Then, for information: the client process's CPU time per call (all threads, writer
included) over a block of bare calls and a block of engine calls, and the durable latency
(engine.call + engine.settled) of a smaller sample.

Run from the repo root: python benchmarks/call_overhead.py [--n 2000] [--warmup 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import aiohttp  # noqa: E402

from aetherflow_tui.engine import Engine, config  # noqa: E402
from aetherflow_tui.engine.providers.base import ChatRequest  # noqa: E402
from tests.support import loopback  # noqa: E402
from tests.support.plans import bouquet_text, model_entry, provider_table  # noqa: E402
from tests.support.scripted_server import spawn_server  # noqa: E402

TARGET_MS = 0.300
PROMPT = "Summarise the state of the factory in a few words for the operator"


def pct(values: list[int], q: float) -> float:
    """Nearest-rank percentile of nanosecond samples, in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def summary(values: list[int]) -> str:
    return f"p50 {pct(values, .5):.3f}  p90 {pct(values, .9):.3f}  p99 {pct(values, .99):.3f} ms"


def request_body(stream: bool) -> dict[str, object]:
    body: dict[str, object] = {"model": "echo",
                               "messages": [{"role": "user", "content": PROMPT}]}
    if stream:  # what the engine's client sends for a streamed call
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def bare_session() -> aiohttp.ClientSession:
    """The engine's client without the engine: same pool, timeouts and headers."""
    return aiohttp.ClientSession(
        # 32 connections: the engine's pool at the provider's default max_concurrency.
        connector=aiohttp.TCPConnector(limit=32, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=10.0,
                                      sock_read=60.0),
        headers={"Accept": "application/json"})


async def bare_call(client: aiohttp.ClientSession, url: str, body: dict[str, object],
                    stream: bool) -> str:
    async with client.post(url, json=body) as response:
        response.raise_for_status()
        if not stream:
            return json.loads(await response.read())["choices"][0]["message"]["content"]
        pieces: list[str] = []
        # Read to the end of the body, past [DONE]: leaving the block before the chunked
        # body's terminator arrived makes aiohttp close the connection instead of reusing
        # it. Line by line, as the engine reads a stream (readline()).
        async for raw in response.content:
            line = raw.decode()
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload != "[DONE]":
                for choice in json.loads(payload).get("choices") or ():
                    pieces.append((choice.get("delta") or {}).get("content") or "")
        return "".join(pieces)


async def measure(engine: Engine, client: aiohttp.ClientSession, url: str, *, stream: bool,
                  n: int, warmup: int, quiet: bool) -> tuple[list[int], list[int]]:
    spec = engine.bouquet.providers["bench"]
    request = ChatRequest.ask("echo", PROMPT, stream=stream)
    body = request_body(stream)
    bare: list[int] = []
    eng: list[int] = []
    clock = time.perf_counter_ns

    async def one_bare() -> None:
        t0 = clock()
        text = await bare_call(client, url, body, stream)
        elapsed = clock() - t0
        if not text:
            raise RuntimeError("a bare call returned no text")
        if i >= warmup:
            bare.append(elapsed)

    async def one_engine() -> None:
        t0 = clock()
        outcome = await engine.call(spec, request, purpose="bench")
        elapsed = clock() - t0
        if not outcome.ok:
            raise RuntimeError(f"an engine call failed: {outcome.error}")
        if quiet:
            await outcome.durable  # untimed: keep the writer out of the next timed call
        if i >= warmup:
            eng.append(elapsed)

    for i in range(warmup + n):
        if i % 2 == 0:
            await one_bare()
            await one_engine()
        else:
            await one_engine()
            await one_bare()
    return bare, eng


async def cpu_per_call(engine: Engine, client: aiohttp.ClientSession, url: str, *,
                       stream: bool, n: int) -> tuple[float, float]:
    """Process CPU ms per call, all threads, for n bare then n engine calls (rows flushed)."""
    spec = engine.bouquet.providers["bench"]
    request = ChatRequest.ask("echo", PROMPT, stream=stream)
    body = request_body(stream)
    t0 = time.process_time_ns()
    for _ in range(n):
        await bare_call(client, url, body, stream)
    t1 = time.process_time_ns()
    for _ in range(n):
        await engine.call(spec, request, purpose="bench")
    await engine.store.flush()
    t2 = time.process_time_ns()
    return (t1 - t0) / n / 1e6, (t2 - t1) / n / 1e6


async def durable_sample(engine: Engine, *, stream: bool, n: int) -> list[int]:
    spec = engine.bouquet.providers["bench"]
    request = ChatRequest.ask("echo", PROMPT, stream=stream)
    out: list[int] = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        outcome = await engine.call(spec, request, purpose="bench")
        settled = await engine.settled(outcome)
        out.append(time.perf_counter_ns() - t0)
        if settled.record.id is None or settled.record.energy is None:
            raise RuntimeError("settled row has no id or no energy")
    return out


async def run(url: str, home: Path, n: int, warmup: int, durable_n: int) -> bool:
    bouquet = config.parse(bouquet_text(provider_table(
        "bench", model_entry("echo", roles=["chat"], price_in=0.59, price_out=0.79),
        base_url=url, key="none")), None)
    engine = await Engine(bouquet, home).start()
    client = bare_session()
    endpoint = url.rstrip("/") + "/chat/completions"
    calls = 0
    verdicts: list[bool] = []
    lines: list[str] = []
    try:
        for stream in (False, True):
            label = "stream" if stream else "non-stream"
            for quiet in (False, True):
                bare, eng = await measure(engine, client, endpoint, stream=stream, n=n,
                                          warmup=warmup, quiet=quiet)
                calls += n + warmup
                added = pct(eng, .5) - pct(bare, .5)
                mode = "quiet" if quiet else "back-to-back"
                print(f"[{label}, {mode}] n={n} each, interleaved bare aiohttp/engine")
                print(f"  bare   {summary(bare)}")
                print(f"  engine {summary(eng)}")
                print(f"  added p50 {added:+.3f} ms, p90 {pct(eng, .9) - pct(bare, .9):+.3f} ms,"
                      f" p99 {pct(eng, .99) - pct(bare, .99):+.3f} ms;"
                      f" ratio engine/bare p50 {pct(eng, .5) / pct(bare, .5):.2f}x")
                if not quiet:
                    ok = added <= TARGET_MS
                    verdicts.append(ok)
                    lines.append(
                        f"call overhead ({label}): bare aiohttp p50 {pct(bare, .5):.3f} ms, "
                        f"engine p50 {pct(eng, .5):.3f} ms, added p50 {added:.3f} ms "
                        f"(target <= {TARGET_MS:.3f}) {'PASS' if ok else 'FAIL'}")
            cpu_n = max(1, n // 4)
            cpu_bare, cpu_engine = await cpu_per_call(engine, client, endpoint, stream=stream,
                                                      n=cpu_n)
            calls += cpu_n
            print(f"[{label}] client CPU per call (all threads, n={cpu_n}): bare aiohttp "
                  f"{cpu_bare:.3f} ms, engine incl. writer {cpu_engine:.3f} ms, "
                  f"added {cpu_engine - cpu_bare:+.3f} ms (information)")
            durable = await durable_sample(engine, stream=stream, n=durable_n)
            calls += durable_n
            print(f"[{label}] durable latency (call + settled), n={durable_n}: "
                  f"{summary(durable)}  (information)")
        await engine.store.flush()
        with sqlite3.connect(engine.store.path) as db:
            (rows,) = db.execute("SELECT COUNT(*) FROM calls WHERE purpose='bench'").fetchone()
            (totals,) = db.execute("SELECT SUM(calls) FROM daily_totals").fetchone()
        recorded = rows == calls and totals == calls
        print(f"rows recorded: {rows} of {calls} calls, daily_totals.calls {totals} "
              f"{'OK' if recorded else 'MISMATCH'}")
        verdicts.append(recorded)
    finally:
        await client.close()
        await engine.stop()
    for line in lines:
        print(line)
    return all(verdicts)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--durable", type=int, default=200)
    args = parser.parse_args()
    proc, url = spawn_server()
    try:
        with tempfile.TemporaryDirectory(prefix="af-bench-") as home:
            ok = asyncio.run(run(url, Path(home), args.n, args.warmup, args.durable))
    finally:
        loopback.stop(proc)
    print("PASS" if ok else "FAIL", f"(target: added p50 <= {TARGET_MS:.3f} ms per call, "
          "every call recorded)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
