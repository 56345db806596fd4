"""Provider health from three signals: canary probes, real traffic, and status pages.

- Real traffic (passive): the last WINDOW calls give a success rate and a latency EWMA,
  per provider and per model. An outage error (unreachable, timeout, 5xx) opens the
  provider's circuit after `passive_failures` in a row: no more real traffic goes there
  until a probe passes.
- Canaries (active): a tiny request with a checkable answer (canary.py). A failed probe
  and an outage error both count as failures; a pass or a successful call as a success.
- The status page: what the provider itself says (statuspage.py); it can make a provider
  orange and hold its traffic until a probe passes, never green.

The light follows Gatus-style thresholds so it does not flap: red after
`failure_threshold` failures in a row, green again after `success_threshold` successes in
a row. A red provider's circuit is open. When canaries cover a provider, a half-open
circuit still takes no traffic: the next canary is the probe. A refused key is red until
the key changes: waiting does not fix it.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from .clock import Clock
from .config import HealthSpec
from .records import CallRecord

WINDOW = 50
PROBES_KEPT = 10
EWMA_ALPHA = 0.2  # a new call weighs a fifth: a few slow calls show, one does not dominate
ORANGE_BELOW_SUCCESS_PCT = 90.0

# Failures that say the provider is down: they stop its traffic at once.
OUTAGE_KINDS = frozenset({"overloaded", "timeout", "connection"})
# Failures that say it is unwell, but only in a row (a bad body, a quota hit).
_COUNTS_AGAINST_CIRCUIT = OUTAGE_KINDS | {"malformed", "rate_limited"}
# What the light's failure streak counts: a refused request or key, or a 429, says
# nothing about whether the provider is up.
_HEALTH_FAILURES = OUTAGE_KINDS | {"malformed"}


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
class ProbeResult:
    """One canary: did the provider answer the fixed question correctly, and how fast."""

    ts: float
    provider: str
    model: str
    ok: bool
    reason: str  # one line: "answered 12 in 240 ms", or what went wrong
    latency_s: float | None = None
    ttft_s: float | None = None
    usd: float | None = None
    skipped: bool = False  # not sent (canary budget spent, no key): says nothing


@dataclass(frozen=True, slots=True)
class StatusSignal:
    """The provider's public status page, as last read."""

    ts: float
    level: str  # operational, degraded, outage, unknown
    reason: str
    ok: bool  # the page was read and understood


@dataclass(frozen=True, slots=True)
class ModelHealth:
    model: str
    calls: int
    success_pct: float | None
    latency_ewma_s: float | None
    canary: ProbeResult | None
    score: float | None


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
    score: float | None = None  # 0..1, all signals together; None: nothing known yet
    latency_ewma_s: float | None = None
    canary: ProbeResult | None = None  # the last probe
    failures_in_row: int = 0
    status: StatusSignal | None = None
    models: tuple[ModelHealth, ...] = ()


class CircuitBreaker:
    """Whether real traffic may go to a provider.

    Opens after `outage_failures` outage errors in a row, or `failures_to_open` failures
    of any kind that count; after `cooldown_s` it is half-open: one probe may go. When
    `canary_probes` is set, the probe is the next canary, and real traffic waits for it.
    """

    def __init__(self, clock: Clock, *, failures_to_open: int = 3, cooldown_s: float = 30.0,
                 outage_failures: int = 1) -> None:
        self._clock = clock
        self.failures_to_open = failures_to_open
        self.outage_failures = outage_failures
        self.cooldown_s = cooldown_s
        self.canary_probes = False
        self._consecutive = 0
        self._outages = 0
        self._opened_at: float | None = None
        self._probing = False  # half-open: one call is testing the water

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock.now() - self._opened_at >= self.cooldown_s:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allows_traffic(self) -> bool:
        """New work may go there: closed, or half-open with no probe out yet."""
        if self._opened_at is None:
            return True  # closed: the common case, on every routing decision
        if self.canary_probes:
            return False
        return self.state is CircuitState.HALF_OPEN and not self._probing

    def dispatching(self) -> None:
        """A call is leaving for this provider; when half-open, it is the one probe."""
        if self._opened_at is not None and self.state is CircuitState.HALF_OPEN:
            self._probing = True

    def probe_abandoned(self) -> None:
        self._probing = False

    def record(self, ok: bool, kind: str | None = None) -> None:
        self._probing = False
        if ok:
            self.close()
            return
        self._consecutive += 1
        self._outages = self._outages + 1 if kind in OUTAGE_KINDS else 0
        if (self._opened_at is not None or self._consecutive >= self.failures_to_open
                or self._outages >= self.outage_failures):
            self._opened_at = self._clock.now()  # a failed probe re-arms the cool-down

    def trip(self) -> None:
        """Open now: a probe failed, or the status page reports an outage."""
        self._probing = False
        self._opened_at = self._clock.now()

    def close(self) -> None:
        self._consecutive = 0
        self._outages = 0
        self._opened_at = None
        self._probing = False

    reset = close


