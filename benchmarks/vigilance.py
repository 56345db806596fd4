"""Vigilance (issue 6): outage detection by the canaries and by real traffic, and what the
canaries cost per provider per day.

1. Outage detection while idle. A provider (`alpha`, keyless, model "sum" that answers the
   canary) on a scripted server on 127.0.0.1; the engine runs its vigilance with the
   default schedule scaled down 100x (canary.interval_s = 3 s, unhealthy_interval_s =
   0.3 s: the default ratio of 10) and the default thresholds (failure_threshold = 3).
   After the first passing probe, the outage starts at a random moment within one probe
   interval: from then on the server answers every request with HTTP 503. Measured, in
   probe intervals: from the outage's start to the red light (the ProviderHealthChanged
   event), and from the first failed probe to red. Target: <= 2 probe intervals.
2. Passive detection. Two providers on two scripted servers, alpha the cheaper; a plan of
   12 chained steps (each needs the previous one, so one request at a time; each answer
   held 50 ms), no periodic canaries (recovery only, as `aetherflow run` has). alpha
   starts failing while step 5 is in flight, so step 6 meets the outage. Counted: real
   requests alpha received from the outage's start (the first failed request, and any
   after it). Target: 1, i.e. real traffic stops at the first
   failed request; the steps go on on beta.
3. Canary spend per provider per day at the default interval (300 s: 288 probes a day),
   for the providers of the embedded default bouquet: each one's canary model (its
   cheapest), priced by the engine's own price table (genai-prices) for a typical answer
   (20 input tokens, 2 output tokens: the prompt with its chat template, "12") and for the
   worst case (the whole 256-token allowance, as a reasoning model that thinks first may
   use), plus the daily cap that bounds it all ([canary] daily_usd).

4. The whole vigilance loop at 1 Hz, in the engine: two engines side by side in this
   process for 20 s each, the same bouquet (one keyless provider, canaries off so no
   request goes out), one idle, one with start_vigilance() running (every tick: sample,
   judge, publish the sample, poll the store for the operator's controls; a heartbeat row
   every 5 s). Process CPU time over wall time, the difference is the loop's cost.
   Target (the issue's, for the regulator's sampling): <= 1% of a core.

Run from the repo root: python benchmarks/vigilance.py [--trials 5] [--loop-s 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from aetherflow_tui.engine import Engine, config  # noqa: E402
from aetherflow_tui.engine.canary import canary_model, probed_by_canary  # noqa: E402
from aetherflow_tui.engine.events import CanaryProbed, ProviderHealthChanged  # noqa: E402
from aetherflow_tui.engine.health import Light  # noqa: E402
from aetherflow_tui.engine.providers.base import Usage  # noqa: E402
from tests.support.plans import bouquet, provider, step, tables, write_plan  # noqa: E402
from tests.support.scripted_server import ScriptedServer  # noqa: E402

INTERVAL_S = 3.0
UNHEALTHY_S = 0.3
TARGET_INTERVALS = 2.0
OUTAGE = ["status:503"] * 1000  # longer than any trial


def schedule(interval: float, unhealthy: float) -> str:
    return tables(canary={"interval_s": interval, "unhealthy_interval_s": unhealthy,
                          "daily_usd": 1.0})


async def idle_trial(seed: int) -> tuple[float, float]:
    rng = random.Random(seed)
    with ScriptedServer() as alpha, tempfile.TemporaryDirectory() as home:
        text = schedule(INTERVAL_S, UNHEALTHY_S) + bouquet(
            provider("alpha", alpha.url, "sum"))
        async with Engine(config.parse(text, None), Path(home)) as engine:
            events = engine.bus.subscribe()
            await engine.start_vigilance(role="bench", status_pages=False)
            async for event in events:  # the first passing probe
                if isinstance(event, CanaryProbed) and event.result.ok:
                    break
            await asyncio.sleep(rng.uniform(0, INTERVAL_S))
            alpha.script(*OUTAGE)
            started = time.monotonic()
            first_failure = None
            async for event in events:
                if isinstance(event, CanaryProbed) and not event.result.ok and (
                        first_failure is None):
                    first_failure = time.monotonic()
                if (isinstance(event, ProviderHealthChanged)
                        and event.health.provider == "alpha"
                        and event.health.light is Light.RED):
                    red = time.monotonic()
                    break
            events.close()
    assert first_failure is not None
    return (red - started) / INTERVAL_S, (red - first_failure) / INTERVAL_S


async def passive_trial() -> tuple[int, int, list[str]]:
    with ScriptedServer() as alpha, ScriptedServer() as beta, \
            tempfile.TemporaryDirectory() as home:
        text = schedule(300, 30) + bouquet(
            provider("alpha", alpha.url, "sum", price_in=0.1, price_out=0.2),
            provider("beta", beta.url, "sum", price_in=1.0, price_out=2.0))
        # Each step holds its answer 50 ms: the outage starts while step 5 is in flight.
        steps = [step("s1", "@@slow:0.05@@ step 1")]
        steps += [step(f"s{i}", f"@@slow:0.05@@ step {i}", f"s{i - 1}")
                  for i in range(2, 13)]
        plan = write_plan(Path(home) / "plan.json", *steps)
        async with Engine(config.parse(text, None), Path(home) / "home") as engine:
            await engine.start_vigilance(role="bench", canaries="recovery",
                                         status_pages=False)
            events = engine.bus.subscribe()
            run = await engine.start_run(plan)
            async for event in events:  # step 4 done: the outage starts before step 6
                if getattr(event, "step", None) is not None and \
                        event.step.step_id == "s4" and event.step.state.value == "done":
                    await asyncio.to_thread(alpha.wait_for, lambda s: len(s.requests) >= 5)
                    alpha.script(*OUTAGE)
                    cut = len(alpha.requests)
                    break
            await run.wait()
            events.close()
            providers = [s.provider or "" for s in run.steps()]
        after = alpha.requests[cut:]
        real = [r for r in after if "7 + 5" not in str(r["body"])]
        probes = len(after) - len(real)
    return len(real), probes, providers


async def loop_cost(seconds: float) -> tuple[float, float, int]:
    """CPU share (of one core) of an idle engine, and of one running its vigilance."""
    with ScriptedServer() as alpha:
        text = schedule(300, 30) + bouquet(provider("alpha", alpha.url, "sum"))
        shares = []
        ticks = 0
        for vigilant in (False, True):
            with tempfile.TemporaryDirectory() as home:
                async with Engine(config.parse(text, None), Path(home)) as engine:
                    events = engine.bus.subscribe()
                    if vigilant:
                        await engine.start_vigilance(role="bench", canaries="off",
                                                     status_pages=False)
                    cpu, wall = time.process_time(), time.perf_counter()
                    await asyncio.sleep(seconds)
                    shares.append((time.process_time() - cpu)
                                  / (time.perf_counter() - wall))
                    while events.get_nowait() is not None:
                        ticks += vigilant
    return shares[0], shares[1], ticks


def canary_costs() -> list[tuple[str, str, float, float]]:
    bouquet_ = config.load(None)
    engine = Engine(bouquet_, Path(tempfile.mkdtemp()))
    rows = []
    for spec in bouquet_.providers.values():
        if not probed_by_canary(spec):
            continue
        model = canary_model(spec, engine.prices)
        typical = engine.prices.cost(spec, model, Usage(20, 2)).usd
        worst = engine.prices.cost(spec, model, Usage(20, bouquet_.canary.max_tokens)).usd
        rows.append((spec.id, model.id, typical or 0.0, worst or 0.0))
    return rows


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--loop-s", type=float, default=20.0)
    args = parser.parse_args()
    ok = True

    print(f"1. outage detection while idle: canary every {INTERVAL_S:g} s, "
          f"{UNHEALTHY_S:g} s while unwell, red after 3 failures in a row")
    results = [await idle_trial(seed) for seed in range(args.trials)]
    for index, (from_start, from_first) in enumerate(results, 1):
        print(f"   trial {index}: outage start -> red {from_start:.2f} intervals; first "
              f"failed probe -> red {from_first:.2f} intervals")
    worst = max(r[0] for r in results)
    verdict = worst <= TARGET_INTERVALS
    ok &= verdict
    print(f"   worst: {worst:.2f} probe intervals from the outage's start (target <= "
          f"{TARGET_INTERVALS:g}) {'PASS' if verdict else 'FAIL'}")

    print("2. passive detection: 12 chained steps, alpha fails from step 6")
    real, probes, providers = await passive_trial()
    verdict = real == 1
    ok &= verdict
    print(f"   real requests alpha received after the outage began: {real} "
          f"(target 1) {'PASS' if verdict else 'FAIL'}; recovery probes: {probes}")
    print(f"   steps served by: {' '.join(p[0] for p in providers)} (a = alpha, b = beta)")

    per_day = 86_400 / config.CanarySpec().interval_s
    cap = config.CanarySpec().daily_usd
    print(f"3. canary spend at the default interval ({per_day:.0f} probes a day), "
          "per provider per day")
    total_typical = total_worst = 0.0
    for pid, model, typical, worst_cost in canary_costs():
        total_typical += typical * per_day
        total_worst += worst_cost * per_day
        print(f"   {pid:11} {model:34} typical ${typical * per_day:.5f}/day   "
              f"worst ${worst_cost * per_day:.4f}/day")
    print(f"   all providers: typical ${total_typical:.4f}/day, worst "
          f"${total_worst:.3f}/day; the [canary] daily_usd cap (${cap:g}) bounds it")
    idle, vigilant, events = await loop_cost(args.loop_s)
    cost = 100 * (vigilant - idle)
    verdict = cost <= 1.0
    ok &= verdict
    print(f"4. the vigilance loop at 1 Hz, {args.loop_s:g} s each: idle engine "
          f"{100 * idle:.3f}% of a core, with vigilance {100 * vigilant:.3f}% "
          f"({events} events); the loop costs {cost:.3f}% of a core (target <= 1%) "
          f"{'PASS' if verdict else 'FAIL'}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
