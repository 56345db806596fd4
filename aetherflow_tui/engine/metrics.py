"""The optional Prometheus exposition (`--metrics-port`): provider health, spend, energy and
the regulator's view of the machine, served at http://127.0.0.1:PORT/metrics.

The engine fills a frozen MetricsSnapshot on its event loop and hands it over with
MetricsExporter.update(); the exporter's HTTP thread only ever reads the latest snapshot,
never engine state. prometheus_client is imported only when the exporter starts or
renders, so importing this module costs nothing when the flag is off.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import math
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.core import GaugeMetricFamily, Metric

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "IDLE_TIMEOUT_S",
    "MAX_CONNECTIONS",
    "MetricsExporter",
    "MetricsPortError",
    "MetricsSnapshot",
    "ProviderMetrics",
    "exposure_warning",
    "render",
]

PREFIX = "aetherflow_"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464  # the port OpenTelemetry's Prometheus exporter uses by convention
# How often the idle HTTP thread looks for a stop request, hence how long stop() can block.
# prometheus_client.start_http_server keeps socketserver's 0.5 s, which stalled every stop.
STOP_POLL_S = 0.05
# A scrape takes milliseconds. Each open connection holds a thread and a file descriptor,
# so one that sends nothing is closed after IDLE_TIMEOUT_S, and past MAX_CONNECTIONS the
# oldest is closed to make room: a pile of idle sockets (about 97 exhausted the process's
# descriptors) cannot lock the scraper out.
IDLE_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 32

# The values a one-hot gauge always lists, so a dashboard sees 0 for the states not held
# (not just an absent series). They mirror health.Light, health.CircuitState,
# modes.ResponseMode and the regulator's states; tests pin the first three to the enums.
LIGHTS = ("green", "orange", "red", "grey")
CIRCUIT_STATES = ("closed", "open", "half-open")
REGULATOR_STATES = ("optimal", "stressed", "degraded", "critical")
RESPONSE_MODES = ("bouquet", "hybrid", "survival")

# The light as one number a threshold alert can use; grey (nothing to judge) has none.
LIGHT_UP = {"green": 1.0, "orange": 0.5, "red": 0.0}


@dataclass(frozen=True, slots=True)
class ProviderMetrics:
    provider: str  # the config id
    light: str  # green / orange / red / grey
    score: float | None  # routing health score, 0..1
    circuit: str  # closed / open / half-open
    canary_latency_s: float | None
    canary_ok: bool | None
    success_ratio: float | None  # 0..1 over the recent calls
    latency_ewma_s: float | None
    spend_usd_today: float
    energy_wh_today: float


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything /metrics shows, taken at once on the event loop. None means unknown: the
    sample is left out rather than exposed as NaN."""

    ts: float  # unix seconds when the engine took it
    providers: tuple[ProviderMetrics, ...]
    spend_usd_today: float
    budget_usd_daily: float
    energy_wh_today: float
    gco2e_today: float
    canary_usd_today: float
    regulator_state: str  # optimal / stressed / degraded / critical
    regulator_confidence: float | None  # 0..1
    cpu_pct: float | None  # 0..100, as psutil gives it
    memory_pct: float | None
    swap_pct: float | None
    temperature_c: float | None  # psutil has temperatures only on Linux and FreeBSD
    loop_lag_ms: float | None
    concurrency_limit: int
    calls_in_flight: int
    response_mode: str  # bouquet / hybrid / survival
    dispatch_held: bool


class MetricsPortError(Exception):
    """The exporter cannot listen where it was asked to (port taken, address not local)."""


