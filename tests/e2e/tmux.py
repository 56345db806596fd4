"""A private tmux server to run the real `aetherflow` command in, as a person would.

Every call goes through one socket of our own (`tmux -L NAME`), so nothing here ever
touches the operator's sessions; `kill()` ends only that server. The screen is read with
`capture-pane`, keys are typed with `send-keys`.

Textual draws on its stderr: never redirect the stderr of a command run in a pane.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

POLL_S = 0.05
# Variables of the caller's shell that would leak into the cockpit under test.
_SCRUBBED = ("AETHERFLOW_", "XDG_", "TMUX", "COLUMNS", "LINES", "PYTHON_KEYRING_BACKEND")


def tmux_path() -> str | None:
    return shutil.which("tmux")


def aetherflow_command() -> str | None:
    """The installed console script: beside this interpreter first, else on PATH."""
    beside = Path(sys.executable).parent / "aetherflow"
    if beside.exists():
        return str(beside)
    return shutil.which("aetherflow")


def clean_environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    env.setdefault("TERM", "xterm-256color")
    return env


class Tmux:
    """One tmux server on its own socket; sessions are named by the caller."""

    def __init__(self, prefix: str = "af-e2e") -> None:
        self.socket = f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}"
        self.captures: list[str] = []  # every screen read, for checks over the whole run

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # -f /dev/null: no user tmux.conf; -u: UTF-8 whatever the locale says.
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", "-u", *args],
                              capture_output=True, text=True, env=clean_environ(),
                              check=check, timeout=10)

    def new_session(self, name: str, argv: Sequence[str], *, width: int = 120,
                    height: int = 40) -> None:
        """Start argv (no shell unless argv asks for one) in a detached session."""
        self.run("new-session", "-d", "-s", name, "-x", str(width), "-y", str(height), *argv)

    def capture(self, name: str, *, styled: bool = False) -> str:
        """The screen as text; styled: with the SGR escapes of colours and attributes."""
        screen = self.run("capture-pane", "-p", *(["-e"] if styled else []), "-t", name).stdout
        self.captures.append(screen)
        return screen

    def send(self, name: str, *keys: str) -> None:
        self.run("send-keys", "-t", name, *keys)

    def type(self, name: str, text: str) -> None:
        """Type text literally: no key names, no shell in between."""
        self.run("send-keys", "-t", name, "-l", text)

    def pane_pid(self, name: str) -> int:
        return int(self.run("display-message", "-p", "-t", name, "#{pane_pid}").stdout)

    def has_session(self, name: str) -> bool:
        return self.run("has-session", "-t", name, check=False).returncode == 0

    def wait_for(self, name: str, ready: Callable[[str], bool], what: str,
                 timeout: float = 20.0, *, styled: bool = False) -> str:
        """Read the screen until ready(screen) holds; fail with the last screen if never."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.capture(name, styled=styled)
            if ready(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                                     f"the screen was:\n{screen}")
            time.sleep(POLL_S)

    def kill(self) -> None:
        """End this server and its panes, and remove its socket (tmux leaves it behind)."""
        where = self.run("display-message", "-p", "#{socket_path}", check=False).stdout.strip()
        self.run("kill-server", check=False)
        tmpdir = os.environ.get("TMUX_TMPDIR") or "/tmp"
        socket = Path(where or f"{tmpdir}/tmux-{os.getuid()}/{self.socket}")
        if socket.name == self.socket:
            socket.unlink(missing_ok=True)
