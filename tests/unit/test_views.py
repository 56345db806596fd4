"""The read models the cockpit gets from the facade, instead of the live parts behind it."""

from __future__ import annotations

from pathlib import Path

from aetherflow_tui.engine import Engine, config
from aetherflow_tui.engine.modes import ResponseMode
from aetherflow_tui.engine.views import ControlView, SystemView


def test_the_control_view_says_hold_throttle_caps_mode_and_unclosed_circuits(tmp_path: Path):
    engine = Engine(config.load(None), tmp_path / "home")
    before = engine.control_view()
    assert isinstance(before, ControlView)
    assert (before.held, before.manual_cap, before.in_flight, before.pinned) == (
        None, None, 0, None)
    assert before.unclosed_circuits == ()
    assert before.concurrency == engine.bouquet.routing.max_concurrency

    engine.emergency_throttle(2)
    engine.ctx.dispatch.held = "drill"
    engine.pin_mode(ResponseMode.SURVIVAL)
    engine.ctx.health.circuit("groq").trip()
    now = engine.control_view()
    assert (now.held, now.manual_cap, now.concurrency) == ("drill", 2, 2)
    assert now.mode is ResponseMode.SURVIVAL and now.pinned is ResponseMode.SURVIVAL
    assert now.mode_reason == engine.ctx.modes.reason
    assert now.unclosed_circuits == ("groq",)
    assert before.manual_cap is None  # a view is a snapshot: it never changes under you


def test_the_system_view_without_the_regulator(tmp_path: Path):
    engine = Engine(config.load(None), tmp_path / "home")
    engine.ctx.dispatch.held = "drill"
    assert engine.system_view() == SystemView(False, None, None, None, (), "drill")
