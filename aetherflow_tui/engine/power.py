"""Energy of work done on this machine (local inference): measured, not guessed from tokens.

RAPL's package energy counter when the kernel lets us read it (Intel and AMD on Linux);
otherwise the CPU time the work used, times a per-core power figure for this CPU. Both
are tagged, so the cockpit can say which one it shows.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from .usage import ENERGY_CPU, ENERGY_RAPL

RAPL_ROOT = Path("/sys/class/powercap")

# Watts drawn by one fully busy core, by CPU family. Sources: vendor TDPs divided by core
# counts, cross-checked with powermetrics (Apple) and RAPL (x86) readings under a
# single-threaded load; ±40 % either way. Used only when RAPL cannot be read.
WATTS_PER_CORE = (
    ("Apple M1", 3.5),
    ("Apple M2", 4.0),
    ("Apple M3", 4.5),
    ("Apple M4", 5.0),
    ("Apple", 4.5),
)
DEFAULT_WATTS_PER_CORE = 10.0  # a laptop or server x86 core under load


def cpu_model() -> str:
    brand = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        import subprocess

        with suppress(OSError, subprocess.SubprocessError):
            brand = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                   capture_output=True, text=True, timeout=2).stdout.strip()
    return brand or platform.machine()


def watts_per_core(model: str) -> float:
    for prefix, watts in WATTS_PER_CORE:
        if model.startswith(prefix):
            return watts
    return DEFAULT_WATTS_PER_CORE


@dataclass(frozen=True, slots=True)
class RaplCounter:
    """One RAPL package domain: a microjoule counter that wraps at max_energy_range_uj."""

    energy_file: Path
    max_uj: int

    @classmethod
    def find(cls, root: Path = RAPL_ROOT) -> RaplCounter | None:
        for domain in sorted(root.glob("intel-rapl:*")):
            if domain.name.count(":") != 1:
                continue  # sub-domains (core, uncore) are inside the package figure
            energy, limit = domain / "energy_uj", domain / "max_energy_range_uj"
            try:
                int(energy.read_text())
                max_uj = int(limit.read_text())
            except (OSError, ValueError):
                continue  # unreadable for this user since the Platypus mitigation
            return cls(energy, max_uj)
        return None

    def read(self) -> int:
        return int(self.energy_file.read_text())

    def joules_between(self, start_uj: int, end_uj: int) -> float:
        delta = end_uj - start_uj
        if delta < 0:
            delta += self.max_uj + 1
        return delta / 1e6


@dataclass
class Measurement:
    wh: float = 0.0
    method: str = ENERGY_CPU
    seconds: float = 0.0
    details: dict[str, float] = field(default_factory=dict)


class EnergyMeter:
    """Measures the energy of a block of local work."""

    def __init__(self, rapl: RaplCounter | None = None, *, watts: float | None = None,
                 use_rapl: bool = True) -> None:
        self.rapl = rapl if rapl is not None else (RaplCounter.find() if use_rapl else None)
        self.watts_per_core = watts if watts is not None else watts_per_core(cpu_model())

    @property
    def method(self) -> str:
        return ENERGY_RAPL if self.rapl else ENERGY_CPU

    @contextmanager
    def measure(self) -> Iterator[Measurement]:
        result = Measurement(method=self.method)
        wall = time.perf_counter()
        cpu = time.process_time()  # every thread of this process, llama.cpp's included
        rapl_start = self.rapl.read() if self.rapl else 0
        try:
            yield result
        finally:
            result.seconds = time.perf_counter() - wall
            cpu_s = time.process_time() - cpu
            result.details["cpu_s"] = cpu_s
            if self.rapl:
                joules = self.rapl.joules_between(rapl_start, self.rapl.read())
            else:
                joules = cpu_s * self.watts_per_core
            result.wh = joules / 3600.0
