"""The plan shown in the README is the example shipped in examples/, and it is valid."""

from __future__ import annotations

import json
import re
from pathlib import Path

from aetherflow_tui.engine import Engine, config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "plans" / "billing" / "plan.json"


def test_the_readme_plan_is_the_example_and_checks_against_the_default_bouquet(tmp_path):
    readme = (REPO / "README.md").read_text("utf-8")
    section = readme[readme.index("## Plan format"):]
    shown = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    assert shown == json.loads(EXAMPLE.read_text("utf-8")), \
        "README's plan and examples/plans/billing/plan.json differ: keep them the same"
    plan = Engine(config.load(None), tmp_path).load_plan(EXAMPLE)
    assert [s.id for s in plan.steps] == ["survey", "api", "schema", "review"]