# Per-provider gauges: name (after the prefix), HELP text, the value (None: left out).
_ProviderValue = Callable[[ProviderMetrics], float | None]
PROVIDER_GAUGES: tuple[tuple[str, str, _ProviderValue], ...] = (
    ("provider_health_score",
     "Routing health score of the provider, from 0 (avoid) to 1 (best).",
     lambda p: p.score),
    ("provider_up",
     "The provider's light as a number: 1 green, 0.5 orange, 0 red; absent while grey.",
     lambda p: LIGHT_UP.get(p.light)),
    ("provider_circuit_open",
     "1 while the provider's circuit breaker is open (no traffic), else 0; half-open is 0 "
     "because a probe call may go through.",
     lambda p: float(p.circuit == "open")),
    ("provider_canary_ok",
     "1 if the provider's last canary call succeeded, 0 if it failed.",
     lambda p: None if p.canary_ok is None else float(p.canary_ok)),
    ("provider_canary_latency_seconds",
     "Duration of the provider's last canary call, in seconds.",
     lambda p: p.canary_latency_s),
    ("provider_success_ratio",
     "Share of the provider's recent calls that succeeded, from 0 to 1.",
     lambda p: p.success_ratio),
    ("provider_latency_ewma_seconds",
     "Smoothed (exponentially weighted) call latency of the provider, in seconds.",
     lambda p: p.latency_ewma_s),
    ("provider_spend_usd_today",
     "US dollars spent on the provider today (UTC day; resets at midnight UTC).",
     lambda p: p.spend_usd_today),
    ("provider_energy_wh_today",
     "Estimated or measured energy used by calls to the provider today, in watt-hours.",
     lambda p: p.energy_wh_today),
)

# Single-value gauges: name (after the prefix), HELP text, the value (None: left out).
_SnapshotValue = Callable[[MetricsSnapshot], float | None]
GLOBAL_GAUGES: tuple[tuple[str, str, _SnapshotValue], ...] = (
    ("snapshot_timestamp_seconds",
     "Unix time the engine took these figures; a value that stops moving means the engine "
     "loop is stuck.",
     lambda s: s.ts),
    ("spend_usd_today", "US dollars spent today over all providers, canaries included.",
     lambda s: s.spend_usd_today),
    ("budget_usd_daily", "The daily budget in US dollars.", lambda s: s.budget_usd_daily),
    ("energy_wh_today", "Energy used by today's calls, in watt-hours.",
     lambda s: s.energy_wh_today),
    ("gco2e_today", "Estimated emissions of today's calls, in grams of CO2 equivalent.",
     lambda s: s.gco2e_today),
    ("canary_spend_usd_today", "US dollars spent today on canary (health probe) calls.",
     lambda s: s.canary_usd_today),
    ("regulator_confidence",
     "How sure the regulator is of its current state, from 0 to 1.",
     lambda s: s.regulator_confidence),
    ("system_cpu_percent", "CPU use of this machine, in percent.", lambda s: s.cpu_pct),
    ("system_memory_percent", "Memory use of this machine, in percent.",
     lambda s: s.memory_pct),
    ("system_swap_percent", "Swap use of this machine, in percent.", lambda s: s.swap_pct),
    ("system_temperature_celsius", "Hottest CPU temperature sensor, in degrees Celsius.",
     lambda s: s.temperature_c),
    ("event_loop_lag_seconds",
     "How late the engine's event loop ran a timer, in seconds: time it could not respond.",
     lambda s: None if s.loop_lag_ms is None else s.loop_lag_ms / 1000.0),
    ("concurrency_limit", "Calls allowed in flight at once (the regulator moves it).",
     lambda s: s.concurrency_limit),
    ("calls_in_flight", "Calls in flight now.", lambda s: s.calls_in_flight),
    ("dispatch_held", "1 while the regulator holds new dispatches back, else 0.",
     lambda s: float(s.dispatch_held)),
)

RENDER_ERRORS_HELP = ("Scrapes whose figures could not be rendered (an engine bug); "
                      "those scrapes showed only this counter.")


