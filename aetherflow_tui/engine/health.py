"""Provider health from real traffic: latency p50, success rate, a circuit breaker, a light.

Each provider keeps its last WINDOW calls. The circuit opens after consecutive retryable
failures, lets one probe through after a cool-down (half-open), and closes on a success.
A refused key is red until the key changes: waiting does not fix it.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from .clock import Clock
from .records import CallRecord

WINDOW = 50


class Light(StrEnum):
    GREEN = "green"
    ORANGE = "orange"
    RED = "red"
    GREY = "grey"  # no traffic yet, or no usable key: nothing to judge


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    provider: str
    light: Light
    reason: str  # one line: why this light
    calls: int  # in the window
    success_pct: float | None
    latency_p50_s: float | None
    circuit: CircuitState
    last_error: str | None


class CircuitBreaker:
    def __init__(self, clock: Clock, *, failures_to_open: int = 3, cooldown_s: float = 30.0
                 ) -> None:
        self._clock = clock
        self.failures_to_open = failures_to_open
        self.cooldown_s = cooldown_s
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False  # half-open: one call is testing the water

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock.now() - self._opened_at >= self.cooldown_s:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def allows_traffic(self) -> bool:
        """New work may go there: closed, or half-open with no probe out yet."""
        if self._opened_at is None:
            return True  # closed: the common case, on every routing decision
        state = self.state
        return state is CircuitState.CLOSED or (state is CircuitState.HALF_OPEN
                                                and not self._probing)

    def dispatching(self) -> None:
        """A call is leaving for this provider; when half-open, it is the one probe."""
        if self._opened_at is not None and self.state is CircuitState.HALF_OPEN:
            self._probing = True

    def probe_abandoned(self) -> None:
        self._probing = False

    def record(self, ok: bool) -> None:
        self._probing = False
        if ok:
            self._consecutive = 0
            self._opened_at = None
            return
        self._consecutive += 1
        if self.state is CircuitState.HALF_OPEN or self._consecutive >= self.failures_to_open:
            self._opened_at = self._clock.now()  # a failed probe re-arms the cool-down

    def reset(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._probing = False


@dataclass(frozen=True, slots=True)
class LiveStats:
    """What routing reads on every decision, computed once per recorded call."""

    calls: int
    success: float  # 0..1
    latency_p50_s: float | None


NO_STATS = LiveStats(0, 1.0, None)


class _Track:
    def __init__(self, clock: Clock) -> None:
        self.window: deque[CallRecord] = deque(maxlen=WINDOW)
        self.circuit = CircuitBreaker(clock)
        self.key_refused = False
        self.stats = NO_STATS


class HealthBook:
    """Passive health of every provider, fed with each recorded call."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tracks: dict[str, _Track] = {}

    def _track(self, provider: str) -> _Track:
        track = self._tracks.get(provider)
        if track is None:
            track = self._tracks[provider] = _Track(self._clock)
        return track

    def observe(self, record: CallRecord) -> ProviderHealth:
        track = self._track(record.provider)
        if record.error_kind == "cancelled":
            # We hung up: that says nothing about the provider, but frees a probe slot.
            track.circuit.probe_abandoned()
            return self.health(record.provider)
        track.window.append(record)
        if record.ok:
            track.key_refused = False
        elif record.error_kind == "auth":
            track.key_refused = True
        if record.ok or record.error_kind in _COUNTS_AGAINST_CIRCUIT:
            track.circuit.record(record.ok)
        health = self.health(record.provider)
        track.stats = LiveStats(health.calls, (health.success_pct or 0.0) / 100,
                                health.latency_p50_s)
        return health

    def stats(self, provider: str) -> LiveStats:
        track = self._tracks.get(provider)
        return track.stats if track is not None else NO_STATS

    def key_changed(self, provider: str) -> None:
        track = self._track(provider)
        track.key_refused = False
        track.circuit.reset()

    def circuit(self, provider: str) -> CircuitBreaker:
        return self._track(provider).circuit

    def health(self, provider: str) -> ProviderHealth:
        track = self._track(provider)
        calls = list(track.window)
        circuit = track.circuit.state
        last_error = next((c.error for c in reversed(calls) if not c.ok), None)
        if not calls:
            return ProviderHealth(provider, Light.GREY, "no calls yet", 0, None, None, circuit,
                                  None)
        ok = [c for c in calls if c.ok]
        success = 100.0 * len(ok) / len(calls)
        p50 = statistics.median(c.duration_s for c in ok) if ok else None
        if track.key_refused:
            light, reason = Light.RED, "the key was refused"
        elif circuit is CircuitState.OPEN:
            light, reason = Light.RED, "circuit open after repeated failures"
        elif circuit is CircuitState.HALF_OPEN:
            light, reason = Light.ORANGE, "circuit half-open: next call is a probe"
        elif success < 90.0:
            light, reason = Light.ORANGE, f"{success:.0f}% of recent calls succeeded"
        else:
            light, reason = Light.GREEN, "answering"
        return ProviderHealth(provider, light, reason, len(calls), success, p50, circuit,
                              last_error)


# Failures that say the provider is unwell; a refused request or key says nothing about it.
_COUNTS_AGAINST_CIRCUIT = frozenset({"overloaded", "timeout", "connection", "malformed",
                                     "rate_limited"})
