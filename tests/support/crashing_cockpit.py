"""`aetherflow` with no command (the cockpit), with one fault planted: F12 raises.

tests/e2e/test_cockpit_crash.py runs this in tmux and presses F12: the handler raises as a
bug would, and everything after that (Textual's exit, the crash log, the one line, the exit
status of the process) is the real cockpit's. The fault is the only difference.

Run from the repo root: python tests/support/crashing_cockpit.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from textual.binding import Binding

from aetherflow_tui import app, cli

FAULT = "planted fault: F12 pressed"


class CrashingCockpit(app.CockpitApp):
    CSS_PATH = Path(app.__file__).parent / app.CockpitApp.CSS_PATH  # not beside this file
    BINDINGS = [*app.BINDINGS, Binding("f12", "crash", "Crash", show=False)]

    def action_crash(self) -> None:
        raise RuntimeError(FAULT)


if __name__ == "__main__":
    app.CockpitApp = CrashingCockpit  # cli.cockpit.handle imports it at call time
    sys.exit(cli.main([]))