class _Families:
    """Gauge families by name, created on first sample: a family with no samples (no
    providers yet, every value unknown) is not exposed at all."""

    def __init__(self) -> None:
        self._by_name: dict[str, GaugeMetricFamily] = {}

    def add(self, name: str, help_text: str, value: float | None, **labels: str) -> None:
        if value is None or not math.isfinite(value):
            return  # unknown: a missing series says so better than NaN would
        family = self._by_name.get(name)
        if family is None:
            from prometheus_client.core import GaugeMetricFamily

            family = GaugeMetricFamily(PREFIX + name, help_text, labels=list(labels))
            self._by_name[name] = family
        family.add_metric(list(labels.values()), float(value))

    def one_hot(self, name: str, help_text: str, label: str, known: tuple[str, ...],
                current: str, **labels: str) -> None:
        # A state the engine added after this module was written still shows, as the 1.
        for value in known if current in known else (*known, current):
            self.add(name, help_text, float(value == current), **labels, **{label: value})

    def families(self) -> list[Metric]:
        return list(self._by_name.values())


def render(snapshot: MetricsSnapshot) -> list[Metric]:
    """The metric families for one snapshot."""
    out = _Families()
    for p in snapshot.providers:
        for name, help_text, value in PROVIDER_GAUGES:
            out.add(name, help_text, value(p), provider=p.provider)
        out.one_hot("provider_light", "1 for the provider's current light, 0 for the others.",
                    "light", LIGHTS, p.light, provider=p.provider)
        out.one_hot("provider_circuit_state",
                    "1 for the current state of the provider's circuit breaker, 0 for the "
                    "others.", "state", CIRCUIT_STATES, p.circuit, provider=p.provider)
    for name, help_text, value in GLOBAL_GAUGES:
        out.add(name, help_text, value(snapshot))
    out.one_hot("regulator_state",
                "1 for the regulator's current state (how loaded this machine is), 0 for "
                "the others.", "state", REGULATOR_STATES, snapshot.regulator_state)
    out.one_hot("response_mode",
                "1 for the current response mode (how much work stays local), 0 for the "
                "others.", "mode", RESPONSE_MODES, snapshot.response_mode)
    return out.families()


class _SnapshotCollector:
    """What prometheus_client calls on each scrape, on its HTTP thread.

    Duck-typed rather than a registry.Collector subclass, so that defining it does not
    import prometheus_client; without a describe() the registry never calls collect()
    before the first scrape.
    """

    def __init__(self, exporter: MetricsExporter) -> None:
        self._exporter = exporter
        self._render_errors = 0
        self._errors_lock = threading.Lock()  # one thread per scrape: += alone could lose one

    def collect(self) -> Iterator[Metric]:
        # One read of the reference: every figure of a scrape comes from the same snapshot.
        snapshot = self._exporter.snapshot
        if snapshot is None:
            return  # nothing measured yet: an empty, valid exposition
        try:
            families = render(snapshot)
        except Exception:
            # A bad figure must not reach wsgiref, which would print a traceback over the
            # cockpit; the counter makes the failure visible to whoever scrapes.
            with self._errors_lock:
                self._render_errors += 1
            families = []
        if self._render_errors:
            from prometheus_client.core import CounterMetricFamily

            yield CounterMetricFamily(PREFIX + "metrics_render_errors", RENDER_ERRORS_HELP,
                                      value=self._render_errors)
        yield from families


