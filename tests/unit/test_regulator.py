"""System consciousness: thresholds, smoothing, hysteresis, confidence and the actions."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import NamedTuple

import pytest

from aetherflow_tui.engine.config import (
    DEFAULT_THRESHOLDS,
    REGULATOR_LEVELS,
    REGULATOR_METRICS,
    LevelSpec,
    RegulatorSpec,
)
from aetherflow_tui.engine.regulator import (
    FULL_COVERAGE,
    MACHINE_METRICS,
    MIN_CPU_SPAN_S,
    Actions,
    Judgement,
    Regulator,
    Sampler,
    SystemSample,
    SystemState,
    actions_for,
    cpu_temperature,
)

OPTIMAL, STRESSED = SystemState.OPTIMAL, SystemState.STRESSED
DEGRADED, CRITICAL = SystemState.DEGRADED, SystemState.CRITICAL
# Quiet readings for the metrics a test does not set: far from every threshold.
CALM = {"cpu_pct": 10.0, "memory_pct": 40.0, "swap_pct": 0.0, "loop_lag_ms": 2.0}


def sample(ts: float, **values: float | bool | None) -> SystemSample:
    return SystemSample(ts=ts, **{**CALM, **values})


def feed(regulator: Regulator, series: Iterable[tuple[float, dict]]) -> list[Judgement]:
    return [regulator.observe(sample(ts, **values)) for ts, values in series]


def transitions(judgements: list[Judgement]) -> int:
    return sum(j.changed for j in judgements)


def instant(**kwargs) -> RegulatorSpec:
    """No smoothing, so one sample is judged on its own."""
    return RegulatorSpec(window=1, **kwargs)


def test_states_have_rising_severity() -> None:
    assert [s.severity for s in SystemState] == [0, 1, 2, 3]
    assert [str(s) for s in SystemState] == ["optimal", "stressed", "degraded", "critical"]


# --- exact thresholds, every metric and every level ---------------------------------------

RISING = [m for m in REGULATOR_METRICS if m != "battery_pct"]
LEVEL_CASES = [(m, level) for m in RISING for level in REGULATOR_LEVELS]
BELOW = {"stressed": OPTIMAL, "degraded": STRESSED, "critical": DEGRADED}


@pytest.mark.parametrize(("metric", "level"), LEVEL_CASES)
def test_a_metric_at_its_threshold_calls_for_that_state(metric: str, level: str) -> None:
    threshold = DEFAULT_THRESHOLDS[level][metric]
    judgement = Regulator(instant()).observe(sample(0.0, **{metric: threshold}))
    assert judgement.state is SystemState(level)
    assert judgement.driver == metric


@pytest.mark.parametrize(("metric", "level"), LEVEL_CASES)
def test_a_metric_just_below_its_threshold_does_not(metric: str, level: str) -> None:
    threshold = DEFAULT_THRESHOLDS[level][metric]
    judgement = Regulator(instant()).observe(sample(0.0, **{metric: threshold - 0.01}))
    assert judgement.state is BELOW[level]


@pytest.mark.parametrize("level", REGULATOR_LEVELS)
def test_battery_counts_at_or_below_its_threshold(level: str) -> None:
    threshold = DEFAULT_THRESHOLDS[level]["battery_pct"]
    at = Regulator(instant()).observe(sample(0.0, battery_pct=threshold, on_battery=True))
    assert at.state is SystemState(level)
    assert at.driver == "battery_pct"
    above = Regulator(instant()).observe(
        sample(0.0, battery_pct=threshold + 0.01, on_battery=True))
    assert above.state is BELOW[level]


@pytest.mark.parametrize("on_battery", [False, None])
def test_battery_does_not_count_on_mains_or_when_unknown(on_battery: bool | None) -> None:
    judgement = Regulator(instant()).observe(sample(0.0, battery_pct=1.0, on_battery=on_battery))
    assert judgement.state is OPTIMAL
    assert "battery_pct" not in judgement.metrics


def test_plugging_in_the_charger_drops_the_battery_at_once() -> None:
    regulator = Regulator(RegulatorSpec(window=5, hold_s=0))
    feed(regulator, [(t, {"battery_pct": 4.0, "on_battery": True}) for t in range(5)])
    assert regulator.state is CRITICAL
    judgement = regulator.observe(sample(5, battery_pct=4.0, on_battery=False))
    assert "battery_pct" not in judgement.metrics
    assert judgement.state is OPTIMAL


def test_operator_thresholds_replace_the_defaults() -> None:
    spec = instant(stressed=LevelSpec(cpu_pct=40), critical=LevelSpec(memory_pct=99))
    assert Regulator(spec).observe(sample(0, cpu_pct=40)).state is STRESSED
    assert Regulator(spec).observe(sample(0, memory_pct=97)).state is DEGRADED
    assert Regulator(spec).observe(sample(0, memory_pct=99)).state is CRITICAL


def test_the_worst_metric_wins_and_is_the_driver() -> None:
    judgement = Regulator(instant()).observe(
        sample(0, cpu_pct=80, memory_pct=93, loop_lag_ms=150))
    assert judgement.state is DEGRADED
    assert judgement.driver == "memory_pct"


def test_at_the_same_level_the_metric_furthest_past_its_threshold_drives() -> None:
    # cpu 80 is 6.7% past 75; loop lag 150 ms is 50% past 100 ms.
    judgement = Regulator(instant()).observe(sample(0, cpu_pct=80, loop_lag_ms=150))
    assert judgement.state is STRESSED
    assert judgement.driver == "loop_lag_ms"


# --- smoothing -----------------------------------------------------------------------------


def test_the_state_follows_the_mean_of_the_window() -> None:
    regulator = Regulator(RegulatorSpec(window=5))
    judgements = feed(regulator, [(t, {"cpu_pct": 70}) for t in range(4)])
    spike = regulator.observe(sample(4, cpu_pct=90))
    assert spike.metrics["cpu_pct"] == pytest.approx(74.0)  # (4 * 70 + 90) / 5
    assert spike.state is OPTIMAL  # one spike is not stress
    judgement = regulator.observe(sample(5, cpu_pct=80))
    assert judgement.metrics["cpu_pct"] == pytest.approx(76.0)  # the first 70 left
    assert judgement.state is STRESSED
    assert transitions([*judgements, spike, judgement]) == 1


def test_a_metric_missing_from_a_sample_is_averaged_over_the_samples_that_have_it() -> None:
    regulator = Regulator(RegulatorSpec(window=4))
    regulator.observe(SystemSample(0, cpu_pct=20, loop_lag_ms=10))
    regulator.observe(SystemSample(1, cpu_pct=40))
    judgement = regulator.observe(SystemSample(2, cpu_pct=60, loop_lag_ms=30))
    assert judgement.metrics == {"cpu_pct": pytest.approx(40.0),
                                 "loop_lag_ms": pytest.approx(20.0)}


def test_a_metric_absent_for_a_whole_window_is_no_longer_judged() -> None:
    regulator = Regulator(RegulatorSpec(window=2, hold_s=0))
    regulator.observe(SystemSample(0, cpu_pct=20, loop_lag_ms=2000))
    regulator.observe(SystemSample(1, cpu_pct=20, loop_lag_ms=2000))
    assert regulator.state is CRITICAL
    regulator.observe(SystemSample(2, cpu_pct=20))
    judgement = regulator.observe(SystemSample(3, cpu_pct=20))
    assert "loop_lag_ms" not in judgement.metrics
    assert judgement.state is OPTIMAL


# --- start-up: the window must fill before a state is decided -----------------------------


def test_no_state_is_decided_before_the_window_is_full() -> None:
    # A process starting under a CPU spike (or psutil's first, meaningless reading): the
    # first samples only fill the window.
    regulator = Regulator(RegulatorSpec(window=5))
    warming = feed(regulator, [(t, {"cpu_pct": 100}) for t in range(4)])
    assert {(j.state, j.warming, j.confidence) for j in warming} == {(OPTIMAL, True, 0.0)}
    assert transitions(warming) == 0
    assert warming[0].reasoning == (
        "Warming up: 1 of the 5 samples a judgement needs; no state decided yet.")
    assert not regulator.ready
    decided = regulator.observe(sample(4, cpu_pct=100))
    assert regulator.ready and not decided.warming
    assert (decided.state, decided.changed) == (CRITICAL, True)
    assert "5-sample mean" in decided.reasoning


def test_one_startup_spike_in_a_full_window_decides_nothing() -> None:
    regulator = Regulator(RegulatorSpec(window=5))
    judgements = feed(regulator, [(0, {"cpu_pct": 100})]
                      + [(t, {"cpu_pct": 2}) for t in range(1, 5)])
    assert judgements[-1].state is OPTIMAL and transitions(judgements) == 0


def test_confidence_counts_the_whole_window_as_evidence() -> None:
    # A lag read once in a window of 5 is one fifth of the evidence, not all of it.
    regulator = Regulator(RegulatorSpec(window=5))
    feed(regulator, [(t, {"loop_lag_ms": None}) for t in range(4)])
    judgement = regulator.observe(sample(4, loop_lag_ms=2000))
    assert judgement.state is CRITICAL and judgement.driver == "loop_lag_ms"
    assert judgement.confidence == pytest.approx(1 / 5)


def test_the_machine_regulator_does_not_judge_the_error_rate() -> None:
    machine = Regulator(instant(), MACHINE_METRICS)
    judgement = machine.observe(sample(0, error_rate_pct=100, loop_lag_ms=150))
    assert "error_rate_pct" not in judgement.metrics
    assert (judgement.state, judgement.driver) == (STRESSED, "loop_lag_ms")
    assert "error_rate_pct" not in MACHINE_METRICS
    assert set(MACHINE_METRICS) | {"error_rate_pct"} == set(REGULATOR_METRICS)


def test_local_work_is_not_throttled_for_its_own_cpu() -> None:
    # The machine at 100% CPU, 95 points of it this process (the local model generating):
    # what the rest of the machine uses is 5%, and that is what local work follows.
    machine = Regulator(RegulatorSpec(window=3), MACHINE_METRICS)
    judged = [machine.observe(sample(t, cpu_pct=100, own_cpu_pct=95).others())
              for t in range(3)]  # as vigilance feeds it
    assert judged[-1].state is OPTIMAL
    assert judged[-1].metrics["cpu_pct"] == pytest.approx(5.0)
    loaded = SystemSample(0, cpu_pct=100, own_cpu_pct=10)  # others' load: it counts
    assert loaded.others().cpu_pct == 90
    assert SystemSample(0, cpu_pct=50).others().cpu_pct == 50  # own CPU unknown
    assert Regulator(instant()).observe(sample(0, cpu_pct=100, own_cpu_pct=95)).state is (
        CRITICAL)  # the displayed state still says how busy the machine is


# --- worse at once, better after the hold and out of the deadband --------------------------


def test_a_worse_state_is_entered_at_once() -> None:
    regulator = Regulator(instant(hold_s=15))
    assert regulator.observe(sample(0, cpu_pct=80)).state is STRESSED
    worse = regulator.observe(sample(0.5, cpu_pct=99))
    assert (worse.state, worse.previous, worse.changed) == (CRITICAL, STRESSED, True)
    assert regulator.since == 0.5


def test_a_worse_reading_while_recovering_is_entered_at_once_and_resets_the_hold() -> None:
    regulator = Regulator(instant(hold_s=15))
    feed(regulator, [(0, {"cpu_pct": 80}), (1, {"cpu_pct": 10}), (10, {"cpu_pct": 10})])
    assert regulator.observe(sample(11, cpu_pct=95)).state is DEGRADED
    feed(regulator, [(12, {"cpu_pct": 10})])
    assert regulator.observe(sample(26.99, cpu_pct=10)).state is DEGRADED
    assert regulator.observe(sample(27, cpu_pct=10)).state is OPTIMAL


def test_a_better_state_waits_exactly_hold_s() -> None:
    regulator = Regulator(instant(hold_s=15))
    assert regulator.observe(sample(100, cpu_pct=80)).state is STRESSED
    first_clear = regulator.observe(sample(101, cpu_pct=50))
    assert first_clear.state is STRESSED
    assert first_clear.driver is None  # only the hold timer keeps it
    assert "0 s of the 15 s needed" in first_clear.reasoning
    assert regulator.observe(sample(115.99, cpu_pct=50)).state is STRESSED
    back = regulator.observe(sample(116, cpu_pct=50))
    assert (back.state, back.previous, back.changed) == (OPTIMAL, STRESSED, True)
    assert regulator.since == 116
    assert back.reasoning.startswith(
        "All metrics under the STRESSED thresholds less 10% for 15 s: back to OPTIMAL")


def test_one_reading_back_in_the_deadband_restarts_the_hold() -> None:
    regulator = Regulator(instant(hold_s=15))
    feed(regulator, [(0, {"cpu_pct": 80}), (1, {"cpu_pct": 50})])
    feed(regulator, [(10, {"cpu_pct": 70})])  # under 75, but not under 67.5
    feed(regulator, [(11, {"cpu_pct": 50})])
    assert regulator.observe(sample(25.9, cpu_pct=50)).state is STRESSED
    assert regulator.observe(sample(26, cpu_pct=50)).state is OPTIMAL


def test_with_no_hold_the_better_state_comes_on_the_first_clear_reading() -> None:
    regulator = Regulator(instant(hold_s=0))
    feed(regulator, [(0, {"cpu_pct": 80})])
    assert regulator.observe(sample(1, cpu_pct=67.4)).state is OPTIMAL


def test_the_deadband_keeps_a_state_however_long_the_metric_stays_in_it() -> None:
    regulator = Regulator(instant(hold_s=15, deadband_pct=10))
    feed(regulator, [(0, {"cpu_pct": 75})])
    stay = feed(regulator, [(t, {"cpu_pct": 67.5}) for t in range(1, 1000)])
    assert {j.state for j in stay} == {STRESSED}
    assert stay[-1].driver == "cpu_pct"
    assert "not yet under 67.5%" in stay[-1].reasoning
    assert regulator.observe(sample(1000, cpu_pct=67.49)).state is STRESSED  # hold starts
    assert regulator.observe(sample(1015, cpu_pct=67.49)).state is OPTIMAL


def test_the_battery_deadband_is_above_its_threshold() -> None:
    regulator = Regulator(instant(hold_s=0, deadband_pct=10))
    on_battery = {"on_battery": True}
    feed(regulator, [(0, {"battery_pct": 30, **on_battery})])
    assert regulator.state is STRESSED
    assert regulator.observe(sample(1, battery_pct=33, **on_battery)).state is STRESSED
    assert regulator.observe(sample(2, battery_pct=33.01, **on_battery)).state is OPTIMAL


def test_recovery_stops_at_the_state_whose_deadband_a_metric_is_still_in() -> None:
    regulator = Regulator(instant(hold_s=5))
    feed(regulator, [(0, {"cpu_pct": 99})])
    # 70 is under STRESSED's 75 but inside its deadband (67.5): CRITICAL -> STRESSED, not
    # OPTIMAL, else a wobble up to 75 would bring STRESSED straight back.
    judgements = feed(regulator, [(t, {"cpu_pct": 70}) for t in range(1, 7)])
    assert [j.state for j in judgements] == [CRITICAL] * 5 + [STRESSED]
    assert judgements[-1].driver == "cpu_pct"
    assert "down to STRESSED, since CPU 70% (latest sample) is not yet under 67.5%" in (
        judgements[-1].reasoning)


def test_force_skips_the_hold() -> None:
    regulator = Regulator(instant(hold_s=15))
    feed(regulator, [(0, {"cpu_pct": 80})])
    forced = regulator.force(sample(1, cpu_pct=50))
    assert (forced.state, forced.changed) == (OPTIMAL, True)
    assert forced.reasoning.startswith("Forced re-evaluation: ")


def test_force_also_skips_the_deadband_but_not_the_thresholds() -> None:
    regulator = Regulator(instant(hold_s=15))
    feed(regulator, [(0, {"cpu_pct": 99})])
    assert regulator.force(sample(1, cpu_pct=70)).state is OPTIMAL
    assert regulator.force(sample(2, cpu_pct=91)).state is DEGRADED


def test_force_still_smooths() -> None:
    regulator = Regulator(RegulatorSpec(window=3, hold_s=15))
    feed(regulator, [(0, {"cpu_pct": 95}), (1, {"cpu_pct": 95})])
    forced = regulator.force(sample(2, cpu_pct=40))  # alone: OPTIMAL; mean 76.7: STRESSED
    assert forced.metrics["cpu_pct"] == pytest.approx(230 / 3)
    assert forced.state is STRESSED


# --- hysteresis on noisy series ------------------------------------------------------------


def noisy(values: Iterable[float]) -> list[tuple[float, dict]]:
    return [(float(t), {"cpu_pct": v}) for t, v in enumerate(values)]


ALTERNATING = [72, 78, 74, 77, 73, 76, 75, 74] * 40


@pytest.mark.parametrize("window", [1, 5])
def test_a_series_alternating_around_a_threshold_moves_at_most_once(window: int) -> None:
    judgements = feed(Regulator(RegulatorSpec(window=window)), noisy(ALTERNATING))
    assert transitions(judgements) <= 1


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("window", [1, 5])
def test_random_noise_around_a_threshold_moves_at_most_once(seed: int, window: int) -> None:
    rng = random.Random(seed)
    series = noisy(75 + rng.uniform(-3, 3) for _ in range(600))
    judgements = feed(Regulator(RegulatorSpec(window=window)), series)
    assert transitions(judgements) <= 1


def test_without_deadband_and_hold_the_same_noise_flaps() -> None:
    # The guard above is what holds the state, not the series being tame.
    judgements = feed(Regulator(RegulatorSpec(window=1, hold_s=0, deadband_pct=0)),
                      noisy(ALTERNATING))
    assert transitions(judgements) > 100


# --- confidence ----------------------------------------------------------------------------


def test_confidence_of_a_state_is_the_share_of_raw_samples_past_its_threshold() -> None:
    regulator = Regulator(RegulatorSpec(window=5))
    judgements = feed(regulator, noisy([80, 80, 70, 80, 70]))  # mean 76: STRESSED
    last = judgements[-1]
    assert last.state is STRESSED
    assert len(last.metrics) >= FULL_COVERAGE
    assert last.confidence == pytest.approx(3 / 5)


def test_confidence_is_scaled_down_when_few_metrics_are_known() -> None:
    regulator = Regulator(RegulatorSpec(window=5))
    for t, cpu in enumerate([80, 80, 70, 80, 70]):
        last = regulator.observe(SystemSample(t, cpu_pct=cpu))
    assert last.state is STRESSED
    assert last.confidence == pytest.approx(3 / 5 * 1 / FULL_COVERAGE)


def test_confidence_of_optimal_is_the_share_of_samples_under_every_stressed_threshold() -> None:
    regulator = Regulator(RegulatorSpec(window=5))
    series = [(t, {}) for t in range(4)] + [(4, {"loop_lag_ms": 300}), (5, {"cpu_pct": 76})]
    last = feed(regulator, series)[-1]
    assert last.state is OPTIMAL  # lag mean 61.6 ms, cpu mean 23.2%
    assert last.confidence == pytest.approx(3 / 5)


def test_confidence_in_the_deadband_counts_samples_past_the_exit_line() -> None:
    regulator = Regulator(RegulatorSpec(window=4, hold_s=15))
    feed(regulator, noisy([90, 90, 90, 90]))
    judgements = feed(regulator, [(t, {"cpu_pct": 80}) for t in range(4, 7)])
    # Means 87.5, 85, 82.5: under DEGRADED's 90 but not under its exit line, 81.
    assert {(j.state, j.driver) for j in judgements} == {(DEGRADED, "cpu_pct")}
    assert [j.confidence for j in judgements] == pytest.approx([3 / 4, 2 / 4, 1 / 4])


def test_confidence_while_the_hold_runs_falls_as_evidence_to_leave_builds() -> None:
    regulator = Regulator(RegulatorSpec(window=4, hold_s=100))
    feed(regulator, noisy([90, 90, 90, 90]))
    confidences = [j.confidence for j in feed(regulator, [(t, {"cpu_pct": 10})
                                                          for t in range(4, 8)])]
    assert regulator.state is DEGRADED
    assert confidences == pytest.approx([3 / 4, 2 / 4, 1 / 4, 0.0])


def test_confidence_stays_between_zero_and_one() -> None:
    rng = random.Random(7)
    regulator = Regulator(RegulatorSpec(window=5, hold_s=3))
    for t in range(2000):
        values = {m: rng.uniform(0, 120) for m in REGULATOR_METRICS if rng.random() < 0.7}
        if "loop_lag_ms" in values:
            values["loop_lag_ms"] *= 10
        values["on_battery"] = rng.random() < 0.5
        judgement = (regulator.force if t % 97 == 0 else regulator.observe)(
            SystemSample(t, **values))
        assert 0.0 <= judgement.confidence <= 1.0


def test_with_no_metric_at_all_the_regulator_says_so() -> None:
    judgement = Regulator(instant()).observe(SystemSample(0))
    assert judgement.state is OPTIMAL
    assert judgement.confidence == 0.0
    assert judgement.reasoning == "No metric could be read: assuming OPTIMAL."


# --- reasoning -----------------------------------------------------------------------------


def test_reasoning_names_the_driving_metric_its_value_and_the_threshold() -> None:
    regulator = Regulator(RegulatorSpec(window=5))
    judgements = feed(regulator, [(t, {"cpu_pct": 93, "memory_pct": 41, "loop_lag_ms": 3})
                                  for t in range(5)])
    assert judgements[-1].reasoning == (
        "CPU 93% (5-sample mean) is above the DEGRADED threshold of 90%; memory 41%, "
        "event-loop lag 3 ms, swap 0%.")


@pytest.mark.parametrize(("values", "words"), [
    ({"memory_pct": 97}, "Memory 97% (latest sample) is at the CRITICAL threshold of 97%"),
    ({"loop_lag_ms": 350}, "Event-loop lag 350 ms (latest sample) is above the DEGRADED "
                           "threshold of 300 ms"),
    ({"temperature_c": 81}, "CPU temperature 81 °C (latest sample) is above the STRESSED "
                            "threshold of 80 °C"),
    ({"error_rate_pct": 12}, "Error rate 12% (latest sample) is above the STRESSED "
                             "threshold of 10%"),
    ({"battery_pct": 4, "on_battery": True}, "Battery 4% (latest sample) is below the "
                                             "CRITICAL threshold of 5%"),
    ({"cpu_pct": 74.996}, "All metrics under the STRESSED thresholds: CPU 74.996%"),
    ({"cpu_pct": 75.004}, "CPU 75.004% (latest sample) is above the STRESSED threshold"),
])
def test_reasoning_in_the_operators_words(values: dict, words: str) -> None:
    judgement = Regulator(instant()).observe(sample(0, **values))
    assert words in judgement.reasoning


def test_a_judgement_serialises_to_json() -> None:
    judgement = Regulator(instant()).observe(sample(0, cpu_pct=80))
    data = json.loads(json.dumps(judgement.to_dict()))
    assert data["state"] == "stressed" and data["driver"] == "cpu_pct"
    assert data["metrics"]["cpu_pct"] == 80


# --- samples and the sampler ---------------------------------------------------------------


def test_sample_metrics_use_the_config_names_and_skip_what_is_missing() -> None:
    full = SystemSample(ts=1, cpu_pct=5, load_per_core=0.3, memory_pct=6, swap_pct=7,
                        temperature_c=50, battery_pct=80, on_battery=True, loop_lag_ms=2,
                        error_rate_pct=1, latency_p50_s=0.4)
    assert set(full.metrics()) == set(REGULATOR_METRICS)
    assert SystemSample(ts=1, cpu_pct=5).metrics() == {"cpu_pct": 5.0}
    assert "battery_pct" not in SystemSample(ts=1, battery_pct=80, on_battery=False).metrics()
    assert json.loads(json.dumps(full.to_dict()))["latency_p50_s"] == 0.4


class Reading(NamedTuple):
    """psutil's shwtemp (its module path is private and moves between versions)."""

    label: str
    current: float
    high: float | None
    critical: float | None


