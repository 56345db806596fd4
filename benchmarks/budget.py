"""The daily budget on a WIDE plan: how much of the budget a run gets to use, and whether the
money the provider billed ever passes it.

The provider is tests/support/scripted_server.py in a subprocess, which keeps its own bill
(GET /v1/billing: the prompt tokens of every request it took, the completion tokens it
sent) whatever usage it reports. Each step asks for 25 words with max_tokens = 100, so its
worst case (every input byte a token, all 100 tokens of answer) is about 4-5 times its
real cost. One step run alone gives the real cost of a call; the budget is set to afford
15 of them.

1. One process: a plan of 40 independent steps under that budget (Engine.start_run).
2. Three processes at once on one data dir (`aetherflow run`; TZ UTC, UTC+14 and UTC-12,
   so at least one is on another date than UTC), each with its own 40-step plan, under the
   same daily budget.

For each: calls admitted (answered), money billed by the server beside the budget, the
ratio, and admitted calls beside the 15 the budget affords. PASS when at least 10 calls
ran in each and the server never billed past the budget.

Run from the repo root: python benchmarks/budget.py
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from aetherflow_tui.engine import Engine, config  # noqa: E402
from tests.support import loopback  # noqa: E402
from tests.support.plans import bouquet, provider, step, write_plan  # noqa: E402
from tests.support.scripted_server import spawn_server  # noqa: E402

PRICE_IN = 10.0  # $ per million tokens
PRICE_OUT = 1200.0
STEPS = 40
AFFORDED = 15
MIN_RUN = 10
ANSWER = " ".join(f"w{i}" for i in range(25))


def billed(url: str) -> float:
    with urllib.request.urlopen(f"{url}/billing", timeout=10) as answer:
        bill = json.load(answer)
    return (bill["input_tokens"] * PRICE_IN + bill["output_tokens"] * PRICE_OUT) / 1e6


def bouquet_text(url: str, daily_usd: float) -> str:
    return bouquet(provider("alpha", url, price_in=PRICE_IN, price_out=PRICE_OUT,
                            max_concurrency=50), daily_usd=daily_usd, max_concurrency=50)


def wide_plan(path: Path, name: str) -> Path:
    return write_plan(path, *(step(f"{name}{i:02}", f"@@say@@ SAY: {ANSWER}", max_tokens=100)
                              for i in range(STEPS)), task_id=name)


async def run_in_process(url: str, home: Path, daily_usd: float, name: str) -> int:
    text = bouquet_text(url, daily_usd)
    async with Engine(config.parse(text, home / "bouquet.toml"), home) as engine:
        run = await engine.start_run(wide_plan(home / f"{name}.json", name))
        await run.wait()
        return run.view().done


def run_processes(url: str, home: Path, daily_usd: float) -> tuple[int, list[int]]:
    (home / "bouquet.toml").write_text(bouquet_text(url, daily_usd))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AETHERFLOW_", "XDG_"))}
    env.update(AETHERFLOW_HOME=str(home / "data"), AETHERFLOW_CONFIG=str(home / "bouquet.toml"),
               XDG_CONFIG_HOME=str(home / "xdg"), PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "aetherflow_tui"]
    subprocess.run([*command, "spend"], env=env, check=True, capture_output=True, timeout=120)
    runs = [subprocess.Popen([*command, "run", str(wide_plan(home / f"{name}.json", name)),
                              "--json"], env={**env, "TZ": tz}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for name, tz in (("a", "UTC"), ("b", "Pacific/Kiritimati"), ("c", "Etc/GMT+12"))]
    done = 0
    for process in runs:
        out, err = process.communicate(timeout=600)
        if process.returncode not in (0, 3):
            raise RuntimeError(f"aetherflow run exit {process.returncode}: {err[-2000:]}")
        done += sum(s["status"] == "done" for s in json.loads(out)["steps"])
    return done, [p.returncode for p in runs]


def report(label: str, admitted: int, bill: float, budget: float) -> bool:
    ok = admitted >= MIN_RUN and bill <= budget + 1e-12
    print(f"{label:34} admitted {admitted:3d} of {STEPS * (3 if 'processes' in label else 1)} "
          f"steps ({admitted / AFFORDED:.2f}x the {AFFORDED} the budget affords); billed "
          f"${bill:.4f} of ${budget:.4f} ({bill / budget:.3f}x)  "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    server, url = spawn_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "calibrate").mkdir()
            before = billed(url)
            asyncio.run(run_one(url, root / "calibrate"))
            real = billed(url) - before
            budget = AFFORDED * real
            print(f"one call: ${real:.6f} billed; daily budget ${budget:.4f} "
                  f"({AFFORDED} calls); {STEPS} independent steps a plan")
            (root / "one").mkdir()
            before = billed(url)
            admitted = asyncio.run(run_in_process(url, root / "one", budget, "s"))
            ok = report("one process, 40 steps", admitted, billed(url) - before, budget)
            (root / "three").mkdir()
            before = billed(url)
            admitted, codes = run_processes(url, root / "three", budget)
            ok &= report("three processes (three TZ)", admitted, billed(url) - before,
                         budget)
            print(f"exit codes of the three runs: {codes}")
    finally:
        loopback.stop(server)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


async def run_one(url: str, home: Path) -> None:
    text = bouquet_text(url, 100.0)
    async with Engine(config.parse(text, home / "bouquet.toml"), home) as engine:
        run = await engine.start_run(write_plan(home / "one.json", step(
            "s00", f"@@say@@ SAY: {ANSWER}", max_tokens=100), task_id="s"))
        await run.wait()


if __name__ == "__main__":
    sys.exit(main())
