"""The Prometheus exporter over real HTTP on 127.0.0.1: what a scrape sees, port handling."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aetherflow_tui.engine.health import CircuitState, Light
from aetherflow_tui.engine.metrics import (
    CIRCUIT_STATES,
    LIGHTS,
    MAX_CONNECTIONS,
    RESPONSE_MODES,
    MetricsExporter,
    MetricsPortError,
    MetricsSnapshot,
    ProviderMetrics,
    exposure_warning,
)
from aetherflow_tui.engine.modes import ResponseMode
from tests.conftest import REPO_ROOT

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

MISTRAL = ProviderMetrics(
    provider="mistral", light="green", score=0.82, circuit="closed", canary_latency_s=0.41,
    canary_ok=True, success_ratio=0.95, latency_ewma_s=1.25, spend_usd_today=0.125,
    energy_wh_today=3.5,
)
GROQ = ProviderMetrics(
    provider="groq", light="grey", score=None, circuit="half-open", canary_latency_s=None,
    canary_ok=None, success_ratio=None, latency_ewma_s=None, spend_usd_today=0.0,
    energy_wh_today=0.0,
)
SNAPSHOT = MetricsSnapshot(
    ts=1_700_000_000.5, providers=(MISTRAL, GROQ), spend_usd_today=0.25,
    budget_usd_daily=2.0, energy_wh_today=4.75, gco2e_today=1.5, canary_usd_today=0.0625,
    regulator_state="stressed", regulator_confidence=0.7, cpu_pct=63.5, memory_pct=71.0,
    swap_pct=None, temperature_c=None, loop_lag_ms=12.5, concurrency_limit=4,
    calls_in_flight=3, response_mode="hybrid", dispatch_held=False,
)


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def _get(port: int) -> httpx.Response:
    # trust_env=False: a proxy from the environment must not stand between us and loopback.
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        return client.get(f"http://127.0.0.1:{port}/metrics")


def _scrape(port: int) -> Samples:
    response = _get(port)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        assert family.documentation, f"{family.name} has no HELP text"
        for sample in family.samples:
            samples[_key(sample.name, **sample.labels)] = sample.value
    return samples


def _names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@pytest.fixture
def exporter() -> Iterator[MetricsExporter]:
    exp = MetricsExporter(port=0)
    exp.start()
    yield exp
    exp.stop()


def _port(exp: MetricsExporter) -> int:
    server = exp._server
    assert server is not None
    return server.server_port


def test_importing_the_module_does_not_load_prometheus_client() -> None:
    probe = ("import sys, aetherflow_tui.engine.metrics\n"
             "print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=REPO_ROOT).stdout
    assert out.strip() == "False"


def test_one_hot_values_mirror_the_engine_enums() -> None:
    assert set(LIGHTS) == {light.value for light in Light}
    assert set(CIRCUIT_STATES) == {state.value for state in CircuitState}
    assert set(RESPONSE_MODES) == {mode.value for mode in ResponseMode}


def test_start_returns_the_bound_port() -> None:
    exp = MetricsExporter(port=0)
    port = exp.start()
    try:
        assert port > 0
        assert port == _port(exp)
        assert _get(port).status_code == 200
    finally:
        exp.stop()


def test_before_the_first_update_a_scrape_is_empty_but_valid(
        exporter: MetricsExporter) -> None:
    assert _scrape(_port(exporter)) == {}


def test_a_scrape_shows_the_snapshot_exactly(exporter: MetricsExporter) -> None:
    exporter.update(SNAPSHOT)
    got = _scrape(_port(exporter))

    m = {"provider": "mistral"}
    assert got[_key("aetherflow_provider_health_score", **m)] == 0.82
    assert got[_key("aetherflow_provider_up", **m)] == 1.0
    assert got[_key("aetherflow_provider_circuit_open", **m)] == 0.0
    assert got[_key("aetherflow_provider_canary_ok", **m)] == 1.0
    assert got[_key("aetherflow_provider_canary_latency_seconds", **m)] == 0.41
    assert got[_key("aetherflow_provider_success_ratio", **m)] == 0.95
    assert got[_key("aetherflow_provider_latency_ewma_seconds", **m)] == 1.25
    assert got[_key("aetherflow_provider_spend_usd_today", **m)] == 0.125
    assert got[_key("aetherflow_provider_energy_wh_today", **m)] == 3.5
    for light in LIGHTS:
        expected = 1.0 if light == "green" else 0.0
        assert got[_key("aetherflow_provider_light", light=light, **m)] == expected
    for state in CIRCUIT_STATES:
        expected = 1.0 if state == "closed" else 0.0
        assert got[_key("aetherflow_provider_circuit_state", state=state, **m)] == expected

    # groq: grey and mostly unknown. Unknowns are absent, not NaN.
    g = {"provider": "groq"}
    assert got[_key("aetherflow_provider_light", light="grey", **g)] == 1.0
    assert got[_key("aetherflow_provider_light", light="green", **g)] == 0.0
    assert got[_key("aetherflow_provider_circuit_state", state="half-open", **g)] == 1.0
    assert got[_key("aetherflow_provider_circuit_open", **g)] == 0.0  # a probe may go through
    assert got[_key("aetherflow_provider_spend_usd_today", **g)] == 0.0
    for absent in ("aetherflow_provider_up", "aetherflow_provider_health_score",
                   "aetherflow_provider_canary_ok", "aetherflow_provider_canary_latency_seconds",
                   "aetherflow_provider_success_ratio",
                   "aetherflow_provider_latency_ewma_seconds"):
        assert _key(absent, **g) not in got, absent
    assert all(value == value for value in got.values())  # no NaN anywhere

    assert got[_key("aetherflow_snapshot_timestamp_seconds")] == 1_700_000_000.5
    assert got[_key("aetherflow_spend_usd_today")] == 0.25
    assert got[_key("aetherflow_budget_usd_daily")] == 2.0
    assert got[_key("aetherflow_energy_wh_today")] == 4.75
    assert got[_key("aetherflow_gco2e_today")] == 1.5
    assert got[_key("aetherflow_canary_spend_usd_today")] == 0.0625
    assert got[_key("aetherflow_regulator_confidence")] == 0.7
    assert got[_key("aetherflow_system_cpu_percent")] == 63.5
    assert got[_key("aetherflow_system_memory_percent")] == 71.0
    assert got[_key("aetherflow_event_loop_lag_seconds")] == 0.0125
    assert got[_key("aetherflow_concurrency_limit")] == 4.0
    assert got[_key("aetherflow_calls_in_flight")] == 3.0
    assert got[_key("aetherflow_dispatch_held")] == 0.0
    assert "aetherflow_system_swap_percent" not in _names(got)
    assert "aetherflow_system_temperature_celsius" not in _names(got)
    assert got[_key("aetherflow_regulator_state", state="stressed")] == 1.0
    for state in ("optimal", "degraded", "critical"):
        assert got[_key("aetherflow_regulator_state", state=state)] == 0.0
    assert got[_key("aetherflow_response_mode", mode="hybrid")] == 1.0
    for mode in ("bouquet", "survival"):
        assert got[_key("aetherflow_response_mode", mode=mode)] == 0.0
    assert "aetherflow_metrics_render_errors_total" not in _names(got)


def test_a_new_snapshot_replaces_the_old_one(exporter: MetricsExporter) -> None:
    port = _port(exporter)
    exporter.update(SNAPSHOT)
    assert _scrape(port)[_key("aetherflow_provider_up", provider="mistral")] == 1.0

    worse = replace(MISTRAL, light="orange", score=0.4, circuit="open", canary_ok=False)
    exporter.update(replace(
        SNAPSHOT, ts=1_700_000_001.5, providers=(worse,), regulator_state="critical",
        temperature_c=88.0, cpu_pct=None, response_mode="survival", dispatch_held=True,
        loop_lag_ms=None,
    ))
    got = _scrape(port)

    m = {"provider": "mistral"}
    assert got[_key("aetherflow_provider_up", **m)] == 0.5
    assert got[_key("aetherflow_provider_health_score", **m)] == 0.4
    assert got[_key("aetherflow_provider_circuit_open", **m)] == 1.0
    assert got[_key("aetherflow_provider_canary_ok", **m)] == 0.0
    assert got[_key("aetherflow_provider_light", light="orange", **m)] == 1.0
    assert got[_key("aetherflow_provider_light", light="green", **m)] == 0.0
    assert got[_key("aetherflow_provider_circuit_state", state="open", **m)] == 1.0
    # A provider no longer in the snapshot is gone from the scrape.
    assert not any(dict(labels).get("provider") == "groq" for _, labels in got)
    assert got[_key("aetherflow_snapshot_timestamp_seconds")] == 1_700_000_001.5
    assert got[_key("aetherflow_system_temperature_celsius")] == 88.0
    assert "aetherflow_system_cpu_percent" not in _names(got)
    assert "aetherflow_event_loop_lag_seconds" not in _names(got)
    assert got[_key("aetherflow_dispatch_held")] == 1.0
    assert got[_key("aetherflow_regulator_state", state="critical")] == 1.0
    assert got[_key("aetherflow_regulator_state", state="stressed")] == 0.0
    assert got[_key("aetherflow_response_mode", mode="survival")] == 1.0
    assert got[_key("aetherflow_response_mode", mode="hybrid")] == 0.0


def test_a_state_this_module_does_not_know_still_shows(exporter: MetricsExporter) -> None:
    exporter.update(replace(SNAPSHOT, regulator_state="melting"))
    got = _scrape(_port(exporter))
    assert got[_key("aetherflow_regulator_state", state="melting")] == 1.0
    for state in ("optimal", "stressed", "degraded", "critical"):
        assert got[_key("aetherflow_regulator_state", state=state)] == 0.0


def test_label_values_are_escaped(exporter: MetricsExporter) -> None:
    odd = 'we"ird\\id\nx'
    exporter.update(replace(SNAPSHOT, providers=(replace(MISTRAL, provider=odd),)))
    got = _scrape(_port(exporter))
    assert got[_key("aetherflow_provider_health_score", provider=odd)] == 0.82


def test_nan_is_left_out_like_none(exporter: MetricsExporter) -> None:
    exporter.update(replace(SNAPSHOT, cpu_pct=float("nan"),
                            providers=(replace(MISTRAL, score=float("inf")),)))
    got = _scrape(_port(exporter))
    assert "aetherflow_system_cpu_percent" not in _names(got)
    assert _key("aetherflow_provider_health_score", provider="mistral") not in got
    assert got[_key("aetherflow_system_memory_percent")] == 71.0


def test_a_figure_that_cannot_render_is_counted_not_raised(
        exporter: MetricsExporter) -> None:
    port = _port(exporter)
    exporter.update(replace(SNAPSHOT, cpu_pct="busy"))  # type: ignore[arg-type]
    got = _scrape(port)
    assert got == {_key("aetherflow_metrics_render_errors_total"): 1.0}

    exporter.update(SNAPSHOT)
    got = _scrape(port)
    assert got[_key("aetherflow_metrics_render_errors_total")] == 1.0
    assert got[_key("aetherflow_system_cpu_percent")] == 63.5


def test_a_port_in_use_raises_a_clear_error(exporter: MetricsExporter) -> None:
    port = _port(exporter)
    second = MetricsExporter(port=port)
    with pytest.raises(MetricsPortError) as caught:
        second.start()
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "already in use" in message
    assert "--metrics-port" in message
    assert "\n" not in message
    assert not second.serving
    second.stop()  # harmless when it never started
    exporter.update(SNAPSHOT)  # the first one still serves
    assert _key("aetherflow_spend_usd_today") in _scrape(port)


def test_stop_frees_the_port() -> None:
    first = MetricsExporter(port=0)
    port = first.start()
    thread = first._thread
    assert thread is not None and thread.is_alive()
    # Held here so that only stop(), not the garbage collector, can close the socket.
    server = first._server
    first.stop()
    assert server is not None
    assert not thread.is_alive()
    assert not first.serving
    with pytest.raises(httpx.ConnectError):
        _get(port)

    again = MetricsExporter(port=port)
    try:
        assert again.start() == port
        again.update(SNAPSHOT)
        assert _scrape(port)[_key("aetherflow_budget_usd_daily")] == 2.0
    finally:
        again.stop()


def test_start_twice_is_refused(exporter: MetricsExporter) -> None:
    with pytest.raises(RuntimeError):
        exporter.start()


def _other_local_addresses() -> list[str]:
    """This machine's addresses outside loopback (link-local IPv6 needs a scope: skipped)."""
    found = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(addr.address.split("%")[0])
            if not ip.is_loopback and not ip.is_link_local:
                found.append(str(ip))
    return found