@dataclass(frozen=True, slots=True)
class LiveStats:
    """What routing reads on every decision, computed once per recorded call."""

    calls: int
    success: float  # 0..1
    latency_p50_s: float | None


NO_STATS = LiveStats(0, 1.0, None)


@dataclass(slots=True)
class _Passive:
    """Real traffic to one provider or one model."""

    window: deque[CallRecord] = field(default_factory=lambda: deque(maxlen=WINDOW))
    ewma_s: float | None = None

    def add(self, record: CallRecord) -> None:
        self.window.append(record)
        if record.ok:
            self.ewma_s = (record.duration_s if self.ewma_s is None
                           else EWMA_ALPHA * record.duration_s + (1 - EWMA_ALPHA) * self.ewma_s)

    @property
    def judged(self) -> list[CallRecord]:
        """The calls that say something about the provider: a request it refused as bad,
        a key it refused, or a 429, say nothing about whether it is up."""
        return [c for c in self.window if c.ok or c.error_kind in _HEALTH_FAILURES]

    @property
    def success(self) -> float | None:
        judged = self.judged
        if not judged:
            return None
        return sum(1 for c in judged if c.ok) / len(judged)


class _Track:
    def __init__(self, clock: Clock, spec: HealthSpec) -> None:
        self.passive = _Passive()
        self.models: dict[str, _Passive] = {}
        self.probes: deque[ProbeResult] = deque(maxlen=PROBES_KEPT)
        self.model_probes: dict[str, ProbeResult] = {}
        self.circuit = CircuitBreaker(clock, outage_failures=spec.passive_failures)
        self.key_refused = False
        self.stats = NO_STATS
        self.light = Light.GREY  # the Gatus state: grey, green, orange (recovering), red
        self.failures = 0  # in a row
        self.successes = 0  # in a row
        self.status: StatusSignal | None = None
        self.note: str | None = None  # why the light is what it is, when not the streak