def test_cpu_temperature_takes_the_hottest_cpu_sensor_only() -> None:
    sensors = {
        "coretemp": [Reading("Package id 0", 61.0, 100.0, 100.0),
                     Reading("Core 0", 64.0, 100.0, 100.0)],
        "nvme": [Reading("Composite", 70.0, 80.0, 85.0)],  # the disk, not the CPU
        "k10temp": [Reading("Tctl", 58.5, None, None)],
    }
    assert cpu_temperature(sensors) == 64.0
    assert cpu_temperature({"nvme": [Reading("Composite", 70.0, 80.0, 85.0)]}) is None
    assert cpu_temperature({}) is None
    assert cpu_temperature({"acpitz": [Reading("", 47.0, None, None)]}) == 47.0


def test_the_sampler_reads_this_machine() -> None:
    sampler = Sampler()
    time.sleep(MIN_CPU_SPAN_S)  # the CPU reading needs that span since the priming call
    got = sampler.sample(12.5, loop_lag_ms=4.0, error_rate_pct=0.0, latency_p50_s=0.8)
    assert got.ts == 12.5
    assert got.cpu_pct is not None and 0.0 <= got.cpu_pct <= 100.0
    assert got.memory_pct is not None and 0.0 < got.memory_pct <= 100.0
    assert got.swap_pct is not None and 0.0 <= got.swap_pct <= 100.0
    assert got.load_per_core is not None and got.load_per_core >= 0.0
    assert got.own_cpu_pct is not None and 0.0 <= got.own_cpu_pct <= got.cpu_pct
    assert (got.loop_lag_ms, got.error_rate_pct, got.latency_p50_s) == (4.0, 0.0, 0.8)
    assert {"cpu_pct", "memory_pct", "swap_pct", "loop_lag_ms"} <= set(got.metrics())


