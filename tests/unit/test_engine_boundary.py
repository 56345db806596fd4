"""The engine never imports the UI toolkit, and the CLI starts without heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

ENGINE_MODULES = [
    "aetherflow_tui.engine",
    "aetherflow_tui.engine.engine",
    "aetherflow_tui.engine.context",
    "aetherflow_tui.engine.calls",
    "aetherflow_tui.engine.credentials",
    "aetherflow_tui.engine.controls",
    "aetherflow_tui.engine.local_stack",
    "aetherflow_tui.engine.regulation",
    "aetherflow_tui.engine.runs",
    "aetherflow_tui.engine.market",
    "aetherflow_tui.engine.views",
    "aetherflow_tui.engine.bus",
    "aetherflow_tui.engine.config",
    "aetherflow_tui.engine.events",
    "aetherflow_tui.engine.keys",
    "aetherflow_tui.engine.ledger",
    "aetherflow_tui.engine.providers.openai_compat",
    "aetherflow_tui.engine.store",
    "aetherflow_tui.engine.canary",
    "aetherflow_tui.engine.health",
    "aetherflow_tui.engine.metrics",
    "aetherflow_tui.engine.probes",
    "aetherflow_tui.engine.regulator",
    "aetherflow_tui.engine.statuspage",
    "aetherflow_tui.engine.vigilance",
    "aetherflow_tui.engine.fetch",
    "aetherflow_tui.engine.veille.classifier",
    "aetherflow_tui.engine.veille.extract",
    "aetherflow_tui.engine.veille.matrix",
    "aetherflow_tui.engine.veille.opportunity",
    "aetherflow_tui.engine.veille.sources",
    "aetherflow_tui.engine.veille.watch",
]
HEAVY = ["textual", "llama_cpp", "onnxruntime", "tokenizers", "genai_prices", "ecologits",
         "rich", "httpx", "aiohttp", "aiosqlite", "pydantic", "feedparser", "numpy"]


def _loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=REPO_ROOT).stdout
    return {name.split(".")[0] for name in json.loads(out.splitlines()[-1])}


def test_the_engine_does_not_load_textual():
    imports = "\n".join(f"import {m}" for m in ENGINE_MODULES)
    loaded = _loaded_after(imports)
    assert "aetherflow_tui" in loaded  # the probe really imported the engine
    assert "textual" not in loaded


def test_the_veille_loads_its_model_libraries_only_when_it_classifies():
    loaded = _loaded_after("\n".join(f"import {m}" for m in ENGINE_MODULES))
    assert not loaded & {"onnxruntime", "tokenizers", "numpy", "feedparser"}, sorted(
        loaded & {"onnxruntime", "tokenizers", "numpy", "feedparser"})


def test_the_cli_module_loads_no_heavy_library():
    loaded = _loaded_after("import aetherflow_tui.cli")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


# What the cockpit's first frame does not need: it starts after that frame (the veille,
# the canaries and status pages, the local models) or is read once it is up (prices).
AFTER_FIRST_FRAME = ["llama_cpp", "onnxruntime", "tokenizers", "numpy", "feedparser",
                     "genai_prices", "ecologits", "httpx", "aiohttp", "prometheus_client"]
AFTER_FIRST_FRAME_MODULES = [
    "aetherflow_tui.engine.veille.extract", "aetherflow_tui.engine.veille.classifier",
    "aetherflow_tui.engine.veille.watch", "aetherflow_tui.engine.veille.sources",
    "aetherflow_tui.engine.veille.item", "aetherflow_tui.engine.statuspage",
    "aetherflow_tui.engine.providers.llama_cpp", "aetherflow_tui.engine.metrics",
]


def test_the_cockpit_module_loads_nothing_its_first_frame_does_not_need():
    probe = ("import aetherflow_tui.app\nimport sys, json\n"
             "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=REPO_ROOT).stdout
    modules = set(json.loads(out.splitlines()[-1]))
    assert "textual" in modules  # the probe really imported the cockpit
    top = {name.split(".")[0] for name in modules}
    assert not top & set(AFTER_FIRST_FRAME), sorted(top & set(AFTER_FIRST_FRAME))
    assert not modules & set(AFTER_FIRST_FRAME_MODULES), sorted(
        modules & set(AFTER_FIRST_FRAME_MODULES))


def test_help_runs_without_heavy_libraries():
    code = ("import sys\nfrom aetherflow_tui.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n")
    loaded = _loaded_after(code)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
