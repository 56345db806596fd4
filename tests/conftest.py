"""Shared fixtures: real servers on 127.0.0.1, real keyring files, real SQLite in tmp dirs."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from keyrings.alt.file import PlaintextKeyring

from tests.support.scripted_server import ScriptedServer

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = "sk-test-9f8e7d6c5b4a39281706"


@pytest.fixture
def keyring_backend(tmp_path: Path) -> PlaintextKeyring:
    """A real keyring backend whose file lives in this test's tmp dir."""
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring" / "keyring_pass.cfg")
    return backend


@pytest.fixture(scope="session")
def embedded_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded GGUF model (gemma-3-270m, 250 MB), assembled once per test session."""
    # Imported here: only the tests that use the model need the model package.
    from tests.support.models import embedded_model_path

    return embedded_model_path(tmp_path_factory.mktemp("models"))


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer(api_key=TEST_KEY) as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for loopback servers."""
    # trust_env=False: a proxy set in the environment must not intercept loopback traffic.
    async with httpx.AsyncClient(trust_env=False) as c:
        yield c


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running the real `aetherflow` command with everything in tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AETHERFLOW_", "XDG_"))}
    env.update(
        AETHERFLOW_HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
        PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring",
        COLUMNS="120",
        PYTHONPATH=str(REPO_ROOT),
    )
    return env


def aetherflow_cmd() -> list[str]:
    return [sys.executable, "-m", "aetherflow_tui"]