def test_the_first_sample_after_start_up_has_no_cpu_reading() -> None:
    # psutil compares with its previous call: read at once after the priming call, the
    # figure is noise (the 100% a new cockpit showed as CRITICAL beside "CPU 2%").
    sampler = Sampler()
    assert sampler.sample(0.0).cpu_pct is None
    time.sleep(MIN_CPU_SPAN_S)  # the span psutil needs; not a synchronisation
    assert sampler.sample(1.0).cpu_pct is not None
    assert sampler.sample(1.01).cpu_pct is None  # too soon after that one, too


def test_the_sampler_reads_the_slow_sensors_only_every_slow_every_samples() -> None:
    sampler = Sampler(slow_every=10)
    samples = [sampler.sample(float(t)) for t in range(25)]
    assert sampler.slow_reads == 3  # samples 0, 10 and 20
    assert len({(s.temperature_c, s.battery_pct, s.on_battery) for s in samples[:10]}) == 1


# --- actions -------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "expected"), [
    (OPTIMAL, Actions(32, None, 1.0, False, False, False)),
    (STRESSED, Actions(16, 7, 0.75, False, False, False)),
    (DEGRADED, Actions(8, 4, 0.5, False, True, True)),
    (CRITICAL, Actions(2, 1, 0.25, True, True, True)),
])
def test_actions_for_each_state(state: SystemState, expected: Actions) -> None:
    assert actions_for(state, max_concurrency=32, cores=8) == expected


