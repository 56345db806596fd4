"""Bouquets and plans for scheduler tests: keyless providers on scripted servers, plan files,
and which step a request recorded by a ScriptedServer was made for."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aetherflow_tui.engine import Engine, config

# Every role, so any step type's rule finds an adequate model.
ALL_ROLES = ("fast", "cheap", "code", "reasoning", "quality", "prototyping", "qa", "chat")


def provider(pid: str, url: str, *models: str, price_in: float = 0.1, price_out: float = 0.2,
             roles: tuple[str, ...] = ALL_ROLES, **settings: Any) -> str:
    """One keyless provider's TOML; `settings` are extra provider keys (rpm, json_mode...)."""
    lines = [f"[providers.{pid}]", 'kind = "openai"', f'base_url = "{url}"', 'key = "none"',
             'zone = "FRA"']
    lines += [f"{name} = {json.dumps(value)}" for name, value in settings.items()]
    for model in models or ("echo",):
        lines += [f"[[providers.{pid}.models]]", f'id = "{model}"',
                  f"roles = {json.dumps(list(roles))}", f"price_in = {price_in}",
                  f"price_out = {price_out}", "params_b = 8"]
    return "\n".join(lines) + "\n"


def bouquet(*providers: str, daily_usd: float = 10.0, max_usd_per_request: float = 1.0,
            **routing: Any) -> str:
    """A bouquet of the given providers; fast retries unless `routing` says otherwise."""
    routing = {"backoff_s": 0.01, **routing}
    head = [
        "[budget]",
        f"daily_usd = {daily_usd}",
        "max_usd_per_1k_tokens = 1.0",
        f"max_usd_per_request = {max_usd_per_request}",
        "",
        "[routing]",
        *(f"{name} = {json.dumps(value)}" for name, value in routing.items()),
        "",
    ]
    return "\n".join(head) + "\n".join(providers)


def step(step_id: str, prompt: str, *depends_on: str, type: str = "analysis",
         **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": type, "prompt": prompt, "depends_on": list(depends_on),
            **fields}


def write_plan(path: Path, *steps: dict[str, Any], task_id: str = "test-task") -> Path:
    path.write_text(json.dumps({"task_id": task_id, "steps": list(steps)}, indent=2))
    return path


def user_text(request: dict[str, Any]) -> str:
    """The last user message of a recorded chat request."""
    messages = (request.get("body") or {}).get("messages") or []
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")


def step_of(request: dict[str, Any]) -> str | None:
    """The step a recorded request did the work of; None for audits and repairs.

    A dependent's message quotes its dependencies' outputs, which echo their own
    "## Your step:" headings, so the step is named by the last heading.
    """
    text = user_text(request)
    at = text.rfind("## Your step: ")
    if at < 0:
        return None
    return text[at + len("## Your step: "):].split()[0]


def chat_requests(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in requests if r["path"].endswith("/chat/completions")]


def calls_per_step(requests: list[dict[str, Any]]) -> Counter[str | None]:
    return Counter(step_of(r) for r in chat_requests(requests))


@contextlib.asynccontextmanager
async def engine_on(tmp_path: Path, text: str) -> AsyncIterator[Engine]:
    """A started engine on this bouquet text, its home in tmp_path (stopped after)."""
    async with Engine(config.parse(text, tmp_path / "bouquet.toml"), tmp_path / "home") as e:
        yield e


# One provider of a large bouquet (a config near the size cap): two priced models, its key
# from the environment so that loading it reads no keychain.
WIDE_PROVIDER = """\
[providers.p{i}]
kind = "openai"
base_url = "https://api{i}.example/v1"
key = "env:KEY_{i}"
[[providers.p{i}.models]]
id = "small-{i}"
roles = ["fast", "cheap"]
price_in = 0.1
price_out = 0.2
[[providers.p{i}.models]]
id = "large-{i}"
roles = ["quality"]
price_in = 1.0
price_out = 2.0
"""


def wide_bouquet(count: int) -> str:
    """A bouquet of `count` providers p0, p1, ... (WIDE_PROVIDER each)."""
    return "\n".join(WIDE_PROVIDER.format(i=i) for i in range(count))