class HealthBook:
    """Health of every provider, fed with each call, probe and status-page reading."""

    def __init__(self, clock: Clock, spec: HealthSpec | None = None) -> None:
        self._clock = clock
        self.spec = spec or HealthSpec()
        self._tracks: dict[str, _Track] = {}

    def _track(self, provider: str) -> _Track:
        track = self._tracks.get(provider)
        if track is None:
            track = self._tracks[provider] = _Track(self._clock, self.spec)
        return track

    # -- signals in ------------------------------------------------------------------------

    def observe(self, record: CallRecord, *, circuit: bool = True) -> ProviderHealth:
        """A real call, once recorded. `circuit=False`: the caller already told the circuit
        (the engine does it the moment a call ends, before the row is written)."""
        track = self._track(record.provider)
        if record.purpose == "canary":
            return self.health(record.provider)  # judged by probed(), answer included
        if record.error_kind == "cancelled":
            # We hung up: that says nothing about the provider, but frees a probe slot.
            track.circuit.probe_abandoned()
            return self.health(record.provider)
        track.passive.add(record)
        model = track.models.get(record.model)
        if model is None:
            model = track.models[record.model] = _Passive()
        model.add(record)
        if record.ok:
            track.key_refused = False
        elif record.error_kind == "auth":
            track.key_refused = True
        if circuit and (record.ok or record.error_kind in _COUNTS_AGAINST_CIRCUIT):
            track.circuit.record(record.ok, record.error_kind)
        if record.ok:
            self._success(track)
        elif record.error_kind in _HEALTH_FAILURES:
            self._failure(track)
        health = self.health(record.provider)
        track.stats = LiveStats(health.calls, (health.success_pct or 0.0) / 100,
                                health.latency_p50_s)
        return health

    def call_ended(self, provider: str, ok: bool, kind: str | None) -> None:
        """The moment a real call ends: the circuit hears it before the row is written, so
        a retry or the next dispatch already sees an outage."""
        if kind == "cancelled":
            self._track(provider).circuit.probe_abandoned()
        elif ok or kind in _COUNTS_AGAINST_CIRCUIT:
            self._track(provider).circuit.record(ok, kind)

    def probed(self, result: ProbeResult) -> ProviderHealth:
        """A canary came back: it is the half-open probe, and it moves the light."""
        track = self._track(result.provider)
        if result.skipped:
            return self.health(result.provider)
        track.probes.append(result)
        track.model_probes[result.model] = result
        if result.ok:
            track.circuit.close()
            self._success(track)
        else:
            self._failure(track)
            if track.circuit.is_open:
                track.circuit.trip()  # a failed probe re-arms the cool-down
        return self.health(result.provider)

    def status_read(self, provider: str, signal: StatusSignal) -> ProviderHealth:
        """The status page was read. Entering an outage holds traffic until a probe passes."""
        track = self._track(provider)
        before = track.status.level if track.status else None
        track.status = signal
        if signal.level == "outage" and before != "outage":
            track.circuit.trip()
        return self.health(provider)

    def key_changed(self, provider: str) -> None:
        track = self._track(provider)
        track.key_refused = False
        track.circuit.reset()
        track.failures = track.successes = 0
        track.light = Light.GREY
        track.note = None

    def reset_circuit(self, provider: str) -> ProviderHealth:
        """The operator's reset: traffic may go again; green only after passes in a row."""
        track = self._track(provider)
        track.circuit.reset()
        track.failures = track.successes = 0
        if track.light is not Light.GREY:
            track.light = Light.ORANGE
        track.note = "circuit reset by the operator: watching"
        return self.health(provider)

    def open_failing(self, *, min_calls: int = 3, below: float = 0.5) -> list[str]:
        """The regulator's action: open the circuits of providers failing most of their
        recent calls. Returns those it opened."""
        opened = []
        for provider, track in self._tracks.items():
            recent = list(track.passive.window)[-10:]
            if track.circuit.is_open or len(recent) < min_calls:
                continue
            if sum(1 for c in recent if c.ok) / len(recent) < below:
                track.circuit.trip()
                opened.append(provider)
        return opened

    def _success(self, track: _Track) -> None:
        track.failures = 0
        track.successes += 1
        if track.light is Light.GREY or track.successes >= self.spec.success_threshold:
            track.light = Light.GREEN
            track.note = None
        elif track.light is Light.RED:
            track.light = Light.ORANGE  # a probe passed: traffic again, green after more

    def _failure(self, track: _Track) -> None:
        track.successes = 0
        track.failures += 1
        if track.failures >= self.spec.failure_threshold:
            track.light = Light.RED
            track.note = None
            track.circuit.trip()
        elif track.light is not Light.RED:
            track.light = Light.ORANGE

    # -- reading ---------------------------------------------------------------------------

    def stats(self, provider: str) -> LiveStats:
        track = self._tracks.get(provider)
        return track.stats if track is not None else NO_STATS

    def circuit(self, provider: str) -> CircuitBreaker:
        return self._track(provider).circuit

    def routing(self, provider: str) -> LiveStats | None:
        """What a routing decision reads, in one look-up: the live stats, or None while
        the circuit holds new work back."""
        track = self._tracks.get(provider)
        if track is None:
            return NO_STATS
        return track.stats if track.circuit.allows_traffic() else None

    def providers(self) -> list[str]:
        return list(self._tracks)

    def health(self, provider: str) -> ProviderHealth:
        track = self._track(provider)
        calls = list(track.passive.window)
        circuit = track.circuit.state
        last_error = next((c.error for c in reversed(calls) if not c.ok), None)
        canary = track.probes[-1] if track.probes else None
        if canary is not None and not canary.ok and (not calls or canary.ts >= calls[-1].ts):
            last_error = canary.reason
        ok = [c for c in calls if c.ok]
        judged = track.passive.judged
        success = 100.0 * len(ok) / len(judged) if judged else None
        p50 = statistics.median(c.duration_s for c in ok) if ok else None
        light, reason = self._light(track, success, canary)
        models = tuple(self._model(track, m) for m in
                       sorted(set(track.models) | set(track.model_probes)))
        return ProviderHealth(provider, light, reason, len(calls), success, p50, circuit,
                              last_error, self._score(track, success, track.passive.ewma_s,
                                                      canary),
                              track.passive.ewma_s, canary, track.failures, track.status,
                              models)

    def _light(self, track: _Track, success: float | None, canary: ProbeResult | None
               ) -> tuple[Light, str]:
        spec = self.spec
        status = track.status
        if track.key_refused:
            return Light.RED, "the key was refused"
        if track.light is Light.RED:
            return Light.RED, (f"{track.failures} failures in a row"
                               + (f" (last: {canary.reason})" if canary and not canary.ok
                                  else "") + "; no traffic until a probe passes")
        circuit = track.circuit
        if circuit.is_open:
            if status is not None and status.level == "outage":
                return Light.ORANGE, f"{status.reason}; traffic held until a probe passes"
            return Light.ORANGE, "an outage error: traffic held until a probe passes"
        if track.light is Light.GREY and status is None:
            return Light.GREY, "no calls or probes yet"
        if track.light is Light.ORANGE:
            if track.note:
                return Light.ORANGE, track.note
            if track.failures:
                return Light.ORANGE, (f"{track.failures} failure(s) in a row (red at "
                                      f"{spec.failure_threshold})")
            return Light.ORANGE, (f"recovering: {track.successes} of "
                                  f"{spec.success_threshold} passes in a row")
        if status is not None and status.level in ("degraded", "outage"):
            return Light.ORANGE, status.reason
        if success is not None and success < ORANGE_BELOW_SUCCESS_PCT:
            return Light.ORANGE, f"{success:.0f}% of recent calls succeeded"
        if canary is not None and canary.ok and (canary.latency_s or 0) > spec.slow_s:
            return Light.ORANGE, (f"slow: the canary took {canary.latency_s:.1f} s "
                                  f"(slow above {spec.slow_s:g} s)")
        if track.light is Light.GREY:
            return Light.GREY, status.reason if status else "no calls or probes yet"
        if canary is not None and canary.ok and (not track.passive.window
                                                 or canary.ts >= track.passive.window[-1].ts):
            return Light.GREEN, canary.reason
        return Light.GREEN, "answering"

    def _score(self, track: _Track, success: float | None, ewma: float | None,
               canary: ProbeResult | None) -> float | None:
        """0..1: the product of what each signal says (1 where it has nothing to say)."""
        parts = []
        probes = list(track.probes)
        if probes:
            parts.append(sum(1 for p in probes if p.ok) / len(probes))
        if success is not None:
            parts.append(success / 100)
        if ewma is not None or (canary is not None and canary.latency_s is not None):
            latency = ewma if ewma is not None else canary.latency_s  # type: ignore[union-attr]
            parts.append(min(1.0, self.spec.slow_s / latency) if latency else 1.0)
        if track.status is not None and track.status.ok:
            parts.append(_STATUS_FACTOR.get(track.status.level, 1.0))
        if not parts:
            return None
        if track.key_refused or track.light is Light.RED:
            return 0.0
        return _product(parts)

    def _model(self, track: _Track, model: str) -> ModelHealth:
        passive = track.models.get(model)
        canary = track.model_probes.get(model)
        success = passive.success if passive else None
        parts = [x for x in (success, None if canary is None else float(canary.ok)) if x
                 is not None]
        if track.status is not None and track.status.ok:
            parts.append(_STATUS_FACTOR.get(track.status.level, 1.0))
        return ModelHealth(model, len(passive.window) if passive else 0,
                           None if success is None else 100 * success,
                           passive.ewma_s if passive else None, canary,
                           _product(parts) if parts else None)


def _product(parts: list[float]) -> float:
    return round(math.prod(parts), 3)


_STATUS_FACTOR = {"operational": 1.0, "degraded": 0.7, "outage": 0.2, "unknown": 1.0}
