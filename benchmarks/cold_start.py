"""Cold start of `aetherflow --help` beside a bare `python -c pass`, and what it imports.

Each command runs 15 times, the three interleaved round by round, after one untimed run
each; the median wall time is reported with its ratio to the bare interpreter. Then a
subprocess imports aetherflow_tui.cli, runs `main(["--help"])`, and lists any heavy module
that got loaded (there must be none), and `python -X importtime` names the slowest imports.

Run from the repo root: python benchmarks/cold_start.py
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

TARGET_S = 0.300
RUNS = 15
HEAVY = ("textual", "llama_cpp", "onnxruntime", "genai_prices", "ecologits", "rich", "httpx",
         "aiohttp")
# Also worth knowing about, though not in the target: the engine's own dependencies.
ENGINE_DEPS = ("pydantic", "aiosqlite", "keyring", "platformdirs", "psutil",
               "aetherflow_tui.engine")

PROBE = f"""
import contextlib, io, json, sys
import aetherflow_tui.cli as cli
after_import = sorted(m for m in {HEAVY + ENGINE_DEPS!r} if m in sys.modules)
with contextlib.redirect_stdout(io.StringIO()):
    try:
        cli.main(["--help"])
    except SystemExit:
        pass
after_help = sorted(m for m in {HEAVY + ENGINE_DEPS!r} if m in sys.modules)
print(json.dumps({{"after_import": after_import, "after_help": after_help}}))
"""


def console_script() -> str:
    beside = Path(sys.executable).parent / "aetherflow"
    if beside.exists():
        return str(beside)
    found = shutil.which("aetherflow")
    if found is None:
        raise SystemExit("the aetherflow console script is not installed (pip install -e .)")
    return found


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   cwd=REPO_ROOT)
    return time.perf_counter() - t0


def slowest_imports(top: int) -> list[tuple[float, str]]:
    """(cumulative ms, module) of the slowest top-level imports of `-m aetherflow_tui --help`."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "aetherflow_tui", "--help"],
                          capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    found = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[12:].split("|")
        if not name[1:].startswith(" "):  # nested imports are indented
            found.append((int(cumulative) / 1000, name.strip()))
    return sorted(found, reverse=True)[:top]


def main() -> int:
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -m aetherflow_tui --help": [sys.executable, "-m", "aetherflow_tui", "--help"],
        "aetherflow --help": [console_script(), "--help"],
    }
    for cmd in commands.values():
        wall(cmd)  # warm the page cache
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(RUNS):
        for name, cmd in commands.items():
            times[name].append(wall(cmd))
    base = statistics.median(times["python -c pass"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:34} median {median * 1000:6.1f} ms  min {min(values) * 1000:6.1f} ms  "
              f"ratio to bare python {median / base:.2f}x  ({RUNS} runs)")

    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                           cwd=REPO_ROOT, check=True)
    loaded = json.loads(probe.stdout.strip().splitlines()[-1])
    heavy = [m for m in loaded["after_help"] if m in HEAVY]
    print(f"after `import aetherflow_tui.cli`: {', '.join(loaded['after_import']) or 'none'} "
          f"of the heavy and engine modules loaded")
    print(f"after main(['--help']): heavy modules loaded: {', '.join(heavy) or 'none'}; engine "
          f"modules loaded: "
          f"{', '.join(m for m in loaded['after_help'] if m not in HEAVY) or 'none'}")
    print("slowest top-level imports of `python -X importtime -m aetherflow_tui --help`: "
          + ", ".join(f"{name} {ms:.1f} ms" for ms, name in slowest_imports(5)))

    worst = max(statistics.median(times[name]) for name in commands if "--help" in name)
    fast = worst <= TARGET_S
    ok = fast and not heavy
    print(f"cold start: aetherflow --help median "
          f"{statistics.median(times['aetherflow --help']) * 1000:.1f} ms, python -m "
          f"{statistics.median(times['python -m aetherflow_tui --help']) * 1000:.1f} ms "
          f"(target <= {TARGET_S * 1000:.0f} ms) {'PASS' if fast else 'FAIL'}; heavy modules "
          f"at --help: {len(heavy)} (target 0) {'PASS' if not heavy else 'FAIL'}")
    print("PASS" if ok else "FAIL", f"(target: aetherflow --help <= {TARGET_S:.1f} s, no heavy "
          "module imported)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
