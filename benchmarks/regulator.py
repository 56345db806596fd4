"""CPU cost of system consciousness (issue 6): Sampler.sample() + Regulator.observe() at 1 Hz.

1. Per-sample cost. N samples back to back (Sampler(slow_every=10), so one in ten also
   reads the temperature and battery sensors; Regulator(RegulatorSpec()), window 5), each
   timed with time.process_time() (CPU time of this process, all threads) and
   time.perf_counter(). At 1 Hz, the share of a core is the mean CPU seconds per sample
   times 1 per second. Fast and slow (sensor-reading) samples are also shown apart.
2. A real 1 Hz run, side by side. Two child processes start together and run for the same
   wall time: both tick an asyncio loop once a second (sleep until the next tick); one
   ("sampling") also takes a sample each tick, with the tick's lateness as the event-loop
   lag, and judges it; the other ("idle") does nothing else, the baseline. Each reports
   its CPU time (time.process_time) over its wall time, from its first tick to its last,
   so the interpreter's start and imports are not counted. The cost of the sampler and
   regulator is sampling minus idle.

Target: at most 1% of one core, in both measurements (part 1's estimate, part 2's excess
over idle).

Run from the repo root: python benchmarks/regulator.py [--quick] [--n 300] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from aetherflow_tui.engine.config import RegulatorSpec  # noqa: E402
from aetherflow_tui.engine.regulator import Regulator, Sampler  # noqa: E402

TARGET_CORE_PCT = 1.0
SLOW_EVERY = 10


def per_sample(n: int) -> tuple[bool, list[str]]:
    sampler = Sampler(slow_every=SLOW_EVERY)
    regulator = Regulator(RegulatorSpec())
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(n):
        c0, w0 = time.process_time(), time.perf_counter()
        sample = sampler.sample(w0, loop_lag_ms=1.0, error_rate_pct=0.0, latency_p50_s=0.9)
        regulator.observe(sample)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    slow = cpu[::SLOW_EVERY]
    fast = [c for i, c in enumerate(cpu) if i % SLOW_EVERY]
    share = 100 * statistics.fmean(cpu)  # CPU seconds per sample x 1 sample/s, in %
    ok = share <= TARGET_CORE_PCT
    return ok, [
        f"[1. per sample] {n} samples back to back, sensors read every {SLOW_EVERY}th "
        f"({sampler.slow_reads} reads)",
        f"  CPU per sample: mean {1e6 * statistics.fmean(cpu):.0f} us, median "
        f"{1e6 * statistics.median(cpu):.0f} us; without sensors median "
        f"{1e6 * statistics.median(fast):.0f} us, with sensors median "
        f"{1e6 * statistics.median(slow):.0f} us; wall mean "
        f"{1e6 * statistics.fmean(wall):.0f} us",
        f"  at 1 Hz: {share:.3f}% of a core (target <= {TARGET_CORE_PCT:g}%) "
        f"{'PASS' if ok else 'FAIL'}",
    ]


async def tick(seconds: float, sampling: bool) -> dict[str, float]:
    sampler = Sampler(slow_every=SLOW_EVERY) if sampling else None
    regulator = Regulator(RegulatorSpec()) if sampling else None
    loop = asyncio.get_running_loop()
    start = loop.time()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ticks, late_total = 0, 0.0
    while True:
        ticks += 1
        due = start + ticks
        await asyncio.sleep(max(0.0, due - loop.time()))
        late = loop.time() - due
        late_total += late
        if sampler is not None and regulator is not None:
            regulator.observe(sampler.sample(time.time(), loop_lag_ms=1000 * late))
        if ticks >= seconds:
            break
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"cpu_s": cpu, "wall_s": wall, "ticks": ticks,
            "late_ms_mean": 1000 * late_total / ticks}


def side_by_side(seconds: int) -> tuple[bool, list[str]]:
    children = {kind: subprocess.Popen(
        [sys.executable, __file__, "--child", kind, "--seconds", str(seconds)],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT) for kind in ("idle", "sampling")}
    got = {}
    for kind, child in children.items():
        out, _ = child.communicate(timeout=seconds + 60)
        got[kind] = json.loads(out.strip().splitlines()[-1])
    share = {kind: 100 * r["cpu_s"] / r["wall_s"] for kind, r in got.items()}
    excess = share["sampling"] - share["idle"]
    ok = excess <= TARGET_CORE_PCT
    lines = [f"[2. real 1 Hz run] two processes side by side, {seconds} s each"]
    for kind in ("idle", "sampling"):
        r = got[kind]
        lines.append(f"  {kind:9} {r['ticks']:.0f} ticks, CPU {1000 * r['cpu_s']:7.1f} ms over "
                     f"{r['wall_s']:.1f} s wall = {share[kind]:.3f}% of a core (ticks "
                     f"{r['late_ms_mean']:.2f} ms late on average)")
    lines.append(f"  sampler + regulator: {excess:.3f}% of a core over idle "
                 f"(target <= {TARGET_CORE_PCT:g}%) {'PASS' if ok else 'FAIL'}")
    return ok, lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100 samples, a 5 s run")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--seconds", type=int, default=None)
    parser.add_argument("--child", choices=("idle", "sampling"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    seconds = args.seconds or (5 if args.quick else 30)
    if args.child:
        print(json.dumps(asyncio.run(tick(seconds, args.child == "sampling"))))
        return 0
    n = args.n or (100 if args.quick else 300)
    verdicts: list[bool] = []
    for part in (per_sample(n), side_by_side(seconds)):
        verdicts.append(part[0])
        for line in part[1]:
            print(line, flush=True)
    ok = all(verdicts)
    print("PASS" if ok else "FAIL", f"(target: Sampler.sample() + Regulator.observe() at 1 Hz "
          f"<= {TARGET_CORE_PCT:g}% of one core)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