@pytest.mark.parametrize("state", [STRESSED, DEGRADED, CRITICAL])
def test_a_state_from_the_error_rate_alone_only_opens_failing_circuits(
        state: SystemState) -> None:
    # Providers failing are the providers' health: local work and the cap follow the
    # machine's own signals (here calm), only the circuits follow the error rate.
    actions = actions_for(state, max_concurrency=32, cores=8, machine=OPTIMAL)
    assert actions == replace(actions_for(OPTIMAL, max_concurrency=32, cores=8),
                              open_failing_circuits=state.severity >= DEGRADED.severity)
    assert not actions.local_paused and actions.local_duty == 1.0
    assert not actions.prefer_apis


def test_a_stressed_machine_under_a_critical_error_rate_is_throttled_as_stressed() -> None:
    actions = actions_for(CRITICAL, max_concurrency=32, cores=8, machine=STRESSED)
    assert actions == Actions(16, 7, 0.75, False, False, True)


def test_actions_never_go_below_one() -> None:
    for state in SystemState:
        actions = actions_for(state, max_concurrency=1, cores=1)
        assert actions.concurrency == 1
        assert actions.local_threads in (None, 1)
    assert actions_for(CRITICAL, max_concurrency=64, cores=2).concurrency == 4


def test_actions_describe_themselves_in_plain_words() -> None:
    assert actions_for(OPTIMAL, max_concurrency=32, cores=8).describe() == (
        "concurrency cap 32", "local inference: all cores at full speed")
    assert actions_for(CRITICAL, max_concurrency=256, cores=8).describe() == (
        "concurrency cap 16", "local inference: 1 thread at 25% duty", "local queue paused",
        "prefer API providers over local models", "open circuits of failing providers")
    assert "local inference: 4 threads at 50% duty" in actions_for(
        DEGRADED, max_concurrency=32, cores=8).describe()
