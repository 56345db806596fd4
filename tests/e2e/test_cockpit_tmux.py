"""The installed `aetherflow` command in tmux: a key goes in, gets tested, approved, active.

The test types what a person types and checks what a person would read on the screen,
colours included: the cockpit on a bouquet whose providers are served by a scripted
OpenAI-compatible server on 127.0.0.1, the key dialog, the approvals screen, the status
light, the help, and quitting. The key itself must never be on the screen.
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.tmux import Tmux, aetherflow_command, tmux_path
from tests.support.plans import bouquet_text, model_entry, provider_table
from tests.support.scripted_server import ScriptedServer

SESSION = "cockpit"
SGR = re.compile(r"\x1b\[([0-9;]*)m")
KEY_LABELS = ("no key", "to approve", "active", "untested", "testing", "failed", "rejected",
              "keyless", "env")

pytestmark = pytest.mark.skipif(
    tmux_path() is None, reason="tmux is not installed (apt-get install -y tmux)")


def bouquet(url: str) -> str:
    """Two providers on the scripted server: spare (first, under the cursor) and scripted."""
    echo = model_entry("echo", roles=["chat"], price_in=0.5, price_out=1.5)
    return bouquet_text(provider_table("spare", echo, base_url=url, key="keyring"),
                        provider_table("scripted", echo, base_url=url, key="keyring", zone="FRA"),
                        budget={"daily_usd": 1.0})


def key_cell(screen: str, provider: str) -> str | None:
    """The key column of the provider's row in the providers pane, as displayed."""
    labels = "|".join(re.escape(label) for label in KEY_LABELS)
    found = re.search(rf"\b{re.escape(provider)}\s+({labels})\b", screen)
    return found.group(1) if found else None


def light_colour(styled: str, provider: str) -> str | None:
    """The foreground colour of the status light on the provider's row, from a styled
    capture (SGR escapes): "38;5;N", "38;2;R;G;B", "3N", or "default"; None if no row."""
    labels = "|".join(re.escape(label) for label in KEY_LABELS)
    for line in styled.splitlines():
        plain = SGR.sub("", line)
        if "●" not in line or not re.search(rf"\b{re.escape(provider)}\s+({labels})\b", plain):
            continue
        colour = "default"
        for params in SGR.findall(line[:line.index("●")]):
            tokens = params.split(";") if params else ["0"]
            i = 0
            while i < len(tokens):
                token = tokens[i]
                if token == "38":
                    width = 3 if tokens[i + 1 : i + 2] == ["5"] else 5
                    colour = ";".join(tokens[i : i + width])
                    i += width
                    continue
                if token in ("0", "39"):
                    colour = "default"
                elif token.isdigit() and (30 <= int(token) <= 37 or 90 <= int(token) <= 97):
                    colour = token
                elif token == "48":  # a background colour: skip its arguments
                    i += 3 if tokens[i + 1 : i + 2] == ["5"] else 5
                    continue
                i += 1
        return colour
    return None


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    server = Tmux()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def provider_server() -> Iterator[tuple[ScriptedServer, str]]:
    key = f"sk-e2e-{secrets.token_hex(12)}"
    with ScriptedServer(api_key=key) as server:
        yield server, key


def test_a_key_goes_in_gets_approved_and_turns_active(tmp_path: Path, tmux: Tmux,
                                                     provider_server) -> None:
    server, key = provider_server
    command = aetherflow_command()
    assert command is not None, "the aetherflow console script is not installed (pip install -e .)"
    config = tmp_path / "bouquet.toml"
    config.write_text(bouquet(server.url))
    env = {
        "AETHERFLOW_CONFIG": str(config),
        "AETHERFLOW_HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),  # where the keyring file goes
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
    }
    assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
    # The shell stays after the cockpit quits, so its exit status can be read on the screen.
    script = f"env {assignments} {shlex.quote(command)}; echo EXIT=$?; exec sleep 600"
    tmux.new_session(SESSION, ["/bin/sh", "-c", script], width=120, height=40)

    tmux.wait_for(SESSION, lambda s: key_cell(s, "scripted") == "no key"
                  and key_cell(s, "spare") == "no key" and "Quit" in s,
                  "the providers pane to list spare and scripted with no key")
    # The cursor row paints its own colours; the other rows show their light's colour.
    first = tmux.capture(SESSION, styled=True)
    cursor, no_key = light_colour(first, "spare"), light_colour(first, "scripted")
    assert cursor is not None and no_key is not None and cursor != no_key, first

    tmux.send(SESSION, "Down", "k")
    tmux.wait_for(SESSION, lambda s: "API key for scripted" in s
                  and "paste the key, then enter" in s, "the key dialog")
    tmux.type(SESSION, key)
    tmux.send(SESSION, "Enter")
    tmux.wait_for(SESSION, lambda s: "awaiting approval" in s,
                  "the sandbox test to pass and ask for approval")
    tmux.send(SESSION, "Escape")
    tmux.wait_for(SESSION, lambda s: "API key for scripted" not in s
                  and key_cell(s, "scripted") == "to approve",
                  "the dialog to close and the row to say 'to approve'")
    sandbox = [r for r in server.requests if r["path"] == "/v1/chat/completions"]
    assert [r["headers"].get("authorization") for r in sandbox] == [f"Bearer {key}"], (
        "one sandbox call, carrying the typed key")

    tmux.send(SESSION, "a")
    # The toast says it too: wait for the row in the approvals table ("activate key" kind).
    tmux.wait_for(SESSION, lambda s: "Pending approvals" in s and "activate key" in s
                  and "Activate the new key for scripted" in s,
                  "the approvals screen to list the activation")
    tmux.send(SESSION, "y")
    tmux.wait_for(SESSION, lambda s: "nothing waiting for you" in s,
                  "the approval to leave the queue")
    tmux.send(SESSION, "Escape")
    tmux.wait_for(SESSION, lambda s: "Pending approvals" not in s
                  and key_cell(s, "scripted") == "active",
                  "the approvals screen to close and the row to say 'active'")

    # Back on spare, scripted's light shows through: a tested key and a good call are not
    # the grey of no key.
    tmux.send(SESSION, "Up")
    tmux.wait_for(SESSION, lambda s: light_colour(s, "spare") == cursor
                  and light_colour(s, "scripted") not in (None, cursor, no_key),
                  "scripted's light to leave the grey of no key", timeout=5, styled=True)

    tmux.send(SESSION, "?")
    help_screen = tmux.wait_for(SESSION, lambda s: "esc closes" in s, "the help screen")
    assert re.search(r"\ba\s+Approvals\s+Pending changes waiting for your y or n", help_screen), (
        f"the help lists the approvals key:\n{help_screen}")
    tmux.send(SESSION, "Escape")
    tmux.wait_for(SESSION, lambda s: "esc closes" not in s and "Quit" in s,
                  "the help to close")

    tmux.send(SESSION, "q")
    tmux.wait_for(SESSION, lambda s: re.search(r"^EXIT=\d+", s, re.M) is not None,
                  "the cockpit to exit")
    exit_line = re.search(r"^EXIT=\d+", tmux.captures[-1], re.M)
    assert exit_line is not None and exit_line.group(0) == "EXIT=0", tmux.captures[-1]

    shown = [screen for screen in tmux.captures if key in screen]
    assert not shown, f"the key was on the screen:\n{shown[0]}"
