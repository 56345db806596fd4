"""The engine: the one owner of state and I/O. The cockpit and the CLI only call it.

Never imports textual (import-linter contracts in pyproject.toml, and
tests/unit/test_engine_boundary.py at run time). The house is described in engine.py.

The names below load on first use (PEP 562), so importing one module of the engine
(engine.config for `--help`, engine.plan for a plan check) does not import all of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .calls import CallOutcome
    from .engine import Engine, load_bouquet
    from .modes import ResponseMode
    from .router import Mode
    from .scheduler import PlanRun
    from .views import ModelView, ProviderView, SpendView

__all__ = ["CallOutcome", "Engine", "Mode", "ModelView", "PlanRun", "ProviderView",
           "ResponseMode", "SpendView", "load_bouquet"]

_HOMES = {"CallOutcome": "calls", "Engine": "engine", "load_bouquet": "engine",
          "ResponseMode": "modes", "Mode": "router", "PlanRun": "scheduler",
          "ModelView": "views", "ProviderView": "views", "SpendView": "views"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)
