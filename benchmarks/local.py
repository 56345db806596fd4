"""Local models (issue 5): event-loop lag, tokens/s against bare llama-cpp-python, the duty
cycle, cancellation latency, and the fall-back from dead APIs to the local model.

The model is the embedded one (path = "embedded": Gemma 3 270M Q4_K_M, assembled once into
a shared temporary models dir that every engine home below links to), declared as
[providers.local] kind = "llama_cpp", threads = 2, context = 2048, roles survival and chat.
Every engine figure goes through Engine.call() (or a plan run) to that provider: the
generation thread, the queue back to the event loop, the throttle, the ledger row.

1. Event-loop lag. A probe coroutine sleeps 5 ms in a loop and records how late it wakes
   (wake time minus the time it asked for). First 3 s with the engine idle and the model
   loaded (baseline), then for the whole of one streamed Engine.call of 200 tokens
   (temperature 0), its pieces counted by an on_token callback as a client would.
2. Tokens/s against bare llama-cpp-python. The bare reference is
   llama_cpp.Llama(model_path, n_ctx=2048, n_threads=2, n_threads_batch=2,
   chat_format="gemma", verbose=False).create_chat_completion(messages, max_tokens=N,
   temperature=0, stream=True), iterated on the main thread, nothing else running; the
   engine side is Engine.call(spec, ChatRequest(..., temperature=0, max_tokens=N,
   stream=True)) with an on_token callback. Same file, context, threads, chat format and
   prompt; greedy decoding, so both produce the same tokens (checked: same text). Both are
   measured the same way: the arrival time of every streamed piece with content (bare: as
   the iterator yields it; engine: when on_token sees it on the event loop), tokens/s =
   (pieces - 1) / (last arrival - first arrival), i.e. the tokens generated after the first
   one over the time after the first one. A piece is one generated token: checked against
   the engine's own count of generated tokens (usage.output_tokens). Rounds interleave
   bare, engine and throttled (below), the order rotating each round; medians.
3. Duty cycle. In the same rounds, the engine call with engine.throttle_local(duty=0.5)
   set before it (and duty=1.0 after): tokens/s over the unthrottled engine's median.
4. Cancellation. The asyncio task of an Engine.call to the local model is cancelled
   (a) while decoding: 0 to 20 ms after the 5th to 20th token arrived (the offsets spread
   the cancels over one token's evaluation: a cancel right at a token's arrival finds the
   generation thread between two evaluations), and (b) while the prompt is evaluated: a
   prompt of about 1,500 tokens (a different first word each trial, so no trial reuses the
   previous one's evaluated prefix), cancelled 100 ms after the call starts, no token
   arrived yet. Latency = task.cancel() to the task being done (the engine waits for the
   generation thread to stop, so the model is free again). The model's own counters say
   where the generation stopped; for scale, the same kind of prompt is evaluated once in
   full, and after the trials the model must answer as before.
5. All APIs down -> first step served locally. Each trial: a fresh engine home, an
   engine whose bouquet has 3 kind = "openai" API providers (key = "none", priced
   models, one with a logic role so the mode is BOUQUET) pointing at a fresh
   benchmarks/support/fast_server.py subprocess on 127.0.0.1, plus the local provider
   (the API providers are not declared local = true, so the engine sees remote APIs).
   Warm-up: a 1-step plan served by an API, response_mode checked BOUQUET. Then the
   server is killed (SIGKILL, reaped) and at once a 1-step plan (type documentation,
   max_tokens 16) goes through start_run; the time runs from the kill to the step's
   finish time (its record), and the step must have been served by the local provider.
   The local model is not loaded in these engines (it loads on first use), so each
   measured trial includes a cold load of the model (the GGUF is already assembled; its
   sha256 is checked at load); the first trial is also the first local use in this
   process (it imports llama_cpp). For information, two more trials with the model
   loaded before the kill.
6. A whole survival plan (issue 14): 10 steps of 12 tokens (type documentation, each
   depending on the one before, so they run one after the other), in an engine watched
   as `aetherflow run` watches it (start_vigilance(role="run", canaries="recovery"), the
   default [regulator]: a sample a second, a window of 5, hold 15 s). The same 3 API
   providers on a fast_server, and the local model loaded before the run. Two cases,
   3 trials each, a fresh engine home and server per trial:
   (a) the APIs dead from the start: the server is killed before anything, 10 calls
       fail as earlier traffic would have (the error rate is 100% over enough calls),
       and the plan starts once the regulator has decided from that (CRITICAL on the
       error rate);
   (b) killed mid-run: the plan starts with the APIs up (each answer 0.3 s late, the
       fast server's @@slow@@ directive, so that step 4 is in flight); once step 3 is
       done the server is killed (SIGKILL, reaped) and the rest falls back to the local
       model.
   Wall time runs from start_run to run.wait() returning. Each step's own generation
   time is: for a step an API served, its call's duration; for the local model, the
   time its generation thread evaluated the model plus the time the duty cycle (the
   regulator's throttle for the machine's own load) made it rest, read from the
   provider's counters before and after the run. What is neither is waiting: the local
   queue paused, routing, failed attempts, the store. Target: wall <= 1.3x the sum.

Run from the repo root: python benchmarks/local.py [--rounds 7] [--tokens 64]
[--only fallback|lag|rates|cancel|survival]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from aetherflow_tui.engine import Engine, ResponseMode, config, gguf  # noqa: E402
from aetherflow_tui.engine.keys import KeyVault  # noqa: E402
from aetherflow_tui.engine.providers.base import ChatMessage, ChatRequest  # noqa: E402
from benchmarks.support.fast_server import spawn_fast_server  # noqa: E402
from tests.support import loopback  # noqa: E402
from tests.support.plans import bouquet_text, model_entry, provider_table  # noqa: E402

TARGET_LAG_MS = 20.0
TARGET_RATIO = 0.90
TARGET_DUTY = 0.55
TARGET_CANCEL_S = 1.0
TARGET_FALLBACK_S = 2.0
TARGET_SURVIVAL_RATIO = 1.3

MODEL = gguf.EMBEDDED_MODEL_ID  # "gemma-3-270m"
THREADS = 2
CONTEXT = 2048
PROBE_S = 0.005
BASELINE_S = 3.0
LAG_TOKENS = 200
RATE_TOKENS = 64
ROUNDS = 7
# (tokens arrived, then ms): the offsets spread the cancels over one token's evaluation
DECODE_CANCEL_AT = ((5, 0), (8, 4), (11, 8), (14, 12), (17, 16), (20, 20))
PROMPT_TRIALS = 6
PROMPT_TOKENS = 1500
PROMPT_CANCEL_S = 0.100
FALLBACK_TRIALS = 5
WARM_TRIALS = 2
SURVIVAL_STEPS = 10
SURVIVAL_TOKENS = 12
SURVIVAL_TRIALS = 3
KILL_AFTER = 3  # steps done before the mid-run kill
# The fast server answers a step this much later (its @@slow@@ directive): in milliseconds
# the whole plan would be done before the kill; this way step 4 is in flight when it comes.
API_STEP_S = 0.3

PROMPT = "Explain in detail how a steam engine works, step by step."
LONG_TEXT = (
    "The factory runs all night. Each machine reports its temperature, its load and the "
    "number of parts it made in the last hour; the operator reads the figures, compares "
    "them with yesterday's, and decides which line to slow down before it overheats. "
)

LOCAL = provider_table("local", model_entry(MODEL, path="embedded", roles=["survival", "chat"],
                                            context=CONTEXT),
                       kind="llama_cpp", threads=THREADS)

APIS = (("api-a", 0.10, 0.40, 1.00, 3.00), ("api-b", 0.15, 0.60, 2.00, 6.00),
        ("api-c", 0.20, 0.80, 3.00, 9.00))


def bouquet(api_url: str | None = None) -> config.Bouquet:
    apis = [] if api_url is None else [
        provider_table(pid, model_entry("echo-small", roles=["chat", "cheap"], price_in=small_in,
                                        price_out=small_out),
                       model_entry("echo-large", roles=["reasoning", "qa"], price_in=large_in,
                                   price_out=large_out),
                       base_url=api_url, key="none")
        for pid, small_in, small_out, large_in, large_out in APIS]
    return config.parse(bouquet_text(LOCAL, *apis, budget={"daily_usd": 100}), None)


def new_engine(bq: config.Bouquet, home: Path, models: Path) -> Engine:
    """An engine whose models dir links to the shared, already assembled GGUF."""
    (home / "models").symlink_to(models, target_is_directory=True)
    return Engine(bq, home, vault=KeyVault(environ={}))


def messages(prompt: str) -> tuple[ChatMessage, ...]:
    return (ChatMessage("user", prompt),)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- one generation, timed the same way on both sides -------------------------------------


@dataclass
class Gen:
    started: float
    times: list[float] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    tokens: int | None = None  # the engine's count of generated tokens
    finish: str | None = None

    def add(self, piece: str) -> None:
        self.times.append(time.perf_counter())
        self.pieces.append(piece)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def rate(self) -> float:
        """Tokens after the first over the time after the first."""
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else float("nan")

    @property
    def ttft(self) -> float:
        return self.times[0] - self.started

    @property
    def interval_p50_ms(self) -> float:
        gaps = [b - a for a, b in zip(self.times, self.times[1:], strict=False)]
        return 1000 * statistics.median(gaps)


def bare_generate(llm: Any, prompt: str, n: int) -> Gen:
    gen = Gen(time.perf_counter())
    for chunk in llm.create_chat_completion([{"role": "user", "content": prompt}],
                                            max_tokens=n, temperature=0, stream=True):
        for choice in chunk["choices"]:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                gen.add(piece)
            gen.finish = choice.get("finish_reason") or gen.finish
    return gen


async def engine_generate(engine: Engine, spec: config.ProviderSpec, prompt: str, n: int
                          ) -> Gen:
    gen = Gen(time.perf_counter())
    outcome = await engine.call(spec, ChatRequest(MODEL, messages(prompt), max_tokens=n,
                                                  temperature=0, stream=True),
                                purpose="bench", on_token=gen.add)
    if not outcome.ok or outcome.result is None:
        raise RuntimeError(f"local call failed: {outcome.record.error}")
    gen.tokens = outcome.result.usage.output_tokens
    gen.finish = outcome.result.finish_reason
    return gen


# -- 1. event-loop lag --------------------------------------------------------------------


async def probe(stop: asyncio.Event, lags: list[float]) -> None:
    clock = time.perf_counter
    while not stop.is_set():
        t = clock()
        await asyncio.sleep(PROBE_S)
        lags.append(clock() - t - PROBE_S)


def lag_line(label: str, lags: list[float], seconds: float) -> str:
    ms = [1000 * x for x in lags]
    return (f"  {label}: {len(ms)} wake-ups in {seconds:.1f} s; lag p50 {pct(ms, .5):.2f} ms, "
            f"p99 {pct(ms, .99):.2f} ms, max {max(ms):.2f} ms")


async def lag_part(engine: Engine, spec: config.ProviderSpec) -> tuple[bool, list[str]]:
    stop = asyncio.Event()
    idle: list[float] = []
    task = asyncio.create_task(probe(stop, idle))
    await asyncio.sleep(BASELINE_S)
    stop.set()
    await task
    stop = asyncio.Event()
    busy: list[float] = []
    task = asyncio.create_task(probe(stop, busy))
    t0 = time.perf_counter()
    gen = await engine_generate(engine, spec, PROMPT, LAG_TOKENS)
    elapsed = time.perf_counter() - t0
    stop.set()
    await task
    p99 = 1000 * pct(busy, .99)
    print(f"[1. event-loop lag] probe sleeping {1000 * PROBE_S:.0f} ms at a time, lateness "
          f"of each wake-up")
    print(lag_line("baseline, engine idle, model loaded", idle, BASELINE_S))
    print(lag_line(f"during Engine.call, {gen.tokens} tokens streamed (ttft "
                   f"{1000 * gen.ttft:.0f} ms, {gen.rate:.1f} tokens/s with the probe running)",
                   busy, elapsed))
    ok = p99 <= TARGET_LAG_MS
    return ok, [f"event-loop lag during a local generation: p99 {p99:.2f} ms (baseline p99 "
                f"{1000 * pct(idle, .99):.2f} ms) (target <= {TARGET_LAG_MS:.0f} ms) "
                f"{'PASS' if ok else 'FAIL'}"]


# -- 2 and 3. tokens/s, bare and engine, unthrottled and at 50% duty ----------------------


async def rate_part(engine: Engine, spec: config.ProviderSpec, llm: Any, rounds: int, n: int
                    ) -> tuple[bool, bool, list[str]]:
    gens: dict[str, list[Gen]] = {"bare": [], "engine": [], "throttled": []}

    async def run(kind: str) -> Gen:
        if kind == "bare":
            return bare_generate(llm, PROMPT, n)
        if kind == "engine":
            return await engine_generate(engine, spec, PROMPT, n)
        await engine.throttle_local(duty=0.5)
        try:
            return await engine_generate(engine, spec, PROMPT, n)
        finally:
            await engine.throttle_local(duty=1.0)

    kinds = list(gens)
    orders = []
    for r in range(rounds):
        order = kinds[r % 3:] + kinds[:r % 3]
        orders.append("/".join(order))
        for kind in order:
            gens[kind].append(await run(kind))
    texts = {g.text for gs in gens.values() for g in gs}
    counted = [(g.tokens, len(g.pieces)) for k in ("engine", "throttled") for g in gens[k]]
    med = {k: statistics.median(g.rate for g in gs) for k, gs in gens.items()}
    print(f"[2-3. tokens/s] {n} tokens a generation (max_tokens {n}, temperature 0), prompt "
          f"{PROMPT!r}; {rounds} rounds, order per round: {', '.join(orders)}")
    for kind, label in (("bare", "bare llama-cpp-python"),
                        ("engine", "engine, duty 1.0"), ("throttled", "engine, duty 0.5")):
        gs = gens[kind]
        print(f"  {label:22} median {med[kind]:5.1f} tokens/s  rounds "
              + ", ".join(f"{g.rate:.1f}" for g in gs)
              + f"; per-token interval p50 {statistics.median(g.interval_p50_ms for g in gs):.1f}"
                f" ms; ttft median {1000 * statistics.median(g.ttft for g in gs):.0f} ms")
    same_count = all(tokens == pieces for tokens, pieces in counted)
    print(f"  same text in all {sum(len(gs) for gs in gens.values())} generations: "
          f"{'yes' if len(texts) == 1 else f'NO ({len(texts)} different texts)'}; "
          f"streamed pieces = the engine's generated tokens in every engine call: "
          f"{'yes' if same_count else f'NO {counted}'}; finish reasons: "
          + ", ".join(sorted({str(g.finish) for gs in gens.values() for g in gs})))
    ratio = med["engine"] / med["bare"]
    duty = med["throttled"] / med["engine"]
    valid = len(texts) == 1 and same_count
    ok_ratio = valid and ratio >= TARGET_RATIO
    ok_duty = valid and duty <= TARGET_DUTY
    return ok_ratio, ok_duty, [
        f"engine tokens/s: {med['engine']:.1f} against bare {med['bare']:.1f}, ratio "
        f"{ratio:.3f} (target >= {TARGET_RATIO:.2f}) {'PASS' if ok_ratio else 'FAIL'}",
        f"throttled to duty 0.5: {med['throttled']:.1f} tokens/s, {duty:.3f} of unthrottled "
        f"{med['engine']:.1f} (target <= {TARGET_DUTY:.2f}) {'PASS' if ok_duty else 'FAIL'}"]


# -- 4. cancellation ----------------------------------------------------------------------


async def cancel_after(engine: Engine, spec: config.ProviderSpec, prompt: str, max_tokens: int,
                       *, tokens: int = 0, delay: float) -> tuple[float, int, bool]:
    """Cancel `delay` seconds after the `tokens`-th token arrived (0: after the call began).

    Returns (seconds from task.cancel() to the task done, tokens arrived before the cancel,
    whether the task ended cancelled)."""
    arrived = 0
    reached = asyncio.Event()

    def on_token(piece: str) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == tokens:
            reached.set()

    task = asyncio.create_task(engine.call(
        spec, ChatRequest(MODEL, messages(prompt), max_tokens=max_tokens, temperature=0,
                          stream=True), purpose="bench", on_token=on_token))
    if tokens:
        await asyncio.wait_for(reached.wait(), 60)
    await asyncio.sleep(delay)
    seen = arrived
    t0 = time.perf_counter()
    task.cancel()
    await asyncio.wait({task})
    latency = time.perf_counter() - t0
    return latency, seen, task.cancelled()


def long_prompt(llm: Any, tokens: int) -> str:
    text = ""
    while len(llm.tokenize(text.encode(), add_bos=False)) < tokens:
        text += LONG_TEXT
    words = text.split()
    while len(llm.tokenize(" ".join(words).encode(), add_bos=False)) > tokens:
        words = words[:-5]
    return " ".join(words)


async def cancel_part(engine: Engine, spec: config.ProviderSpec, llm: Any, reference: str
                      ) -> tuple[bool, list[str]]:
    local = (await engine.local_providers())[0]
    llama = local.models[MODEL].llama
    decode: list[float] = []
    detail: list[str] = []
    for k, offset_ms in DECODE_CANCEL_AT:
        latency, seen, cancelled = await cancel_after(engine, spec, PROMPT, 200, tokens=k,
                                                      delay=offset_ms / 1000)
        if not cancelled:
            raise RuntimeError("the decoding call was not cancelled")
        decode.append(latency)
        generated = llama.completion_tokens
        detail.append(f"{1000 * latency:.1f} ms ({seen} arrived, {generated} generated)")
    print("[4. cancellation] task.cancel() to the task done")
    print("  (a) while decoding, max_tokens 200, cancelled "
          + ", ".join(f"{ms} ms after token {k}" for k, ms in DECODE_CANCEL_AT)
          + ": " + ", ".join(detail))
    body = long_prompt(llm, PROMPT_TOKENS)
    # For scale, untimed by the target: the same kind of prompt evaluated in full.
    full = await engine_generate(engine, spec, "Trial 0. Summarise this log for the "
                                 "operator. " + body, 1)
    prompt_lat: list[float] = []
    detail = []
    for i in range(PROMPT_TRIALS):
        prompt = f"Trial {i + 1}. Summarise this log for the operator. " + body
        latency, seen, cancelled = await cancel_after(engine, spec, prompt, 64,
                                                      delay=PROMPT_CANCEL_S)
        if not cancelled or seen:
            raise RuntimeError(f"prompt trial {i + 1}: cancelled {cancelled}, {seen} tokens "
                               "arrived before the cancel")
        prompt_lat.append(latency)
        detail.append(f"{1000 * latency:.0f} ms ({llama.n_tokens} of {llama.prompt_tokens} "
                      f"evaluated)")
    print(f"  (b) while evaluating a {llama.prompt_tokens}-token prompt (evaluated in full, "
          f"uncancelled: first token after {full.ttft:.2f} s), cancelled "
          f"{1000 * PROMPT_CANCEL_S:.0f} ms after the call ({len(prompt_lat)} trials; prompt "
          f"tokens in the context when it stopped, a few shared with the previous prompt): "
          + ", ".join(detail))
    after = await engine_generate(engine, spec, PROMPT, 8)
    same = reference.startswith(after.text)
    print(f"  after the cancellations the model answers again: {after.tokens} tokens, the "
          f"same as before the cancellations: {'yes' if same else 'NO'}")
    lines = []
    ok = same
    for label, values in (("while decoding", decode), ("during prompt evaluation", prompt_lat)):
        passed = max(values) <= TARGET_CANCEL_S
        ok &= passed
        lines.append(f"cancellation {label}: p50 {1000 * statistics.median(values):.0f} ms, "
                     f"max {1000 * max(values):.0f} ms over {len(values)} trials (target max "
                     f"<= {1000 * TARGET_CANCEL_S:.0f} ms) {'PASS' if passed else 'FAIL'}")
    return ok, lines


# -- 5. all APIs down -> the local model --------------------------------------------------


def write_plan(path: Path, task_id: str, prompt: str) -> Path:
    path.write_text(json.dumps({"task_id": task_id, "steps": [
        {"id": "doc", "type": "documentation", "prompt": prompt, "max_tokens": 16}]}),
        "utf-8")
    return path


@dataclass
class Trial:
    seconds: float  # kill -> the step's finish time
    wait_s: float  # kill -> run.wait() returned
    start_run_s: float
    provider: str
    attempts: str
    api_error: str  # what the first failed API attempt said
    load_s: float | None
    loaded_before: bool
    tokens: int
    mode: str  # the response mode once the step is done


async def fallback_trial(models: Path, host: str, *, preload: bool) -> Trial:
    proc, url = spawn_fast_server(host)
    try:
        with tempfile.TemporaryDirectory(prefix="af-bench-") as tmp:
            home = Path(tmp)
            engine = await new_engine(bouquet(url), home, models).start()
            try:
                warm = await engine.start_run(write_plan(home / "warm.json", "warm",
                                                         "Say hello to the operator."))
                view = await warm.wait()
                served = warm.step("doc").provider
                if view.status != "done" or served not in {p for p, *_ in APIS}:
                    raise RuntimeError(f"warm-up: {view.status}, served by {served}")
                if engine.response_mode is not ResponseMode.BOUQUET:
                    raise RuntimeError(f"warm-up: response mode {engine.response_mode} "
                                       f"({engine.modes.reason})")
                local = (await engine.local_providers())[0]
                if preload:
                    await local.load(MODEL)
                loaded_before = local.models[MODEL].loaded
                plan = write_plan(home / "down.json", "down",
                                  "Write a one-line docstring for a function that adds two "
                                  "numbers.")
                wall0 = time.time()
                t0 = time.perf_counter()
                loopback.kill(proc)  # all APIs down
                run = await engine.start_run(plan)
                t1 = time.perf_counter()
                view = await run.wait()
                t2 = time.perf_counter()
                step = run.step("doc")
                if view.status != "done" or step.finished is None:
                    raise RuntimeError(f"after the kill: run {view.status}, step {step.state} "
                                       f"({step.error})")
                calls = [c for c in reversed(await engine.store.recent_calls(20))
                         if c.run_id == run.run_id]
                attempts = ", ".join(
                    f"{c.provider} {'ok' if c.ok else c.error_kind} {1000 * c.duration_s:.0f} ms"
                    for c in calls)
                failed = next((c for c in calls if not c.ok), None)
                return Trial(step.finished - wall0, t2 - t0, t1 - t0, step.provider or "?",
                             attempts, failed.error or "" if failed else "none failed",
                             local.models[MODEL].load_s, loaded_before, step.output_tokens,
                             f"{engine.response_mode.value} ({engine.modes.reason})")
            finally:
                await engine.stop()
    finally:
        loopback.kill(proc)


async def fallback_part(models: Path) -> tuple[bool, list[str]]:
    host = "127.0.0.1"
    print(f"[5. all APIs down -> local] 3 API providers on a fast_server at {host}, "
          f"killed with SIGKILL; a fresh engine home and server per trial")
    cold: list[Trial] = []
    warm: list[Trial] = []
    for i in range(FALLBACK_TRIALS + WARM_TRIALS):
        preload = i >= FALLBACK_TRIALS
        trial = await fallback_trial(models, host, preload=preload)
        if trial.provider != "local":
            raise RuntimeError(f"trial {i + 1}: the step was served by {trial.provider}")
        if trial.loaded_before:
            note = "model loaded before the kill (information)"
            warm.append(trial)
        else:
            note = (f"cold model load {trial.load_s:.2f} s"
                    + (", first local use in this process (imports llama_cpp)" if i == 0
                       else ""))
            cold.append(trial)
        print(f"  trial {i + 1}: {trial.seconds:.3f} s kill -> step done, served by "
              f"{trial.provider} ({trial.tokens} tokens); {note}; start_run returned after "
              f"{1000 * trial.start_run_s:.0f} ms; attempts: {trial.attempts}; run.wait() "
              f"returned after {trial.wait_s:.3f} s; response mode then: {trial.mode}")
        if i == 0:
            print(f"    the first failed API attempt said: {trial.api_error}")
    p50 = statistics.median(t.seconds for t in cold)
    ok = p50 <= TARGET_FALLBACK_S
    return ok, [f"all APIs down -> first step served locally: p50 {p50:.3f} s over "
                f"{len(cold)} trials, each with a cold model load (max "
                f"{max(t.seconds for t in cold):.3f} s; with the model already loaded: "
                + ", ".join(f"{t.seconds:.3f}" for t in warm) + " s) "
                f"(target p50 <= {TARGET_FALLBACK_S:.0f} s) {'PASS' if ok else 'FAIL'}"]


# -- 6. a whole survival plan ------------------------------------------------------------


def survival_plan(path: Path) -> Path:
    path.write_text(json.dumps({"task_id": "survival", "steps": [
        {"id": f"s{i}", "type": "documentation", "max_tokens": SURVIVAL_TOKENS,
         "prompt": f"@@slow:{API_STEP_S}@@ Name one colour of the sea ({i + 1}).",
         "depends_on": [f"s{i - 1}"] if i else []} for i in range(SURVIVAL_STEPS)]}),
        "utf-8")
    return path


@dataclass
class SurvivalTrial:
    wall_s: float
    generation_s: float  # the steps' own: API call durations + local evaluation and rest
    local_compute_s: float
    local_rest_s: float
    local_calls_s: float  # the local calls' durations, for information (they include waits)
    served: str  # "3 api-a, 7 local"
    regulator: str  # the regulator's states and the local throttle seen during the run

    @property
    def ratio(self) -> float:
        return self.wall_s / self.generation_s


async def survival_trial(models: Path, host: str, *, dead_from_start: bool) -> SurvivalTrial:
    from aetherflow_tui.engine.events import RegulatorDecided, StepUpdated
    from aetherflow_tui.engine.progress import StepState
    from aetherflow_tui.engine.vigilance import MIN_ERROR_CALLS

    proc, url = spawn_fast_server(host)
    try:
        with tempfile.TemporaryDirectory(prefix="af-bench-") as tmp:
            home = Path(tmp)
            engine = await new_engine(bouquet(url), home, models).start()
            try:
                (local,) = await engine.local_providers()
                await local.load(MODEL)
                events = engine.bus.subscribe()
                seen: list[str] = []
                if dead_from_start:
                    loopback.kill(proc)
                    for n in range(MIN_ERROR_CALLS):
                        pid = APIS[n % len(APIS)][0]
                        outcome = await engine.ask("hello", provider=pid, model="echo-small")
                        if outcome.ok:
                            raise RuntimeError("a dead API answered")
                vigilance = await engine.start_vigilance(role="run", canaries="recovery",
                                                         status_pages=False)
                if dead_from_start:
                    async with asyncio.timeout(60):
                        while True:
                            event = await events.get()
                            if (isinstance(event, RegulatorDecided)
                                    and event.decision.state.value == "critical"):
                                break
                    seen.append(f"before the run: {event.decision.reasoning}")
                throttle = local.throttle
                computed0, rested0 = throttle.computed_s, throttle.rested_s
                t0 = time.perf_counter()
                run = await engine.start_run(survival_plan(home / "survival.json"))
                done = asyncio.ensure_future(run.wait())
                async with asyncio.timeout(600):
                    while not done.done():
                        waiter = asyncio.ensure_future(events.get())
                        await asyncio.wait({done, waiter},
                                           return_when=asyncio.FIRST_COMPLETED)
                        if not waiter.done():
                            waiter.cancel()
                            continue
                        event = waiter.result()
                        if isinstance(event, RegulatorDecided):
                            d = event.decision
                            seen.append(f"{d.state.value} ({d.actions[1]})")
                        elif (not dead_from_start and isinstance(event, StepUpdated)
                              and event.step.step_id == f"s{KILL_AFTER - 1}"
                              and event.step.state is StepState.DONE):
                            loopback.kill(proc)  # the APIs die mid-run
                view = await done
                wall = time.perf_counter() - t0
                steps = run.steps()
                if view.status != "done":
                    raise RuntimeError(f"survival run {view.status}: "
                                       + "; ".join(str(s.error) for s in steps if s.error))
                by: dict[str, int] = {}
                for step in steps:
                    by[step.provider or "?"] = by.get(step.provider or "?", 0) + 1
                api_s = sum(s.duration_s or 0.0 for s in steps if s.provider != "local")
                local_s = sum(s.duration_s or 0.0 for s in steps if s.provider == "local")
                compute = throttle.computed_s - computed0
                rest = throttle.rested_s - rested0
                if by.get("local", 0) < SURVIVAL_STEPS - KILL_AFTER:
                    raise RuntimeError(f"survival run served by {by}")
                state = vigilance.regulator.state.value
                during = [x for x in vigilance.samples
                          if x.ts >= view.started and x.cpu_pct is not None
                          and x.own_cpu_pct is not None]
                if during:
                    cpu = statistics.median(x.cpu_pct or 0.0 for x in during)
                    own = statistics.median(x.own_cpu_pct or 0.0 for x in during)
                    seen.append(f"machine CPU during the run p50 {cpu:.0f}%, this "
                                f"process's part p50 {own:.0f}%")
                seen.append(f"at the end {state}, machine {vigilance.machine.state.value}, "
                            f"local duty {throttle.duty:.2f}, {throttle.threads} threads, "
                            f"queue {'paused' if not local.paused.is_set() else 'open'}")
                return SurvivalTrial(wall, api_s + compute + rest, compute, rest, local_s,
                                     ", ".join(f"{n} {p}" for p, n in sorted(by.items())),
                                     "; ".join(seen))
            finally:
                await engine.stop()
    finally:
        loopback.kill(proc)


async def survival_part(models: Path) -> tuple[bool, list[str]]:
    host = "127.0.0.1"
    print(f"[6. a whole survival plan] {SURVIVAL_STEPS} chained steps of {SURVIVAL_TOKENS} "
          f"tokens, vigilance as `aetherflow run` starts it, default [regulator]; wall "
          f"(start_run -> run.wait()) over the steps' own generation time")
    ok = True
    lines = []
    for dead, label in ((True, "APIs dead from the start"),
                        (False, f"APIs killed after step {KILL_AFTER}")):
        trials = []
        for i in range(SURVIVAL_TRIALS):
            trial = await survival_trial(models, host, dead_from_start=dead)
            trials.append(trial)
            print(f"  {label}, trial {i + 1}: wall {trial.wall_s:.2f} s, generation "
                  f"{trial.generation_s:.2f} s (local: {trial.local_compute_s:.2f} s "
                  f"evaluating + {trial.local_rest_s:.2f} s duty rest; local call durations "
                  f"{trial.local_calls_s:.2f} s), ratio {trial.ratio:.3f}; served by "
                  f"{trial.served}; regulator: {trial.regulator}")
        ratio = statistics.median(t.ratio for t in trials)
        passed = ratio <= TARGET_SURVIVAL_RATIO
        ok &= passed
        lines.append(f"survival plan, {label}: wall / generation p50 {ratio:.3f} over "
                     f"{len(trials)} trials (max {max(t.ratio for t in trials):.3f}; wall p50 "
                     f"{statistics.median(t.wall_s for t in trials):.2f} s) (target <= "
                     f"{TARGET_SURVIVAL_RATIO:.1f}) {'PASS' if passed else 'FAIL'}")
    return ok, lines


# -- main ---------------------------------------------------------------------------------


async def local_parts(models: Path, model_path: Path, rounds: int, n: int, only: str | None
                      ) -> tuple[list[bool], list[str]]:
    import llama_cpp

    verdicts: list[bool] = []
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="af-bench-") as tmp:
        engine = await new_engine(bouquet(), Path(tmp), models).start()
        try:
            spec = engine.bouquet.providers["local"]
            local = (await engine.local_providers())[0]
            await local.load(MODEL)
            t0 = time.perf_counter()
            llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=CONTEXT, n_threads=THREADS,
                                  n_threads_batch=THREADS, chat_format="gemma", verbose=False)
            bare_load = time.perf_counter() - t0
            print(f"model: {model_path.name}, {model_path.stat().st_size / 2**20:.0f} MB; "
                  f"engine load {local.models[MODEL].load_s:.2f} s (with the file's sha256 "
                  f"check), bare Llama() {bare_load:.2f} s; threads {THREADS}, context "
                  f"{CONTEXT}, llama-cpp-python {llama_cpp.__version__}")
            # Warm both (first evaluations fault the mapped weights in), untimed.
            bare_generate(llm, PROMPT, 16)
            reference = (await engine_generate(engine, spec, PROMPT, 16)).text
            if only in (None, "lag"):
                ok, out = await lag_part(engine, spec)
                verdicts.append(ok)
                lines += out
            if only in (None, "rates"):
                ok_ratio, ok_duty, out = await rate_part(engine, spec, llm, rounds, n)
                verdicts += [ok_ratio, ok_duty]
                lines += out
            if only in (None, "cancel"):
                ok, out = await cancel_part(engine, spec, llm, reference)
                verdicts.append(ok)
                lines += out
            llm.close()
        finally:
            await engine.stop()
    return verdicts, lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--tokens", type=int, default=RATE_TOKENS)
    parser.add_argument("--only", choices=("fallback", "lag", "rates", "cancel", "survival"),
                        default=None)
    args = parser.parse_args()
    verdicts: list[bool] = []
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="af-bench-models-") as tmp:
        models = Path(tmp)
        t0 = time.perf_counter()
        model_path = gguf.embedded_model(models)
        print(f"embedded model assembled into a shared models dir in "
              f"{time.perf_counter() - t0:.2f} s")
        # First, while llama_cpp is not imported yet: the first trial is a first local use.
        if args.only in (None, "fallback"):
            ok, out = asyncio.run(fallback_part(models))
            verdicts.append(ok)
            lines += out
        if args.only in (None, "survival"):
            ok, out = asyncio.run(survival_part(models))
            verdicts.append(ok)
            lines += out
        if args.only not in ("fallback", "survival"):
            more, out = asyncio.run(local_parts(models, model_path, args.rounds, args.tokens,
                                                args.only))
            verdicts += more
            lines += out
    for line in lines:
        print(line)
    ok = all(verdicts)
    print("PASS" if ok else "FAIL", f"(targets: event-loop lag p99 <= {TARGET_LAG_MS:.0f} ms "
          f"during a local generation; engine tokens/s >= {TARGET_RATIO:.0%} of bare "
          f"llama-cpp-python; duty 0.5 <= {TARGET_DUTY:.0%} of unthrottled tokens/s; "
          f"cancellation <= {TARGET_CANCEL_S:.0f} s; all APIs down -> first local step p50 "
          f"<= {TARGET_FALLBACK_S:.0f} s; a survival plan's wall <= "
          f"{TARGET_SURVIVAL_RATIO:.1f}x its steps' generation time)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
