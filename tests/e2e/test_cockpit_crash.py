"""An unhandled exception in the cockpit, in tmux: what the operator is left with.

The terminal is given back (the cockpit's screen is gone), one line says where the full
traceback was written, the process exits 1, and the file holds the traceback.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.e2e.tmux import Tmux, tmux_path

pytestmark = pytest.mark.skipif(
    tmux_path() is None, reason="tmux is not installed (apt-get install -y tmux)")

HARNESS = REPO_ROOT / "tests" / "support" / "crashing_cockpit.py"
REPORT = re.compile(r"^aetherflow: the cockpit crashed \(RuntimeError: planted fault: F12 "
                    r"pressed\); full traceback in (\S+)$")


def test_an_unhandled_exception_exits_1_with_one_line_naming_the_traceback(tmp_path: Path):
    home = tmp_path / "home"
    env = [f"XDG_CONFIG_HOME={tmp_path / 'xdg-config'}", f"XDG_DATA_HOME={tmp_path / 'xdg-data'}",
           f"AETHERFLOW_HOME={home}", "PYTHON_KEYRING_BACKEND=keyrings.alt.file.PlaintextKeyring"]
    command = (f"env {shlex.join(env)} {shlex.quote(sys.executable)} {shlex.quote(str(HARNESS))}"
               " 2>&1; echo \"exit status $?\"; sleep 60")
    tmux = Tmux("af-crash")
    try:
        # Wide, so the line is one row of the screen as it is one line of output.
        tmux.new_session("crash", ["sh", "-c", command], width=250, height=40)
        tmux.wait_for("crash", lambda s: "Quit" in s and "Providers" in s, "the cockpit")
        tmux.send("crash", "F12")
        screen = tmux.wait_for("crash", lambda s: "exit status" in s, "the cockpit to exit")
    finally:
        tmux.kill()
    lines = [line for line in screen.splitlines() if line.strip()]
    assert lines[-1] == "exit status 1", screen
    assert "Providers" not in screen and "Traceback" not in screen, screen  # screen restored
    assert len(lines) == 2, screen  # nothing but the one line, then the shell's echo
    match = REPORT.match(lines[0])
    assert match, screen
    log = Path(match.group(1))
    assert log.parent == home and log.name.startswith("crash-")
    text = log.read_text("utf-8")
    assert text.startswith("Traceback (most recent call last):")
    assert "in action_crash" in text and text.rstrip().endswith(
        "RuntimeError: planted fault: F12 pressed")
