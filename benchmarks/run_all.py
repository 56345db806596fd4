"""Run every benchmark in order with this interpreter, echo their output, print the machine.

Run from the repo root: python benchmarks/run_all.py
Exits non-zero if any benchmark missed its target (or failed to run).
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT))

SCRIPTS = ("call_overhead.py", "store_throughput.py", "cold_start.py", "cockpit.py",
           "scheduler.py", "routing.py", "litellm_overhead.py", "local.py", "regulator.py",
           "vigilance.py", "veille_poll.py", "veille_classifier.py", "budget.py",
           "config_load.py")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    return (f"machine: {platform.platform()}, {cpu_model()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {datetime.date.today().isoformat()}")


def main() -> int:
    print(machine_line(), flush=True)
    results: list[tuple[str, int]] = []
    for script in SCRIPTS:
        print(f"\n=== {script} ===", flush=True)
        done = subprocess.run([sys.executable, str(HERE / script)], cwd=REPO_ROOT)
        results.append((script, done.returncode))
    print()
    for script, code in results:
        print(f"{script:22} {'PASS' if code == 0 else f'FAIL (exit {code})'}")
    print(machine_line())
    return 0 if all(code == 0 for _, code in results) else 1


if __name__ == "__main__":
    sys.exit(main())
