"""Time of one routing decision, Router.route(), with 20 providers, beside cheap references.

The bouquet: 20 OpenAI-compatible providers with 2 models each (40 candidates), mixed
roles, prices and zones, two on a free tier, seeded so every run routes over the same
bouquet. What the router has to exclude is there too: two providers whose key is missing
(key = "env:NAME", unset), one whose circuit is open (three failures fed through
engine.health.observe), two models with no known price and two above the per-1k-token
ceiling. Eight providers have live stats (50 recorded calls each, some failed, fed through
engine.health.observe); the others route on the priors. Energy per 1,000 tokens is
estimated once, as Engine.start_run does before a run.

For each mode (fast, build) and each of the 7 step types, N decisions are timed one by one
with time.perf_counter_ns (complexity alternating 0.3 / 0.9, so half the code_generation
decisions are heavy work). Interleaved with them, the same clock times two references
that do a fixed, small amount of work: building the ChatRequest for a step
(ChatRequest.ask) and copying a 40-entry dict (one entry per candidate). The timer's own
cost is in every sample of all three. For information, route() + Route.reason(), which is
what the scheduler pays per attempt.

Run from the repo root: python benchmarks/routing.py [--n 20000]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from aetherflow_tui.engine import Engine, config  # noqa: E402
from aetherflow_tui.engine.config import STEP_TYPES  # noqa: E402
from aetherflow_tui.engine.keys import KeyVault  # noqa: E402
from aetherflow_tui.engine.providers.base import ChatRequest  # noqa: E402
from aetherflow_tui.engine.records import CallRecord  # noqa: E402
from aetherflow_tui.engine.router import Mode  # noqa: E402
from tests.support.plans import bouquet_text, model_entry, provider_table  # noqa: E402

TARGET_US = 40.0
PROVIDERS = 20
ROLE_POOL = ("fast", "cheap", "code", "reasoning", "quality", "prototyping", "qa", "chat",
             "logic", "fim")
ZONES = ("WOR", "FRA", "USA", "DEU", "SWE", "CHN")
MISSING_KEY = (3, 11)  # providers whose key is not in the environment
CIRCUIT_OPEN = 7
LIVE = (0, 2, 5, 8, 9, 13, 16, 19)  # providers with 50 recorded calls
UNPRICED = ((4, 1), (14, 0))  # (provider, model) with no price anywhere
TOO_DEAR = ((6, 0), (17, 1))  # above max_usd_per_1k_tokens
PROMPT = ("Write the module's docstring and a usage example for the operator, "
          "based on the output of the previous steps")


def bench_bouquet(rng: random.Random) -> tuple[str, dict[str, str]]:
    providers: list[str] = []
    environ: dict[str, str] = {}
    for p in range(PROVIDERS):
        pid = f"p{p:02d}"
        settings: dict[str, object] = {"base_url": f"http://127.0.0.1:9/{pid}/v1",
                                       "zone": ZONES[p % len(ZONES)]}
        if p % 4 == 1 or p in MISSING_KEY:
            env = f"AF_BENCH_KEY_{p:02d}"
            settings["key"] = f"env:{env}"
            if p not in MISSING_KEY:
                environ[env] = f"sk-bench-{p:02d}-" + "x" * 32
        else:
            settings["key"] = "none"
        if p in (10, 15):
            settings["free_tier"] = True
        models = []
        for m in range(2):
            size = rng.choice((8, 32, 70, 405))
            roles = sorted(rng.sample(ROLE_POOL, rng.randint(1, 3)))
            models.append(model_entry(f"bench-{size}b-m{m}", roles=roles))
            if (p, m) in UNPRICED:
                continue
            if (p, m) in TOO_DEAR:
                price_in, price_out = 30.0, 90.0
            else:
                price_in = round(rng.uniform(0.05, 3.0), 3)
                price_out = round(price_in * rng.uniform(1.0, 4.0), 3)
            models[-1].update(price_in=price_in, price_out=price_out)
        providers.append(provider_table(pid, *models, **settings))
    return bouquet_text(*providers, budget={"daily_usd": 100}), environ


def feed_health(engine: Engine, rng: random.Random) -> None:
    now = time.time()
    day = time.strftime("%Y-%m-%d")
    for p in LIVE:
        spec = engine.bouquet.providers[f"p{p:02d}"]
        base = rng.uniform(0.3, 3.0)
        for i in range(50):
            ok = rng.random() > 0.08
            engine.health.observe(CallRecord(
                ts=now - 50 + i, day=day, provider=spec.id, model=spec.models[i % 2].id,
                purpose="step", ok=ok, duration_s=base * rng.uniform(0.7, 1.5),
                error_kind=None if ok else "overloaded", error=None if ok else "HTTP 503"))
    for i in range(3):
        engine.health.observe(CallRecord(
            ts=now - 3 + i, day=day, provider=f"p{CIRCUIT_OPEN:02d}", model="x", purpose="step",
            ok=False, duration_s=1.0, error_kind="timeout", error="no answer in time"))


def pct(values: list[int], q: float) -> float:
    """Nearest-rank percentile of nanosecond samples, in microseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000, help="decisions per step type")
    args = parser.parse_args()
    rng = random.Random(20261121)
    text, environ = bench_bouquet(rng)
    bouquet = config.parse(text, None)
    with tempfile.TemporaryDirectory(prefix="af-bench-") as home:
        engine = Engine(bouquet, Path(home), vault=KeyVault(environ=environ))
        # What Engine.provider_views() does: which providers have a usable key.
        statuses = {spec.id: engine.vault.status(spec) for spec in bouquet.providers.values()}
        engine.key_statuses.update(statuses)
        router = engine.router
        router.estimate_energy(engine.plan_runs.wh_per_1k)  # as start_run does once
        feed_health(engine, rng)
    clock = time.perf_counter_ns
    request_kw = {"input_tokens": 310, "worst_input_tokens": 1_300, "max_tokens": 1024,
                  "estimated_tokens": 1_400}
    table = {f"{p.id}/{m.id}": (p, m) for p in bouquet.providers.values() for m in p.models}

    # What the router sees, once, so the figures below are about a realistic decision.
    sample = router.route("code_generation", complexity=0.9, **request_kw)
    reasons: dict[str, int] = {}
    for _, why in sample.excluded:
        kind = ("no key" if why == "no tested key" else "circuit open" if why == "circuit open"
                else "unpriced" if "no known price" in why
                else "above the per-1k-token ceiling" if "per 1k tokens" in why else why)
        reasons[kind] = reasons.get(kind, 0) + 1
    live = sum(1 for p in bouquet.providers if engine.health.stats(p).latency_p50_s is not None)
    print(f"bouquet: {len(bouquet.providers)} providers, {len(table)} models; "
          f"routable providers {len(router.routable)}; live stats for {live} providers; "
          f"one decision (code_generation, heavy): {len(sample.candidates)} candidates, "
          f"{len(sample.excluded)} excluded ("
          + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())) + ")")
    print(f"  e.g. {sample.reason()}")

    results: dict[str, dict[str, list[int]]] = {}
    gc.collect()
    for mode in (Mode.FAST, Mode.BUILD):
        route_ns: list[int] = []
        request_ns: list[int] = []
        copy_ns: list[int] = []
        per_type: dict[str, float] = {}
        for step_type in STEP_TYPES:
            samples: list[int] = []
            for i in range(args.n):
                complexity = 0.9 if i & 1 else 0.3
                t0 = clock()
                route = router.route(step_type, complexity=complexity, mode=mode, **request_kw)
                t1 = clock()
                ChatRequest.ask("echo", PROMPT, max_tokens=1024, stream=True)
                t2 = clock()
                dict(table)
                t3 = clock()
                if not route.candidates:
                    raise RuntimeError(f"no candidate for {step_type} in {mode}")
                samples.append(t1 - t0)
                request_ns.append(t2 - t1)
                copy_ns.append(t3 - t2)
            per_type[step_type] = pct(samples, .5)
            route_ns += samples
        results[mode.value] = {"route": route_ns, "request": request_ns, "copy": copy_ns}
        print(f"[{mode.value}] {len(route_ns):,} decisions ({args.n:,} per step type):"
              f" route p50 {pct(route_ns, .5):.1f} us, p99 {pct(route_ns, .99):.1f} us;"
              f" reference ChatRequest.ask p50 {pct(request_ns, .5):.2f} us,"
              f" dict copy of {len(table)} p50 {pct(copy_ns, .5):.2f} us;"
              f" route / ChatRequest {pct(route_ns, .5) / pct(request_ns, .5):.0f}x")
        print("  p50 by step type: " + ", ".join(f"{t} {v:.1f}" for t, v in per_type.items())
              + " us")
    # Information: the scheduler also formats the decision's one-line reason per attempt.
    both: list[int] = []
    for i in range(args.n):
        t0 = clock()
        route = router.route(STEP_TYPES[i % len(STEP_TYPES)], complexity=0.5, **request_kw)
        route.reason()
        both.append(clock() - t0)
    print(f"[build] route() + Route.reason(), n={args.n:,}: p50 {pct(both, .5):.1f} us, "
          f"p99 {pct(both, .99):.1f} us (information)")

    ok = True
    for mode, data in results.items():
        p50 = pct(data["route"], .5)
        passed = p50 <= TARGET_US
        ok &= passed
        print(f"routing decision ({mode}): p50 {p50:.1f} us, p99 {pct(data['route'], .99):.1f} us"
              f" with {len(bouquet.providers)} providers (target p50 <= {TARGET_US:.0f} us) "
              f"{'PASS' if passed else 'FAIL'}")
    print("PASS" if ok else "FAIL", f"(target: routing decision p50 <= {TARGET_US:.0f} us with "
          f"{PROVIDERS} providers, fast and build)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
