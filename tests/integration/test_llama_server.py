"""llama.cpp's own OpenAI-compatible server as an ordinary `kind = "openai"` provider.

`python -m llama_cpp.server` serves the embedded gemma-3-270m GGUF on 127.0.0.1; the real
engine calls it like any cloud provider (keyless, priced at $0), streamed and not, and
runs a small plan on it. Answers are kept short: the model runs on CPU.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from aetherflow_tui.engine import Engine, config
from aetherflow_tui.engine.keys import KeyVault
from aetherflow_tui.engine.progress import RunStatus, StepState
from aetherflow_tui.engine.providers.base import ChatRequest
from tests.support import loopback
from tests.support.models import CHAT_FORMAT, MODEL_ID
from tests.support.plans import bouquet_text, model_entry, provider_table, step, write_plan

STARTUP_DEADLINE_S = 60.0
POLL_S = 0.2
STOP_TIMEOUT_S = 10.0
MAX_TOKENS = 12


@dataclass(frozen=True)
class LlamaServer:
    base_url: str  # ends in /v1
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _log_tail(log: Path, limit: int = 4000) -> str:
    try:
        return log.read_text("utf-8", "replace")[-limit:]
    except OSError as exc:
        return f"(no log: {exc})"


@pytest.fixture(scope="module")
def llama_server(embedded_gguf: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[LlamaServer]:
    workdir = tmp_path_factory.mktemp("llama-server")
    log = workdir / "server.log"
    port = _free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(embedded_gguf), "--model_alias", MODEL_ID,
        "--chat_format", CHAT_FORMAT, "--n_ctx", "1024", "--n_threads", "2",
        # A fixed seed: each request's sampling seed follows from it, so reruns agree.
        "--seed", "7",
        "--host", "127.0.0.1", "--port", str(port),
    ]
    base_url = f"http://127.0.0.1:{port}/v1"
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=workdir)
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        with httpx.Client(timeout=2.0) as client:
            while True:
                if process.poll() is not None:
                    pytest.fail(f"llama_cpp.server exited with {process.returncode} before "
                                f"answering; its log:\n{_log_tail(log)}")
                try:
                    if client.get(f"{base_url}/models").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not answer GET /v1/models within "
                                f"{STARTUP_DEADLINE_S:.0f} s; its log:\n{_log_tail(log)}")
                time.sleep(POLL_S)
        yield LlamaServer(base_url, log)
    finally:
        loopback.stop(process, timeout=STOP_TIMEOUT_S)


def _bouquet(base_url: str) -> str:
    return bouquet_text(
        provider_table("llama", model_entry(MODEL_ID, roles=["survival", "chat"], price_in=0.0,
                                            price_out=0.0, params_b=0.27),
                       base_url=base_url, key="none", zone="FRA"),
        budget={"daily_usd": 1.0})


@pytest.fixture
async def engine(llama_server: LlamaServer, keyring_backend, tmp_path: Path
                 ) -> AsyncIterator[Engine]:
    bouquet = config.parse(_bouquet(llama_server.base_url), tmp_path / "bouquet.toml")
    async with Engine(bouquet, tmp_path / "home", vault=KeyVault(backend=keyring_backend)) as e:
        yield e


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_call_to_llama_server_is_answered_free_and_recorded(engine, llama_server,
                                                                     stream, tmp_path):
    tokens: list[str] = []
    spec = engine.provider_spec("llama")
    request = ChatRequest.ask(MODEL_ID, "Write one short sentence about the sea.",
                              max_tokens=MAX_TOKENS, stream=stream)
    outcome = await engine.call(spec, request, purpose="test", on_token=tokens.append)
    assert outcome.ok, f"{outcome.error}\nserver log:\n{_log_tail(llama_server.log)}"
    result = outcome.result
    assert result.text.strip(), result
    assert result.model == MODEL_ID
    if stream:
        assert "".join(tokens) == result.text
        assert result.ttft_s is not None and result.ttft_s <= result.duration_s
    else:
        assert tokens == []
        # Whole answers carry the server's own usage. (Streams carry none from
        # llama_cpp.server 0.3.36, whatever stream_options says: the engine counts chunks.)
        assert result.usage.estimated is False
    record = (await engine.settled(outcome)).record
    assert record.id is not None and record.energy is not None
    assert record.ok and record.provider == "llama" and record.model == MODEL_ID
    assert record.input_tokens > 0
    assert 0 < record.output_tokens <= MAX_TOKENS
    assert record.cost.usd == 0.0 and record.cost.method == "config"

    (latest,) = await engine.store.recent_calls(1)
    assert latest.id == record.id and latest.output_tokens == record.output_tokens
    with sqlite3.connect(tmp_path / "home" / "aetherflow.db") as db:
        row = db.execute("SELECT provider, model, ok, usd, output_tokens FROM calls WHERE id=?",
                         (record.id,)).fetchone()
    assert row == ("llama", MODEL_ID, 1, 0.0, record.output_tokens)


async def test_a_plan_runs_on_llama_server(engine, llama_server, tmp_path):
    plan = write_plan(
        tmp_path / "plan.json",
        step("facts", "List two facts about lighthouses.", type="documentation",
             max_tokens=16),
        step("summary", "Summarise the facts above in one sentence.", "facts",
             type="documentation", max_tokens=16),
        task_id="llama-server-plan")
    out = tmp_path / "out"
    run = await engine.start_run(plan, output_dir=out)
    view = await run.wait()
    steps = {s.step_id: s for s in run.steps()}
    assert view.status is RunStatus.DONE, (
        f"{[(s.step_id, s.state, s.error) for s in steps.values()]}\n"
        f"server log:\n{_log_tail(llama_server.log)}")
    assert {s.state for s in steps.values()} == {StepState.DONE}
    assert steps["summary"].started >= steps["facts"].finished
    outputs = run.outputs()
    for step_id, view_ in steps.items():
        assert (view_.provider, view_.model) == ("llama", MODEL_ID)
        assert 0 < view_.output_tokens <= 16
        assert view_.usd == 0.0
        assert outputs[step_id].strip()
        written = out / f"{step_id}.{run.extension(step_id)}"
        assert written.read_text("utf-8") == outputs[step_id]
    # The dependent's prompt quoted the first step's output, so it was the longer one.
    assert steps["summary"].input_tokens > steps["facts"].input_tokens

    rows = {r["step_id"]: r for r in await engine.store.steps(run.run_id)}
    assert {r["status"] for r in rows.values()} == {"done"}
    calls = await engine.store.run_calls(run.run_id)
    assert sorted(c.step_id for c in calls) == ["facts", "summary"]
    assert all(c.ok and c.provider == "llama" and c.cost.usd == 0.0 for c in calls)
