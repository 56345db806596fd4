"""One palette for the cockpit and the CLI: every state has its colour, and a Rich style."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from rich.style import Style

from aetherflow_tui import palette
from aetherflow_tui.engine.health import Light
from aetherflow_tui.engine.keys import KeyState
from aetherflow_tui.engine.progress import RunStatus, StepState
from aetherflow_tui.engine.regulator import SystemState
from aetherflow_tui.engine.veille.classifier import LABELS
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(("colours", "states"), [
    (palette.STEP, set(StepState)),
    (palette.SYSTEM, set(SystemState)),
    (palette.SYSTEM_BADGE, set(SystemState)),
    (palette.LIGHT, set(Light)),
    (palette.KEY, set(KeyState)),
    (palette.VEILLE_LABEL, set(LABELS)),
    (palette.VEILLE_BADGE, set(LABELS)),
])
def test_every_state_has_a_colour(colours, states):
    assert set(colours) == states
    for value in colours.values():
        Style.parse(value[1] if isinstance(value, tuple) else value)


def test_an_enum_member_finds_its_colour_as_its_value_does():
    assert palette.STEP[StepState.SKIPPED] == palette.STEP["skipped"] == "dark_orange"
    assert palette.run_style(RunStatus.DONE) == "bold green"
    assert palette.run_style(RunStatus.BUDGET) == "bold red"


def test_the_palette_loads_neither_rich_nor_textual():
    probe = "import aetherflow_tui.palette, sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=REPO_ROOT).stdout
    top = {name.split(".")[0] for name in json.loads(out)}
    assert not top & {"rich", "textual"}, sorted(top & {"rich", "textual"})
