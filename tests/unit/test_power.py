"""Local energy: a RAPL counter read from files, and the CPU-time model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from aetherflow_tui.engine.ledger import ENERGY_CPU, ENERGY_RAPL
from aetherflow_tui.engine.power import (
    DEFAULT_WATTS_PER_CORE,
    EnergyMeter,
    RaplCounter,
    watts_per_core,
)


def _rapl_tree(root: Path, energy: int, max_uj: int = 2**32) -> Path:
    package = root / "intel-rapl:0"
    (root / "intel-rapl:0:0").mkdir(parents=True)  # a sub-domain, to be ignored
    package.mkdir(parents=True, exist_ok=True)
    (package / "energy_uj").write_text(f"{energy}\n")
    (package / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return package / "energy_uj"


def _burn(seconds_of_work: int = 200_000) -> None:
    data = b"x"
    for _ in range(seconds_of_work):
        data = hashlib.sha256(data).digest()


def test_rapl_package_counter_is_found_and_read(tmp_path: Path):
    energy = _rapl_tree(tmp_path, 1_000_000)
    counter = RaplCounter.find(tmp_path)
    assert counter is not None and counter.energy_file == energy
    assert counter.read() == 1_000_000


def test_rapl_energy_between_two_readings_including_wraparound(tmp_path: Path):
    energy = _rapl_tree(tmp_path, 4_000_000, max_uj=4_999_999)
    meter = EnergyMeter(RaplCounter.find(tmp_path))
    assert meter.method == ENERGY_RAPL
    with meter.measure() as m:
        energy.write_text("600000\n")  # wrapped: 1,000,000 µJ to the top, 600,000 after
    assert m.method == ENERGY_RAPL
    assert m.wh == pytest.approx(1.6 / 3600)


def test_no_rapl_directory_means_the_cpu_time_model(tmp_path: Path):
    assert RaplCounter.find(tmp_path) is None
    meter = EnergyMeter(None, use_rapl=False, watts=12.0)
    assert meter.method == ENERGY_CPU
    with meter.measure() as m:
        _burn()
    assert m.details["cpu_s"] > 0
    assert m.wh == pytest.approx(m.details["cpu_s"] * 12.0 / 3600)


def test_idle_waiting_costs_nothing_in_the_cpu_model():
    import time

    meter = EnergyMeter(None, use_rapl=False, watts=10.0)
    with meter.measure() as busy:
        _burn()
    with meter.measure() as idle:
        time.sleep(0.05)
    assert idle.wh < busy.wh / 5


def test_watts_per_core_by_cpu_family():
    assert watts_per_core("Apple M2 Pro") == 4.0
    assert watts_per_core("Apple M9 Ultra") == 4.5
    assert watts_per_core("AMD EPYC 7B13") == DEFAULT_WATTS_PER_CORE
