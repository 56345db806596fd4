"""Bouquets and plans for tests and benchmarks: the one bouquet builder (TOML text from
keyword arguments), keyless providers on scripted servers, plan files, and which step a
request recorded by a ScriptedServer was made for."""

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

# -- the bouquet builder: TOML text from keyword arguments ---------------------------------
#
# tables(), model_entry(), provider_table() and bouquet_text() write what they are given and
# nothing else (a value of None is left out, so the config's own default applies); provider()
# and bouquet() are the scheduler tests' presets on top of them (keyless providers in FRA,
# every role, fast retries, a budget that does not get in the way).


def _value(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    elif isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)  # JSON's strings, numbers, booleans and arrays are TOML's


def _table(name: str, fields: dict[str, Any], *, array: bool = False) -> list[str]:
    """[name] (or [[name]]) and its keys: scalars first, then sub-tables and arrays of them
    (a table of sub-tables alone goes without its own header: TOML implies it)."""
    lines: list[str] = []
    nested: list[str] = []
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, dict):
            nested += _table(f"{name}.{key}", value)
        elif isinstance(value, list | tuple) and value and all(
                isinstance(item, dict) for item in value):
            for item in value:
                nested += _table(f"{name}.{key}", item, array=True)
        else:
            lines.append(f"{key} = {_value(value)}")
    if array or lines or not nested:
        lines.insert(0, f"[[{name}]]" if array else f"[{name}]")
    return lines + nested


def tables(**sections: dict[str, Any] | None) -> str:
    """TOML tables, one per keyword: tables(routing={"backoff_s": 0.01}, veille={...})."""
    return "".join("\n".join(_table(name, fields)) + "\n"
                   for name, fields in sections.items() if fields is not None)


def model_entry(model_id: str = "echo", **fields: Any) -> dict[str, Any]:
    """One model of a provider: its id and any other keys (roles, price_in, path...)."""
    return {"id": model_id, **fields}


def provider_table(pid: str, *models: str | dict[str, Any], kind: str = "openai",
                   **settings: Any) -> str:
    """One provider as given: kind, its settings (base_url, key, zone, max_concurrency...),
    then its models (an id, or a model_entry()); nothing else is implied."""
    listed = [model_entry(m) if isinstance(m, str) else m for m in models]
    return tables(**{f"providers.{pid}": {"kind": kind, **settings, "models": listed}})


def bouquet_text(*providers: str, **sections: dict[str, Any] | None) -> str:
    """The sections (budget=, routing=, modes=, regulator=, veille=...), then the providers
    (provider_table() or provider() text), as a bouquet file holds them."""
    return tables(**sections) + "\n".join(providers)


def provider(pid: str, url: str, *models: str, price_in: float = 0.1, price_out: float = 0.2,
             roles: tuple[str, ...] = ALL_ROLES, **settings: Any) -> str:
    """One keyless provider in FRA, its models (default: echo) with every role and 8B
    parameters; `settings` are extra provider keys (rpm, json_mode...) or replace those."""
    priced = {"roles": roles, "price_in": price_in, "price_out": price_out, "params_b": 8}
    return provider_table(pid, *(model_entry(m, **priced) for m in models or ("echo",)),
                          **{"base_url": url, "key": "none", "zone": "FRA", **settings})


def bouquet(*providers: str, daily_usd: float = 10.0, max_usd_per_request: float = 1.0,
            **routing: Any) -> str:
    """A bouquet of the given providers; fast retries unless `routing` says otherwise."""
    return bouquet_text(*providers, budget={"daily_usd": daily_usd,
                                            "max_usd_per_1k_tokens": 1.0,
                                            "max_usd_per_request": max_usd_per_request},
                        routing={"backoff_s": 0.01, **routing})


def scripted_bouquet(url: str, *providers: str, key: str = "keyring",
                     **sections: dict[str, Any] | None) -> str:
    """A bouquet with one provider, `scripted`, served by a ScriptedServer (its key in the
    keyring unless `key` says otherwise), then `providers`; $1 a day unless budget= says."""
    scripted = provider_table(
        "scripted",
        model_entry("echo", roles=["chat", "cheap"], price_in=0.5, price_out=1.5, params_b=8),
        model_entry("status:503", roles=["fast"], price_in=0.5, price_out=1.5),
        base_url=url, key=key, zone="FRA")
    return bouquet_text(scripted, *providers, **{"budget": {"daily_usd": 1.0}, **sections})


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