def exposure_warning(host: str) -> str | None:
    """One line for stderr when host is not a loopback address, else None."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None  # binding will fail and say so
    addresses = {info[4][0] for info in infos}
    if all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        return None
    return (f"warning: --metrics-host {host} is not loopback: /metrics (provider names, "
            "spending) is open to the network, without authentication; use 127.0.0.1 "
            "unless a firewall guards the port")


def _http_server(host: str, port: int, app: Any, *, idle_timeout_s: float,
                 max_connections: int) -> WSGIServer:
    """A threaded WSGI server bound to host:port (OSError when it cannot bind).

    What prometheus_client.start_http_server builds, minus its thread: we run the loop
    ourselves to choose the poll interval, and bound its connections in time and number.
    """
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    class Server(ThreadingWSGIServer):
        address_family = family  # "::1" needs an IPv6 socket
        request_queue_size = 64  # socketserver's 5 refuses a burst of scrapers

        def __init__(self, *args: Any, **kw: Any) -> None:
            self._open: dict[socket.socket, None] = {}  # insertion order: oldest first
            self._open_lock = threading.Lock()
            super().__init__(*args, **kw)

        def process_request(self, request: Any, client_address: Any) -> None:
            with self._open_lock:
                self._open[request] = None
                excess = list(self._open)[:max(0, len(self._open) - max_connections)]
            for old in excess:
                with contextlib.suppress(OSError):  # its handler sees EOF and ends
                    old.shutdown(socket.SHUT_RDWR)
            super().process_request(request, client_address)

        def shutdown_request(self, request: Any) -> None:
            with self._open_lock:
                self._open.pop(request, None)
            super().shutdown_request(request)

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a timed-out or cut client: a traceback would draw over the cockpit

    class QuietHandler(WSGIRequestHandler):
        timeout = idle_timeout_s  # per socket operation, so a slow reader is cut too

        def log_message(self, format: str, *args: Any) -> None:
            pass  # an access line on stderr per scrape would draw over the cockpit

    return make_server(host, port, app, Server, handler_class=QuietHandler)


class MetricsExporter:
    """Serves the latest snapshot at http://HOST:PORT/metrics from a daemon thread.

    Loopback by default: the figures name providers and spending, not for the network.
    """

    def __init__(self, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 idle_timeout_s: float = IDLE_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.host = host
        self.port = port  # 0: any free port; start() returns the one bound
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self._snapshot: MetricsSnapshot | None = None
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def snapshot(self) -> MetricsSnapshot | None:
        return self._snapshot

    def update(self, snapshot: MetricsSnapshot) -> None:
        """Publish a new snapshot. Safe from any thread without a lock: the snapshot is
        immutable and replaced whole, so a scrape sees the old one or the new one."""
        self._snapshot = snapshot

    @property
    def serving(self) -> bool:
        return self._server is not None

    def start(self) -> int:
        """Listen and serve; returns the bound port. Raises MetricsPortError when the
        address cannot be used."""
        if self._server is not None:
            raise RuntimeError("the metrics exporter is already serving")
        from prometheus_client import CollectorRegistry, make_wsgi_app

        # A registry of our own: the global one would collide between two exporters (tests)
        # and would expose whatever else in the process registered there.
        registry = CollectorRegistry()
        registry.register(_SnapshotCollector(self))
        try:
            server = _http_server(self.host, self.port, make_wsgi_app(registry),
                                  idle_timeout_s=self.idle_timeout_s,
                                  max_connections=self.max_connections)
        except OSError as exc:
            raise MetricsPortError(self._bind_failure(exc)) from exc
        thread = threading.Thread(target=server.serve_forever,
                                  kwargs={"poll_interval": STOP_POLL_S},
                                  name="aetherflow-metrics", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        return server.server_port

    def _bind_failure(self, exc: OSError) -> str:
        where = f"{self.host}:{self.port}"
        if exc.errno == errno.EADDRINUSE:
            return (f"cannot serve metrics on {where}: the port is already in use; "
                    "pick another with --metrics-port")
        if exc.errno == errno.EACCES:
            return (f"cannot serve metrics on {where}: permission denied (ports below 1024 "
                    "need privileges); pick another with --metrics-port")
        reason = exc.strerror or str(exc)
        return f"cannot serve metrics on {where}: {reason}; pick another with --metrics-port"

    def stop(self) -> None:
        """Stop serving and release the port. Does nothing when not serving."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()  # returns once serve_forever has left its loop: <= STOP_POLL_S
        server.server_close()
        if thread is not None:
            thread.join()

