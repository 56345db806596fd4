"""Loading a bouquet config: a quarter of the size cap beside the cap, and refused files.

config.load() on generated bouquets of two-model providers, one of a quarter of
MAX_CONFIG_BYTES and one just under it, interleaved, 5 rounds, median reported; the default
bouquet (12 KB) for information. The per-KB cost of the capped one against the quarter one
says whether loading stays linear (target: at most 1.5x), and the capped file must load in
under 5 s. Then a 1 GB sparse file and /dev/zero must be refused in under 50 ms each:
nothing of them is read.

Run from the repo root: python benchmarks/config_load.py
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from aetherflow_tui.engine import config  # noqa: E402
from aetherflow_tui.engine.errors import ConfigError  # noqa: E402
from tests.support.plans import WIDE_PROVIDER  # noqa: E402

ROUNDS = 5
MAX_PER_KB_RATIO = 1.5
MAX_CAPPED_S = 5.0
MAX_REFUSAL_S = 0.050

PROVIDER_TABLE = re.compile(r"^\[providers\.[^.\]]+\]", re.MULTILINE)
def bouquet_of(limit: int) -> str:
    """As many providers as fit in `limit` bytes."""
    blocks: list[str] = []
    size = 0
    while True:
        block = WIDE_PROVIDER.format(i=len(blocks)) + "\n"
        if size + len(block) > limit:
            return "".join(blocks)
        blocks.append(block)
        size += len(block)


def timed(path: Path) -> float:
    t0 = time.perf_counter()
    config.load(path)
    return time.perf_counter() - t0


def refusal(path: Path) -> float:
    t0 = time.perf_counter()
    try:
        config.load(path)
    except ConfigError:
        return time.perf_counter() - t0
    raise SystemExit(f"{path} was not refused")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        default = Path(tmp, "default.toml")
        default.write_text(config.default_text(), encoding="utf-8")
        texts = {"quarter": bouquet_of(config.MAX_CONFIG_BYTES // 4),
                 "capped": bouquet_of(config.MAX_CONFIG_BYTES)}
        paths = {name: Path(tmp, f"{name}.toml") for name in texts}
        for name, text in texts.items():
            paths[name].write_text(text, encoding="utf-8")
        sparse = Path(tmp, "sparse.toml")
        with sparse.open("wb") as file:
            file.truncate(1 << 30)
        timed(default), timed(paths["quarter"])  # warm imports and caches
        seconds: dict[str, list[float]] = {"default": [], "quarter": [], "capped": []}
        for _ in range(ROUNDS):
            seconds["default"].append(timed(default))
            for name, path in paths.items():
                seconds[name].append(timed(path))
        refused = {"1 GB sparse file": refusal(sparse), "/dev/zero": refusal(Path("/dev/zero"))}
    texts["default"] = config.default_text()
    per_kb = {}
    for name in ("default", "quarter", "capped"):
        kb = len(texts[name].encode()) / 1024
        median = statistics.median(seconds[name])
        per_kb[name] = median / kb
        providers = len(PROVIDER_TABLE.findall(texts[name]))
        print(f"{name:8} bouquet {kb:6.0f} KB {providers:5} providers "
              f"{median * 1000:8.1f} ms {per_kb[name] * 1e6:6.0f} µs/KB")
    ratio = per_kb["capped"] / per_kb["quarter"]
    big_med = statistics.median(seconds["capped"])
    print(f"per-KB cost, capped / quarter: {ratio:.2f}x (target <= {MAX_PER_KB_RATIO}x)")
    for what, seconds in refused.items():
        print(f"refusing {what}: {seconds * 1000:.2f} ms (target < {MAX_REFUSAL_S * 1000:.0f} ms)")
    ok = (ratio <= MAX_PER_KB_RATIO and big_med < MAX_CAPPED_S
          and all(s < MAX_REFUSAL_S for s in refused.values()))
    print("PASS" if ok else "FAIL", f"capped config in {big_med:.2f} s (target < {MAX_CAPPED_S} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
