"""Response modes: which signals call for which mode, the hysteresis, and the operator's pin."""

from __future__ import annotations

from dataclasses import replace

import pytest

from aetherflow_tui.engine.config import ModesSpec
from aetherflow_tui.engine.modes import ModeController, ModeSignals, ResponseMode, target

HEALTHY = ModeSignals(has_local=True, apis=3, apis_up=3, logic_up=True, spent_pct=10.0,
                      cheapest_usd_per_mtok=0.3)
SPEC = ModesSpec()


@pytest.mark.parametrize(("change", "mode", "words"), [
    ({}, ResponseMode.BOUQUET, "3 of 3 API providers up"),
    ({"apis_up": 0}, ResponseMode.SURVIVAL, "all 3 API providers are down"),
    ({"apis": 0, "apis_up": 0}, ResponseMode.SURVIVAL, "no API provider has a usable"),
    ({"spent_pct": 99.0}, ResponseMode.SURVIVAL, "99% of today's budget spent (survival at 98%)"),
    ({"spent_pct": 85.0}, ResponseMode.HYBRID, "85% of today's budget spent (hybrid at 80%)"),
    ({"logic_up": False}, ResponseMode.HYBRID, "no API model for logic and QA is up"),
    ({"has_local": False, "apis_up": 0}, ResponseMode.BOUQUET, "no local model declared"),
])
def test_target_mode_and_its_reason(change, mode, words) -> None:
    got, why = target(SPEC, replace(HEALTHY, **change))
    assert got is mode
    assert words in why


def test_price_rise_calls_for_hybrid_only_when_a_ceiling_is_set() -> None:
    dear = replace(HEALTHY, cheapest_usd_per_mtok=12.0)
    assert target(SPEC, dear)[0] is ResponseMode.BOUQUET
    mode, why = target(ModesSpec(hybrid_above_usd_per_mtok=5.0), dear)
    assert mode is ResponseMode.HYBRID
    assert "$12.00/M tokens (hybrid above $5/M)" in why


def test_the_worst_reason_wins() -> None:
    mode, why = target(SPEC, replace(HEALTHY, apis_up=0, spent_pct=85.0, logic_up=False))
    assert mode is ResponseMode.SURVIVAL and "down" in why


def controller(**spec: object) -> ModeController:
    control = ModeController(ModesSpec(**spec), now=0.0)  # type: ignore[arg-type]
    assert control.update(HEALTHY, 0.0) is None  # the first reading is where we start
    assert control.mode is ResponseMode.BOUQUET
    return control


def test_a_worse_mode_is_entered_at_once_with_its_reason() -> None:
    control = controller()

    decision = control.update(replace(HEALTHY, apis_up=0), 1.0)

    assert decision is not None and decision.mode is ResponseMode.SURVIVAL
    assert "down" in decision.reason and not decision.pinned
    assert control.since == 1.0


def test_a_better_mode_waits_for_recover_s_of_good_signals() -> None:
    control = controller(recover_s=30)
    control.update(replace(HEALTHY, apis_up=0), 0.0)

    assert control.update(HEALTHY, 10.0) is None
    assert control.update(HEALTHY, 39.0) is None
    decision = control.update(HEALTHY, 40.0)

    assert decision is not None and decision.mode is ResponseMode.BOUQUET
    assert decision.reason.endswith("for 30 s")


def test_a_relapse_restarts_the_recovery_clock() -> None:
    control = controller(recover_s=30)
    control.update(replace(HEALTHY, apis_up=0), 0.0)
    control.update(HEALTHY, 10.0)
    control.update(replace(HEALTHY, apis_up=0), 20.0)  # down again: the clock resets

    assert control.update(HEALTHY, 45.0) is None
    assert control.update(HEALTHY, 75.0) is not None


def test_a_noisy_series_around_a_threshold_switches_at_most_twice() -> None:
    """Spend wobbling around hybrid_budget_pct every second: in, then no flapping back."""
    control = controller(recover_s=30)
    switches = []
    for second in range(120):
        spent = 79.5 if second % 2 else 80.5
        decision = control.update(replace(HEALTHY, spent_pct=spent), float(second))
        if decision is not None:
            switches.append(decision.mode)
    assert switches == [ResponseMode.HYBRID]


def test_an_operator_pin_holds_against_the_signals() -> None:
    control = controller()

    decision = control.pin(ResponseMode.SURVIVAL, 5.0)

    assert decision is not None and decision.pinned and decision.mode is ResponseMode.SURVIVAL
    assert control.update(HEALTHY, 6.0) is None
    assert control.mode is ResponseMode.SURVIVAL
    assert control.pin(None, 7.0) is None  # unpinned: the signals decide again
    assert control.update(HEALTHY, 8.0) is None  # BOUQUET is better: it must hold first
    assert control.update(HEALTHY, 38.0) is not None


def test_a_pin_in_the_config_starts_in_that_mode() -> None:
    control = ModeController(ModesSpec(pin="hybrid"), now=0.0)
    assert control.mode is ResponseMode.HYBRID and control.pinned is ResponseMode.HYBRID
    assert control.update(replace(HEALTHY, apis_up=0), 1.0) is None
