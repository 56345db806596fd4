"""Fixtures the integration tests share: a keyless scripted server, and a bouquet file the
CLI subprocesses read (through AETHERFLOW_CONFIG in cli_env)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.scripted_server import ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    """A keyless scripted OpenAI-compatible server on 127.0.0.1."""
    with ScriptedServer() as started:
        yield started


@pytest.fixture
def configure(cli_env: dict[str, str], tmp_path: Path) -> Callable[[str], Path]:
    """Write a bouquet for the command to use."""
    def write(text: str) -> Path:
        path = tmp_path / "bouquet.toml"
        path.write_text(text)
        cli_env["AETHERFLOW_CONFIG"] = str(path)
        return path
    return write
