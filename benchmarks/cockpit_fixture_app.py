"""Run the cockpit on the seeded fixture engine (tests/support/cockpit_fixture.py).

benchmarks/cockpit.py starts this in tmux to measure the cockpit's idle CPU with every
pane showing data: the embedded default bouquet, keys, key checks, an approval and an
hour of calls, under a fixed clock. Everything lives in a temporary directory.

Run from the repo root: python benchmarks/cockpit_fixture_app.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.cockpit_fixture import fixture_app  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="af-bench-") as tmp:
        fixture_app(Path(tmp)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
