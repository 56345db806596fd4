"""Latency Aetherflow's router adds to a call, against LiteLLM's Router, side by side.

LiteLLM is never a dependency of the project: on first use this script creates a separate
venv (~/.cache/aetherflow-bench/litellm-venv, or $AF_BENCH_LITELLM_VENV), installs
`litellm` there with the engine's runtime dependencies from pyproject.toml (not the
cockpit's textual, nor llama-cpp-python or onnxruntime, which the engine does not import),
and re-executes itself with that venv's Python. The engine is imported from this checkout
(the repo root goes on sys.path), so no `pip install -e` is needed. If LiteLLM cannot be
installed, it says why and exits 2.

One loopback server (benchmarks/support/fast_server.py, in a subprocess) answers every
call. Three paths, interleaved call by call, cycling through the six orders of the three
so each path runs after each other path equally often (whatever work a path leaves
running in the background, LiteLLM's logging or the engine's store writer, lands on the
others evenly), with the same prompt and max_tokens:
- bare: a shared aiohttp.ClientSession, the client library the engine's provider uses,
  with the engine's pool size and timeouts, POST /chat/completions (a stream read line
  by line to its end, as the engine reads it);
- aetherflow: what the scheduler does for one attempt: Router.route() over the bouquet,
  the global cap and the provider's gate, then Engine.call() (client, pricing, budget
  reservation, the ledger row queued; durability not awaited);
- litellm: litellm.Router(model_list=[one openai/ deployment whose api_base is the
  server]).acompletion(), LiteLLM's defaults otherwise (telemetry off, local cost map).
Added latency = p50(path) - p50(bare). Non-streamed (the target), then streamed for
information (each path reads the whole stream).

Run from the repo root: python benchmarks/litellm_overhead.py [--n 2000] [--warmup 200]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

TARGET_FRACTION = 1 / 5
VENV = Path(os.environ.get("AF_BENCH_LITELLM_VENV")
            or Path.home() / ".cache" / "aetherflow-bench" / "litellm-venv")
IN_VENV_FLAG = "AF_BENCH_IN_LITELLM_VENV"
# The engine imports none of these; they are the cockpit's or local models'.
NOT_FOR_THE_ENGINE = {"textual", "llama-cpp-python", "onnxruntime", "tokenizers"}
PROMPT = "Summarise the state of the factory in a few words for the operator"
MAX_TOKENS = 64


# -- the LiteLLM venv ----------------------------------------------------------------------


def engine_requirements() -> list[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    out = []
    for requirement in project["dependencies"]:
        name = requirement.split(";")[0]
        for sep in "<>=!~[ ":
            name = name.split(sep)[0]
        if name.lower() not in NOT_FOR_THE_ENGINE:
            out.append(requirement)
    return out


def ensure_venv() -> Path | str:
    """The venv's python, or why it could not be made."""
    python = VENV / "bin" / "python"
    marker = VENV / ".aetherflow-bench"
    wanted = json.dumps(["litellm", *engine_requirements()])
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"setting up LiteLLM in {VENV} (once; never a project dependency) ...", flush=True)
    steps = [[sys.executable, "-m", "venv", str(VENV)],
             [str(python), "-m", "pip", "install", "--quiet", "litellm",
              *engine_requirements()]]
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-12:])
            return f"`{' '.join(command[:4])} ...` failed (exit {done.returncode}):\n{tail}"
    marker.write_text(wanted)
    return python


# -- the three paths -----------------------------------------------------------------------


