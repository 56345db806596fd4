"""System consciousness: how hard this machine is working, and what to do about it.

A `Sampler` reads the machine (psutil) once a tick; a `Regulator` smooths the readings
over a window and judges a `SystemState`: OPTIMAL, STRESSED, DEGRADED or CRITICAL, each
metric against the [regulator] thresholds. A worse state is entered at once; a better one
only once every metric has been under the current state's thresholds, less a deadband,
for hold_s (hysteresis), so a metric hovering around a threshold does not flap the
factory. No state is decided before the window is full: the first samples of a process
only fill it. `actions_for` turns a state into what the engine does about it. Every
judgement says why in the operator's words, and how sure it is.

The regulator is pure and driven by its caller: time comes in with the samples.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import psutil

from .config import REGULATOR_LEVELS, REGULATOR_METRICS, RegulatorSpec


class SystemState(StrEnum):
    OPTIMAL = "optimal"
    STRESSED = "stressed"
    DEGRADED = "degraded"
    CRITICAL = "critical"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {SystemState.OPTIMAL: 0, SystemState.STRESSED: 1, SystemState.DEGRADED: 2,
             SystemState.CRITICAL: 3}
# Worst first: a metric's level is the first of these whose threshold it reaches.
_WORST_FIRST = tuple(SystemState(level) for level in reversed(REGULATOR_LEVELS))
FALLING = frozenset({"battery_pct"})  # worse when lower

# How each metric reads in a sentence: its label, and its unit with the space it takes.
_WORDS = {
    "cpu_pct": ("CPU", "%"),
    "memory_pct": ("memory", "%"),
    "swap_pct": ("swap", "%"),
    "loop_lag_ms": ("event-loop lag", " ms"),
    "error_rate_pct": ("error rate", "%"),
    "temperature_c": ("CPU temperature", " °C"),
    "battery_pct": ("battery", "%"),
}
# With fewer metrics than this known, a judgement rests on too little to be fully sure.
FULL_COVERAGE = 3
# The machine's own signals: what may throttle or pause local work. The error rate is the
# providers' health, not the machine's.
MACHINE_METRICS = tuple(m for m in REGULATOR_METRICS if m != "error_rate_pct")
# psutil.cpu_percent(interval=None) compares with its previous call; over a shorter span
# than this the figure is noise (often 0% or 100%), so the sample has no CPU reading.
MIN_CPU_SPAN_S = 0.1


@dataclass(frozen=True, slots=True)
class SystemSample:
    """One reading of the machine; None where this platform or moment cannot tell."""

    ts: float
    cpu_pct: float | None = None
    load_per_core: float | None = None  # 1-minute load average / cores, for information
    memory_pct: float | None = None
    swap_pct: float | None = None
    temperature_c: float | None = None
    battery_pct: float | None = None
    on_battery: bool | None = None
    loop_lag_ms: float | None = None
    error_rate_pct: float | None = None
    latency_p50_s: float | None = None  # for information
    own_cpu_pct: float | None = None  # the part of cpu_pct this process uses (all cores: 100)

    def metrics(self) -> dict[str, float]:
        """The readings the regulator judges, under the REGULATOR_METRICS names."""
        out: dict[str, float] = {}
        for name in REGULATOR_METRICS:
            value = getattr(self, name)
            if value is not None:
                out[name] = float(value)
        if self.on_battery is not True:
            # A low battery only matters while it is what powers the machine.
            out.pop("battery_pct", None)
        return out

    def others(self) -> SystemSample:
        """The machine as the rest of it uses it: this process's own CPU taken out.

        What local work follows. Local inference is this process's CPU: counting it would
        throttle the local model for its own load, down to a thread at 25% duty on an
        otherwise idle machine, when it may be the only provider left.
        """
        if self.cpu_pct is None or self.own_cpu_pct is None:
            return self
        return replace(self, cpu_pct=max(0.0, self.cpu_pct - self.own_cpu_pct))

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _SAMPLE_FIELDS}


_SAMPLE_FIELDS = SystemSample.__slots__


# Sensor names (psutil's keys) and labels that measure the CPU package or its cores, not
# the disk, the Wi-Fi card or the battery.
_CPU_SENSORS = ("coretemp", "k10temp", "zenpower", "cpu", "soc_thermal", "x86_pkg_temp",
                "acpitz")
_CPU_LABELS = ("package", "tctl", "tdie", "core", "cpu")


def cpu_temperature(sensors: dict[str, list[Any]]) -> float | None:
    """The hottest current reading among CPU-ish sensors (psutil.sensors_temperatures())."""
    hottest: float | None = None
    for name, readings in sensors.items():
        cpu_sensor = name.lower().startswith(_CPU_SENSORS)
        for reading in readings:
            label = (reading.label or "").lower()
            if not (cpu_sensor or label.startswith(_CPU_LABELS)):
                continue
            current = reading.current
            if current is not None and current > 0 and (hottest is None or current > hottest):
                hottest = float(current)
    return hottest


# What a psutil call may raise where the platform or a sandbox does not allow a reading:
# a missing function, an unreadable /proc or /sys file, psutil's own AccessDenied.
_UNREADABLE = (AttributeError, OSError, RuntimeError, ValueError, psutil.Error)


class Sampler:
    """Reads the machine; never raises (a reading it cannot take is None)."""

    def __init__(self, *, slow_every: int = 10) -> None:
        self.slow_every = max(1, slow_every)
        self.slow_reads = 0  # how many times the sensors were read (they are slow)
        self._count = 0
        self._temperature: float | None = None
        self._battery: tuple[float | None, bool | None] = (None, None)
        self._cpu_since = time.monotonic()
        self._process: psutil.Process | None = None
        try:
            self.cores = psutil.cpu_count() or os.cpu_count() or 1
            # cpu_percent(interval=None) compares with the previous call: prime it so the
            # first sample measures from here, without blocking.
            psutil.cpu_percent(interval=None)
        except _UNREADABLE:
            self.cores = os.cpu_count() or 1
        try:
            self._process = psutil.Process()
            self._process.cpu_percent(interval=None)
        except _UNREADABLE:
            self._process = None

    def sample(self, ts: float, *, loop_lag_ms: float | None = None,
               error_rate_pct: float | None = None,
               latency_p50_s: float | None = None) -> SystemSample:
        if self._count % self.slow_every == 0:
            # Temperatures and battery read many sysfs files: every slow_every samples.
            self._read_sensors()
        self._count += 1
        battery_pct, on_battery = self._battery
        cpu_pct, own_cpu_pct = self._cpu_pct()
        return SystemSample(
            ts=ts, cpu_pct=cpu_pct, own_cpu_pct=own_cpu_pct,
            load_per_core=_read(self._load_per_core),
            memory_pct=_read(_memory_pct), swap_pct=_read(_swap_pct),
            temperature_c=self._temperature, battery_pct=battery_pct, on_battery=on_battery,
            loop_lag_ms=loop_lag_ms, error_rate_pct=error_rate_pct,
            latency_p50_s=latency_p50_s)

    def _read_sensors(self) -> None:
        self.slow_reads += 1
        try:
            self._temperature = cpu_temperature(psutil.sensors_temperatures())
        except _UNREADABLE:
            self._temperature = None
        try:
            battery = psutil.sensors_battery()
        except _UNREADABLE:
            battery = None
        if battery is None:
            self._battery = (None, None)
        else:
            plugged = battery.power_plugged  # None: the platform cannot tell
            self._battery = (float(battery.percent), None if plugged is None else not plugged)

    def _cpu_pct(self) -> tuple[float | None, float | None]:
        """The machine's CPU, and this process's part of it, over the same span."""
        now = time.monotonic()
        if now - self._cpu_since < MIN_CPU_SPAN_S:
            # Too soon after the last reading (at start-up: the priming call).
            return None, None
        self._cpu_since = now
        machine = _read(_cpu_pct)
        own = None
        if self._process is not None:
            # Per core (100 = one core busy): the machine's figure is over all of them.
            own = _read(lambda: self._process.cpu_percent(interval=None) / self.cores)
        if machine is not None and own is not None:
            own = min(own, machine)
        return machine, own

    def _load_per_core(self) -> float:
        return os.getloadavg()[0] / self.cores


def _cpu_pct() -> float:
    return psutil.cpu_percent(interval=None)


def _memory_pct() -> float:
    return psutil.virtual_memory().percent


def _swap_pct() -> float:
    return psutil.swap_memory().percent


def _read(read: Callable[[], float]) -> float | None:
    try:
        return float(read())
    except _UNREADABLE:
        return None


@dataclass(frozen=True, slots=True)
class Judgement:
    ts: float
    state: SystemState
    previous: SystemState
    changed: bool
    confidence: float  # 0..1, see Regulator._confidence
    reasoning: str  # one or two sentences, in the operator's words
    metrics: dict[str, float]  # the smoothed values judged
    driver: str | None  # the metric that decided, None when none did
    warming: bool = False  # the window is not full yet: no state decided

    def to_dict(self) -> dict[str, Any]:
        return {"ts": self.ts, "state": str(self.state), "previous": str(self.previous),
                "changed": self.changed, "confidence": self.confidence,
                "reasoning": self.reasoning, "metrics": dict(self.metrics),
                "driver": self.driver, "warming": self.warming}


class Regulator:
    """Holds the system state and applies smoothing and hysteresis; pure.

    Each metric is the mean of its readings in the last `window` samples (a sample that
    lacks a metric adds nothing to it; the battery counts only while the latest sample
    says the machine runs on it). Until `window` samples have come, the regulator is
    warming up: it stays OPTIMAL and says so, with no confidence. `metrics` narrows what
    is judged (MACHINE_METRICS: the machine's own signals). A metric's level is the worst
    state whose threshold it reaches (at or above; the battery at or below). The state
    wanted is the worst level.

    A worse state is entered at once. A better one needs every metric clear of the
    current state: under its threshold less deadband_pct (the battery above it plus
    deadband_pct), continuously for hold_s. Then the regulator moves down to the worst
    state whose deadband a metric is still in (OPTIMAL when none is), so recovery obeys
    the lower state's deadband too. `since` is when the current state began.
    """

    def __init__(self, spec: RegulatorSpec,
                 metrics: tuple[str, ...] = REGULATOR_METRICS) -> None:
        self.spec = spec
        self.judged = frozenset(metrics)
        self.seen = 0  # samples observed since start-up
        self.state = SystemState.OPTIMAL
        self.since = 0.0  # set to the first sample's ts: the regulator starts with it
        self.last: Judgement | None = None
        self._window: deque[dict[str, float]] = deque(maxlen=spec.window)
        self._clear_since: float | None = None
        self._counts: dict[str, int] = {}  # samples behind each smoothed metric
        self._thresholds = {level: {m: spec.threshold(level, m) for m in REGULATOR_METRICS}
                            for level in REGULATOR_LEVELS}
        factor = spec.deadband_pct / 100
        self._exits = {level: {m: t * (1 + factor if m in FALLING else 1 - factor)
                               for m, t in lines.items()}
                       for level, lines in self._thresholds.items()}

    def observe(self, sample: SystemSample) -> Judgement:
        """Add a sample and judge: worse at once, better after hold_s clear of the deadband."""
        return self._judge(sample, forced=False)

    def force(self, sample: SystemSample) -> Judgement:
        """The operator's "force optimisation": add a sample and move to the state the
        smoothed values call for now, skipping the hold and the deadband."""
        return self._judge(sample, forced=True)

    def _judge(self, sample: SystemSample, *, forced: bool) -> Judgement:
        ts = sample.ts
        if self.last is None:
            self.since = ts
        self.seen += 1
        self._window.append({m: v for m, v in sample.metrics().items() if m in self.judged})
        smoothed = self._smoothed(sample)
        if not self.ready:
            judgement = Judgement(
                ts=ts, state=self.state, previous=self.state, changed=False, confidence=0.0,
                reasoning=(f"Warming up: {self.seen} of the {self.spec.window} samples a "
                           f"judgement needs; no state decided yet."),
                metrics=smoothed, driver=None, warming=True)
            self.last = judgement
            return judgement
        wanted, driver = self._wanted(smoothed)
        previous = self.state
        clear_for = 0.0
        if forced or wanted.severity > previous.severity:
            self._clear_since = None
            self._move(wanted, ts)
        elif wanted is previous or self._unclear(previous, smoothed):
            self._clear_since = None
        else:
            if self._clear_since is None:
                self._clear_since = ts
            clear_for = ts - self._clear_since
            if clear_for >= self.spec.hold_s:
                self._clear_since = None
                # Down to the worst state whose deadband a metric is still in, not straight
                # to the one wanted: a metric just under a lower threshold would bring that
                # state back on the next wobble.
                self._move(self._settled(smoothed), ts)
        state = self.state
        # What keeps the state when it is worse than the one wanted (a worse one is
        # entered at once): a metric still in its deadband, or only the hold timer.
        basis = "level"
        if state.severity > wanted.severity:
            unclear = self._unclear(state, smoothed)
            basis = "deadband" if unclear else "hold"
            driver = self._nearest(unclear, self._exits[state]) if unclear else None
        judgement = Judgement(
            ts=ts, state=state, previous=previous, changed=state is not previous,
            confidence=self._confidence(state, driver, basis, smoothed),
            reasoning=self._reasoning(state, previous, driver, basis, smoothed, clear_for,
                                      forced),
            metrics=smoothed, driver=driver)
        self.last = judgement
        return judgement

    @property
    def ready(self) -> bool:
        """A full window of samples has come since start-up: states may be decided."""
        return self.seen >= self.spec.window

    def _move(self, state: SystemState, ts: float) -> None:
        if state is not self.state:
            self.state, self.since = state, ts

    def _smoothed(self, latest: SystemSample) -> dict[str, float]:
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for metrics in self._window:
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0.0) + value
                counts[name] = counts.get(name, 0) + 1
        if latest.on_battery is not True:
            sums.pop("battery_pct", None)
        self._counts = counts
        return {name: sums[name] / counts[name] for name in REGULATOR_METRICS
                if name in sums}

    @staticmethod
    def _past(metric: str, value: float, line: float) -> bool:
        """At or beyond the line on the bad side (below it for the battery)."""
        return value <= line if metric in FALLING else value >= line

    def _level(self, metric: str, value: float) -> SystemState:
        for state in _WORST_FIRST:
            if self._past(metric, value, self._thresholds[state][metric]):
                return state
        return SystemState.OPTIMAL

    def _wanted(self, smoothed: dict[str, float]) -> tuple[SystemState, str | None]:
        """The worst level over the metrics, and the metric furthest into it."""
        wanted, driver, depth = SystemState.OPTIMAL, None, 0.0
        for metric, value in smoothed.items():
            level = self._level(metric, value)
            if level is SystemState.OPTIMAL:
                continue
            how_far = _ratio(metric, value, self._thresholds[level][metric])
            if level.severity > wanted.severity or (level is wanted and how_far > depth):
                wanted, driver, depth = level, metric, how_far
        return wanted, driver

    def _settled(self, smoothed: dict[str, float]) -> SystemState:
        """The worst state whose exit line some metric is at or past."""
        for state in _WORST_FIRST:
            if self._unclear(state, smoothed):
                return state
        return SystemState.OPTIMAL

    def _unclear(self, state: SystemState, smoothed: dict[str, float]) -> dict[str, float]:
        """The metrics not yet clear of this state: at or past its exit line."""
        if state is SystemState.OPTIMAL:
            return {}
        exits = self._exits[state]
        return {m: v for m, v in smoothed.items() if self._past(m, v, exits[m])}

    @staticmethod
    def _nearest(values: dict[str, float], lines: dict[str, float]) -> str:
        return max(values, key=lambda m: _ratio(m, values[m], lines[m]))

    def _confidence(self, state: SystemState, driver: str | None, basis: str,
                    smoothed: dict[str, float]) -> float:
        """How many raw samples in the window, taken alone, back the state: a fraction.

        confidence = agreeing / max(n, window) * min(1, k / FULL_COVERAGE), k = metrics
        judged: a metric read in fewer samples than the window holds is less evidence.

        - OPTIMAL: n = samples in the window; agreeing = those with every metric under its
          STRESSED threshold (the battery above it).
        - Another state with a driving metric: n = samples carrying that metric; agreeing
          = those at or past its line: the state's threshold, or, when the state is kept
          by the deadband, its exit line (the threshold less the deadband).
        - Another state kept only by the hold timer (every metric already clear): n =
          samples in the window; agreeing = those with some metric at or past the state's
          exit line, so the figure falls as the evidence for leaving builds up.
        """
        coverage = min(1.0, len(smoothed) / FULL_COVERAGE)
        if state is SystemState.OPTIMAL:
            lines = self._thresholds[SystemState.STRESSED]
            votes = [not any(self._past(m, v, lines[m]) for m, v in s.items())
                     for s in self._window]
        elif driver is not None:
            line = (self._exits if basis == "deadband" else self._thresholds)[state][driver]
            votes = [self._past(driver, s[driver], line) for s in self._window if driver in s]
        else:
            lines = self._exits[state]
            votes = [any(self._past(m, v, lines[m]) for m, v in s.items())
                     for s in self._window]
        if not votes:
            return 0.0
        return sum(votes) / max(len(votes), self.spec.window) * coverage

    def _reasoning(self, state: SystemState, previous: SystemState, driver: str | None,
                   basis: str, smoothed: dict[str, float], clear_for: float,
                   forced: bool) -> str:
        n = self._counts.get(driver, 0) if driver else 0
        mean = "latest sample" if n == 1 else f"{n}-sample mean"
        others = self._listing(smoothed, skip=driver)
        tail = f"; {others}." if others else "."
        band = f"{self.spec.deadband_pct:g}%"
        moved = ""  # a better state reached after the hold
        if not forced and state.severity < previous.severity:
            verb = "back to" if state is SystemState.OPTIMAL else "down to"
            moved = (f"All metrics under the {previous.name} thresholds less {band} for "
                     f"{clear_for:.3g} s: {verb} {state.name}")
        opening = "Forced re-evaluation: " if forced else ""
        if state is SystemState.OPTIMAL:
            if moved:
                return moved + tail
            if not smoothed:
                return opening + "No metric could be read: assuming OPTIMAL."
            return opening + f"All metrics under the STRESSED thresholds: {others}."
        if basis == "hold":
            return (f"All metrics under the {state.name} thresholds less {band} for "
                    f"{clear_for:.3g} s of the {self.spec.hold_s:g} s needed: staying "
                    f"{state.name}{tail}")
        assert driver is not None  # every other basis has a driving metric
        value = smoothed[driver]
        falling = driver in FALLING
        if basis == "deadband":
            exit_line = self._exits[state][driver]
            why = (f"{_say(driver, value, exit_line)} ({mean}) is not yet "
                   f"{'above' if falling else 'under'} {_line(driver, exit_line)} "
                   f"(the {state.name} threshold {'plus' if falling else 'less'} {band})")
        else:
            line = self._thresholds[state][driver]
            where = "at" if value == line else ("below" if falling else "above")
            why = (f"{_say(driver, value, line)} ({mean}) is {where} the {state.name} "
                   f"threshold of {_line(driver, line)}")
        if moved:
            return f"{moved}, since {why}{tail}"
        why = opening + why if opening else why[0].upper() + why[1:]
        if basis == "deadband":
            return f"{why}: staying {state.name}{tail}"
        return why + tail

    def _listing(self, smoothed: dict[str, float], *, skip: str | None, most: int = 3) -> str:
        """The other metrics worth a glance: those nearest their STRESSED threshold."""
        lines = self._thresholds[SystemState.STRESSED]
        names = sorted((m for m in smoothed if m != skip),
                       key=lambda m: -_ratio(m, smoothed[m], lines[m]))[:most]
        return ", ".join(_say(m, smoothed[m], lines[m]) for m in names)


def _ratio(metric: str, value: float, line: float) -> float:
    """How far past a line a value is, scale-free (>1: past it on the bad side)."""
    if metric in FALLING:
        return line / value if value > 0 else float("inf")
    return value / line if line > 0 else float("inf")


def _number(value: float, near: float | None = None) -> str:
    """The value with as few decimals as keep it on its side of `near` (a threshold)."""
    for digits in (0, 1, 2, 3):
        text = f"{value:.{digits}f}"
        shown = float(text)
        if near is None or ((shown < near) == (value < near)
                            and (shown == near) == (value == near)):
            return text
    return f"{value:g}"


def _say(metric: str, value: float, near: float | None = None) -> str:
    """A reading: "CPU 93%"."""
    label, unit = _WORDS[metric]
    return f"{label} {_number(value, near)}{unit}"


def _line(metric: str, value: float) -> str:
    """A threshold or exit line as configured: "90%", "67.5%"."""
    return f"{round(value, 2):g}{_WORDS[metric][1]}"


@dataclass(frozen=True, slots=True)
class Actions:
    """What the engine does in a state."""

    concurrency: int  # cap on calls in flight
    local_threads: int | None  # threads per local generation (None: all cores)
    local_duty: float  # share of the time local inference runs (1.0: full speed)
    local_paused: bool  # local queue holds new work
    prefer_apis: bool  # the response mode keeps work off local models
    open_failing_circuits: bool  # a failing provider gets no traffic until a probe passes

    def describe(self) -> tuple[str, ...]:
        threads = ("all cores" if self.local_threads is None else
                   f"{self.local_threads} thread{'s' if self.local_threads != 1 else ''}")
        speed = ("full speed" if self.local_duty >= 1.0
                 else f"{self.local_duty * 100:.0f}% duty")
        lines = [f"concurrency cap {self.concurrency}",
                 f"local inference: {threads} at {speed}"]
        if self.local_paused:
            lines.append("local queue paused")
        if self.prefer_apis:
            lines.append("prefer API providers over local models")
        if self.open_failing_circuits:
            lines.append("open circuits of failing providers")
        return tuple(lines)


def actions_for(state: SystemState, *, max_concurrency: int, cores: int,
                machine: SystemState | None = None) -> Actions:
    """The engine's response to a state: the worse the state, the less it asks of the box.

    `machine` is the state the machine's own signals call for (MACHINE_METRICS), when it is
    better than `state`: the difference is the error rate, the providers' health. Then the
    concurrency cap, the local throttle and pause and the response mode follow `machine`,
    and `state` only opens the circuits of failing providers: a provider failing is no
    reason to hold back the local models, which may be all that is left.
    """
    if machine is not None and machine.severity < state.severity:
        actions = actions_for(machine, max_concurrency=max_concurrency, cores=cores)
        return replace(actions, open_failing_circuits=actions_for(
            state, max_concurrency=max_concurrency, cores=cores).open_failing_circuits)
    top, cores = max(1, max_concurrency), max(1, cores)
    if state is SystemState.OPTIMAL:
        return Actions(top, None, 1.0, False, False, False)
    if state is SystemState.STRESSED:
        return Actions(max(1, top // 2), max(1, cores - 1), 0.75, False, False, False)
    if state is SystemState.DEGRADED:
        return Actions(max(1, top // 4), max(1, cores // 2), 0.5, False, True, True)
    return Actions(max(1, top // 16), 1, 0.25, True, True, True)


@dataclass(frozen=True, slots=True)
class RegulatorDecision:
    """What the regulator decided, and why, as the operator reads it."""

    ts: float
    state: SystemState
    previous: SystemState
    confidence: float
    reasoning: str
    metrics: dict[str, float] = field(default_factory=dict)
    actions: tuple[str, ...] = ()
    manual: bool = False  # the operator's action, not the regulator's judgement