def test_listens_on_loopback_only(exporter: MetricsExporter) -> None:
    others = _other_local_addresses()
    if not others:
        pytest.skip("this machine has no address outside loopback")
    port = _port(exporter)
    for address in others:
        # The kernel answers a connection to one of its own addresses at once: refused
        # when nothing listens there, accepted if the exporter listened on all interfaces.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, port), timeout=5.0).close()


# -- idle connections and exposure -----------------------------------------------------------


def _established_at(port: int) -> int:
    """This process's accepted sockets on port that are still open (the server's side)."""
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def test_a_pile_of_idle_connections_is_bounded_and_scrapes_still_succeed(
        exporter: MetricsExporter) -> None:
    port = _port(exporter)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5.0) for _ in range(150)]
    try:
        # Accepted after the 150 (the backlog is first come, first served).
        assert _get(port).status_code == 200
        # Each connection the server holds is a thread and a descriptor: they stay bounded.
        assert _established_at(port) <= MAX_CONNECTIONS
        assert _scrape(port) == {}
        # The oldest were closed to make room: they read the end of the stream.
        assert idle[0].recv(1) == b""
    finally:
        for sock in idle:
            sock.close()


def test_an_idle_connection_is_closed_after_the_idle_timeout() -> None:
    exp = MetricsExporter(port=0, idle_timeout_s=0.3)
    port = exp.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
            sock.sendall(b"GET /metr")  # a request that never ends
            sock.settimeout(3.0)  # without the idle timeout this recv raises TimeoutError
            assert sock.recv(1) == b""
        assert _get(port).status_code == 200
    finally:
        exp.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "2001:db8::1"])
def test_a_host_outside_loopback_gets_a_one_line_warning(host: str) -> None:
    warning = exposure_warning(host)
    assert warning is not None and "\n" not in warning
    assert f"--metrics-host {host} is not loopback" in warning


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_get_no_warning(host: str) -> None:
    assert exposure_warning(host) is None