def pct(values: list[int], q: float) -> float:
    """Nearest-rank percentile of nanosecond samples, in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


async def measure(url: str, home: Path, *, stream: bool, n: int, warmup: int
                  ) -> dict[str, list[int]]:
    import aiohttp
    import litellm

    from aetherflow_tui.engine import Engine, config
    from aetherflow_tui.engine.budget import worst_input_tokens
    from aetherflow_tui.engine.providers.base import ChatMessage, ChatRequest
    from tests.support.plans import bouquet_text, model_entry, provider_table

    bouquet = config.parse(bouquet_text(provider_table(
        "bench", model_entry("echo", roles=["chat", "cheap"], price_in=0.59, price_out=0.79),
        base_url=url, key="none")), None)
    engine = await Engine(bouquet, home).start()
    await engine.provider_views()  # which providers have a usable key, as start_run does
    await asyncio.to_thread(engine.router.estimate_energy, engine.plan_runs.wh_per_1k)
    # The engine's client without the engine: 32 connections (the engine's pool at the
    # provider's default max_concurrency), the same timeouts and headers.
    client = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=32, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=10.0,
                                      sock_read=60.0),
        headers={"Accept": "application/json"})
    endpoint = url.rstrip("/") + "/chat/completions"
    router = litellm.Router(model_list=[{
        "model_name": "echo",
        "litellm_params": {"model": "openai/echo", "api_base": url, "api_key": "none"}}])
    messages = [{"role": "user", "content": PROMPT}]
    body: dict[str, Any] = {"model": "echo", "messages": messages, "max_tokens": MAX_TOKENS}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    chat = (ChatMessage("user", PROMPT),)
    request = ChatRequest("echo", chat, max_tokens=MAX_TOKENS, stream=stream)
    worst_in = worst_input_tokens(request)
    clock = time.perf_counter_ns

    async def bare() -> str:
        async with client.post(endpoint, json=body) as response:
            response.raise_for_status()
            if not stream:
                return json.loads(await response.read())["choices"][0]["message"]["content"]
            pieces = []
            async for raw in response.content:  # to the end, line by line, as the engine does
                line = raw.decode()
                if line.startswith("data:") and "[DONE]" not in line:
                    for choice in json.loads(line[5:]).get("choices") or ():
                        pieces.append((choice.get("delta") or {}).get("content") or "")
            return "".join(pieces)

    async def aetherflow() -> str:
        # One attempt of PlanRun._attempt: route, global cap, provider gate, call.
        route = engine.router.route("documentation", input_tokens=len(PROMPT) // 4 + 1,
                                    worst_input_tokens=worst_in, max_tokens=MAX_TOKENS)
        candidate = route.best
        call = ChatRequest(candidate.model.id, chat, max_tokens=MAX_TOKENS, stream=stream)
        gate = engine.gate(candidate.provider)
        async with engine.concurrency.slot(), gate.slot(worst_in // 4 + MAX_TOKENS):
            outcome = await engine.call(candidate.provider, call, purpose="bench")
        if not outcome.ok or outcome.result is None:
            raise RuntimeError(f"an engine call failed: {outcome.error}")
        return outcome.result.text

    async def lite() -> str:
        if not stream:
            response = await router.acompletion(model="echo", messages=messages,
                                                max_tokens=MAX_TOKENS)
            return response.choices[0].message.content or ""
        pieces = []
        response = await router.acompletion(model="echo", messages=messages,
                                            max_tokens=MAX_TOKENS, stream=True,
                                            stream_options={"include_usage": True})
        async for chunk in response:
            for choice in chunk.choices or ():
                pieces.append(choice.delta.content or "")
        return "".join(pieces)

    paths = {"bare": bare, "aetherflow": aetherflow, "litellm": lite}
    orders = list(itertools.permutations(paths))
    samples: dict[str, list[int]] = {name: [] for name in paths}
    try:
        for i in range(warmup + n):
            for name in orders[i % len(orders)]:
                t0 = clock()
                text = await paths[name]()
                elapsed = clock() - t0
                if not text:
                    raise RuntimeError(f"the {name} path returned no text")
                if i >= warmup:
                    samples[name].append(elapsed)
        await engine.store.flush()
    finally:
        await client.close()
        await engine.stop()
    return samples


def report(label: str, samples: dict[str, list[int]]) -> tuple[float, float, float]:
    bare = pct(samples["bare"], .5)
    print(f"[{label}] n={len(samples['bare'])} each, interleaved, all six orders in turn")
    for name in ("bare", "aetherflow", "litellm"):
        values = samples[name]
        print(f"  {name:10} p50 {pct(values, .5):.3f}  p90 {pct(values, .9):.3f}  "
              f"p99 {pct(values, .99):.3f} ms  added p50 {pct(values, .5) - bare:+.3f} ms")
    added_af = pct(samples["aetherflow"], .5) - bare
    added_lite = pct(samples["litellm"], .5) - bare
    ratio = added_af / added_lite if added_lite > 0 else float("inf")
    print(f"  added latency aetherflow / litellm: {ratio:.3f} "
          f"(litellm adds {added_lite / max(added_af, 1e-9):.1f}x as much)")
    return added_af, added_lite, ratio


def run(n: int, warmup: int) -> int:
    from importlib.metadata import version

    from benchmarks.support.fast_server import spawn_fast_server
    from tests.support import loopback

    print(f"litellm {version('litellm')}, aiohttp {version('aiohttp')} (the bare client's and "
          f"the engine's), httpx {version('httpx')}, python {sys.executable}")
    proc, url = spawn_fast_server()
    results = {}
    try:
        for stream in (False, True):
            with tempfile.TemporaryDirectory(prefix="af-bench-") as home:
                samples = asyncio.run(measure(url, Path(home), stream=stream, n=n,
                                              warmup=warmup))
            results[stream] = report("stream" if stream else "non-stream", samples)
    finally:
        loopback.stop(proc)
    added_af, added_lite, ratio = results[False]
    ok = ratio <= TARGET_FRACTION
    s_af, s_lite, s_ratio = results[True]
    print(f"streamed (information): aetherflow adds {s_af:+.3f} ms, litellm {s_lite:+.3f} ms, "
          f"ratio {s_ratio:.3f}")
    print(f"added latency per call (non-stream): aetherflow {added_af:+.3f} ms, litellm Router "
          f"{added_lite:+.3f} ms, ratio {ratio:.3f} (target <= {TARGET_FRACTION:.2f}) "
          f"{'PASS' if ok else 'FAIL'}")
    print("PASS" if ok else "FAIL", "(target: Aetherflow's added latency per call <= 1/5 of "
          "LiteLLM Router's, same server, same run)")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    # LiteLLM fetches its model cost map from the network at import unless told not to.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    try:
        import litellm
    except ImportError:
        if os.environ.get(IN_VENV_FLAG):
            print(f"LiteLLM is not importable even in {VENV}; delete that folder to rebuild "
                  "it")
            return 2
        python = ensure_venv()
        if isinstance(python, str):
            print(f"cannot install LiteLLM: {python}")
            print("NOT RUN (exit 2): LiteLLM could not be installed")
            return 2
        env = dict(os.environ, **{IN_VENV_FLAG: "1"})
        os.execve(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]],
                  env)
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return run(args.n, args.warmup)


if __name__ == "__main__":
    sys.exit(main())
