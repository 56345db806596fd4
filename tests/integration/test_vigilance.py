"""Vigilance on the real engine: canaries, passive health, status pages, the regulator's
actions and the operator's manual ones, against scripted providers on 127.0.0.1.

Synchronisation is on engine events (with a timeout that only fails the test), never on
sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from aetherflow_tui.engine import Engine, config
from aetherflow_tui.engine.errors import DispatchHeld
from aetherflow_tui.engine.events import (
    AlertRaised,
    CanaryProbed,
    Event,
    ProviderHealthChanged,
    RegulatorDecided,
)
from aetherflow_tui.engine.health import Light
from aetherflow_tui.engine.progress import RunStatus
from tests.conftest import aetherflow_cmd
from tests.support import loopback
from tests.support.plans import (
    bouquet,
    chat_requests,
    engine_on,
    provider,
    step,
    tables,
    write_plan,
)
from tests.support.scripted_server import ScriptedServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "statuspages"


def vigilant(*, canary: dict[str, Any] | None = None, health: dict[str, Any] | None = None,
             **regulator: Any) -> str:
    """[canary], [health] and [regulator] on fast schedules, so a whole outage and recovery
    takes a second or two; `canary`, `health` and `regulator` change some of their keys."""
    return tables(canary={"interval_s": 60, "unhealthy_interval_s": 0.2, "daily_usd": 1.0,
                          **(canary or {})},
                  health={"failure_threshold": 2, "success_threshold": 2, **(health or {})},
                  regulator={"interval_s": 0.2, **regulator})


@pytest.fixture
def alpha():
    with ScriptedServer() as server:
        yield server


@pytest.fixture
def beta():
    with ScriptedServer() as server:
        yield server


def two_providers(alpha: ScriptedServer, beta: ScriptedServer, **alpha_settings: Any) -> str:
    # alpha is the cheaper: routing prefers it while it is up. "sum" answers the canary.
    return vigilant() + bouquet(
        provider("alpha", alpha.url, "sum", price_in=0.1, price_out=0.2, **alpha_settings),
        provider("beta", beta.url, "sum", price_in=1.0, price_out=2.0))


class Events:
    """Every engine event from now on; `until` waits for the next one that matches (each
    call looks only after the event the previous call returned)."""

    def __init__(self, engine: Engine) -> None:
        self.subscription = engine.bus.subscribe()
        self.seen: list[Event] = []
        self._cursor = 0

    async def until(self, predicate: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        for index in range(self._cursor, len(self.seen)):
            if predicate(self.seen[index]):
                self._cursor = index + 1
                return self.seen[index]
        self._cursor = len(self.seen)
        async with asyncio.timeout(timeout):
            async for event in self.subscription:
                self.seen.append(event)
                self._cursor = len(self.seen)
                if predicate(event):
                    return event
        raise AssertionError("unreachable")

    def lights(self, provider_id: str) -> list[str]:
        """The provider's light at each health event, repeats collapsed."""
        out: list[str] = []
        for event in self.seen:
            if (isinstance(event, ProviderHealthChanged)
                    and event.health.provider == provider_id
                    and (not out or out[-1] != event.health.light.value)):
                out.append(event.health.light.value)
        return out


def light_is(provider_id: str, light: Light) -> Callable[[Event], bool]:
    return lambda e: (isinstance(e, ProviderHealthChanged) and e.health.provider == provider_id
                      and e.health.light is light)


def first_choice(engine: Engine) -> str | None:
    route = engine.router.route("analysis", input_tokens=10, worst_input_tokens=100,
                                max_tokens=50)
    return route.best.provider.id if route.best else None


# -- canaries and the light ----------------------------------------------------------------


async def test_healthy_failing_recovered_the_light_and_routing_follow(alpha, beta, tmp_path):
    async with engine_on(tmp_path, two_providers(alpha, beta)) as engine:
        events = Events(engine)
        await engine.start_vigilance(role="test", status_pages=False)
        await events.until(light_is("alpha", Light.GREEN))
        assert first_choice(engine) == "alpha"

        alpha.script("status:503", "status:503", "status:503")
        await engine.probe(["alpha"])  # the outage starts: the first failed probe
        await events.until(light_is("alpha", Light.RED))
        assert first_choice(engine) == "beta"  # red: no real traffic
        assert "circuit open" in dict(engine.router.route(
            "analysis", input_tokens=10, worst_input_tokens=100, max_tokens=50
        ).excluded)["alpha/sum"]

        # The script runs out: the server answers again, probes pass, traffic comes back.
        await events.until(light_is("alpha", Light.GREEN))
        assert first_choice(engine) == "alpha"
    assert events.lights("alpha") == ["green", "orange", "red", "orange", "green"]
    alerts = [e for e in events.seen if isinstance(e, AlertRaised) and "alpha" in e.title]
    assert [a.title for a in alerts] == ["alpha is red", "alpha recovered"]
    with engine_db(tmp_path) as db:
        rows = db.execute("SELECT ok FROM health_samples WHERE provider = 'alpha' AND "
                          "source = 'canary' ORDER BY id").fetchall()
        assert [r[0] for r in rows][:4] == [1, 0, 0, 0]
        assert db.execute("SELECT COUNT(*) FROM alerts WHERE title = 'alpha is red'"
                          ).fetchone()[0] == 1


async def test_a_wrong_answer_is_a_failed_probe_and_says_why(alpha, tmp_path):
    text = vigilant() + bouquet(provider("alpha", alpha.url, "echo"))
    async with engine_on(tmp_path, text) as engine:
        (result,) = await engine.probe()
    assert not result.ok and not result.skipped
    assert "wrong answer" in result.reason and "expected 12" in result.reason
    assert engine.health.health("alpha").light is Light.ORANGE


async def test_canaries_are_charged_to_the_budget_and_capped(alpha, tmp_path):
    # One probe's worst case (256 tokens at $200/M out: $0.0512) fits the cap; the second
    # does not, once the first one's $0.0002 is spent.
    text = (vigilant(canary={"daily_usd": 0.0513})
            + bouquet(provider("alpha", alpha.url, "sum", price_in=0.0, price_out=200.0)))
    async with engine_on(tmp_path, text) as engine:
        (first,) = await engine.probe()
        (second,) = await engine.probe()
        await engine.sync_budget()
        spent = engine.guard.spent
    assert first.ok and first.usd and first.usd > 0
    assert second.skipped and "canary budget" in second.reason
    assert spent == pytest.approx(first.usd)  # in today's spend, like any call
    with engine_db(tmp_path) as db:
        rows = db.execute("SELECT purpose, usd FROM calls").fetchall()
    assert rows == [("canary", pytest.approx(first.usd))]


# -- passive: real traffic -----------------------------------------------------------------


async def test_real_traffic_stops_at_the_first_failure_until_a_probe_passes(alpha, beta,
                                                                           tmp_path):
    async with engine_on(tmp_path, two_providers(alpha, beta)) as engine:
        events = Events(engine)
        await engine.start_vigilance(role="test", canaries="recovery", status_pages=False)
        alpha.script("status:503")  # one failed real request, then alpha answers again
        plan = write_plan(tmp_path / "plan.json", step("s1", "first"))
        run = await engine.start_run(plan)
        await run.wait()
        # The failure opened alpha's circuit: s1 went to beta, and a canary let alpha back.
        assert run.step("s1").provider == "beta"
        probe = await events.until(lambda e: isinstance(e, CanaryProbed)
                                   and e.result.provider == "alpha")
        assert probe.result.ok
        assert engine.health.circuit("alpha").allows_traffic()
    sent = [r["body"]["model"] for r in chat_requests(alpha.requests)]
    # The failed step call, then the probe: nothing else went to alpha in between.
    assert len(sent) == 2
    assert "What is 7 + 5" in json.dumps(alpha.requests[1]["body"])


# -- status pages --------------------------------------------------------------------------


class _Pages(BaseHTTPRequestHandler):
    server: loopback.QuietHTTPServer

    def do_GET(self) -> None:
        body = self.server.owner.body
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class StatusPage(loopback.ThreadedServer):
    """Serves `body` (set it at will) at every path."""

    handler = _Pages
    body = b"{}"


@pytest.fixture
def status_page():
    with StatusPage() as server:
        yield server


async def test_a_status_page_outage_holds_traffic_until_a_probe_passes(alpha, beta,
                                                                       status_page, tmp_path):
    text = two_providers(alpha, beta, status_page=f"{status_page.url}/api/v2/summary.json")
    status_page.body = (FIXTURES / "major_outage.json").read_bytes()
    async with engine_on(tmp_path, text) as engine:
        events = Events(engine)
        await engine.provider_views()
        engine.health.circuit("alpha").canary_probes = True  # as vigilance sets it
        signals = await engine.read_status_pages()
        assert signals["alpha"].level == "outage"
        assert first_choice(engine) == "beta"  # held on the page's word...
        health = engine.health.health("alpha")
        assert health.light is Light.ORANGE and "traffic held" in health.reason
        await engine.probe(["alpha"])  # ...until our own probe says it answers
        assert first_choice(engine) == "alpha"
        assert engine.health.health("alpha").light is Light.ORANGE  # the page still says so

        status_page.body = b'{"status": [not json'
        signals = await engine.read_status_pages()
    assert not signals["alpha"].ok and "unreadable" in signals["alpha"].reason
    assert engine.health.health("alpha").status.reason.startswith("status page unreadable")
    await events.until(lambda e: isinstance(e, ProviderHealthChanged)
                       and e.health.status is not None and not e.health.status.ok)


# -- the regulator -------------------------------------------------------------------------


# Memory in use is always above 0.3%: with these thresholds the machine is CRITICAL, for
# certain, as soon as the regulator may say so.
ALWAYS_CRITICAL = {"stressed": {"memory_pct": 0.1}, "degraded": {"memory_pct": 0.2},
                   "critical": {"memory_pct": 0.3}}


async def test_a_critical_machine_acts_and_the_decision_is_explained(alpha, tmp_path):
    # hold_s = 0: this process may speak for the machine as soon as its window is full.
    text = vigilant(hold_s=0, **ALWAYS_CRITICAL) + bouquet(
        provider("alpha", alpha.url, "sum"), max_concurrency=64)
    async with engine_on(tmp_path, text) as engine:
        events = Events(engine)
        await engine.start_vigilance(role="test", canaries="off", status_pages=False)
        event = await events.until(lambda e: isinstance(e, RegulatorDecided))
        decision = event.decision
        assert decision.state.value == "critical"
        assert 0.0 <= decision.confidence <= 1.0
        assert "memory" in decision.reasoning.lower() and "CRITICAL" in decision.reasoning
        assert "memory_pct" in decision.metrics
        assert "concurrency cap 4" in decision.actions
        assert engine.concurrency.limit == 4
        await events.until(lambda e: isinstance(e, AlertRaised) and e.source == "regulator")
    with engine_db(tmp_path) as db:
        state, actions = db.execute("SELECT state, actions FROM decisions").fetchone()
    assert state == "critical" and "concurrency cap 4" in json.loads(actions)


async def test_the_first_samples_after_start_up_decide_nothing(alpha, tmp_path):
    """A new cockpit showed CRITICAL beside "CPU 2%": psutil's first reading, taken as the
    process started, judged alone with confidence 1.0. Now the window fills first."""
    text = vigilant(hold_s=0, window=4, **ALWAYS_CRITICAL) + bouquet(
        provider("alpha", alpha.url, "sum"))
    async with engine_on(tmp_path, text) as engine:
        events = Events(engine)
        vigilance = await engine.start_vigilance(role="test", canaries="off",
                                                 status_pages=False)
        event = await events.until(lambda e: isinstance(e, RegulatorDecided))
        samples = list(vigilance.samples)
    assert event.decision.state.value == "critical"
    assert len(samples) >= 4  # the window, as configured
    assert event.decision.ts >= samples[3].ts
    assert samples[0].cpu_pct is None  # too soon after psutil's priming call to mean a thing
    assert "4-sample mean" in event.decision.reasoning


async def test_a_process_speaks_for_the_machine_only_after_the_hold(alpha, tmp_path):
    """Before hold_s, the state acts in this process (its cap) and is published, but it is
    no row for `aetherflow status` or other processes, no alert, and opens no circuit."""
    text = vigilant(hold_s=1, window=1, **ALWAYS_CRITICAL) + bouquet(
        provider("alpha", alpha.url, "sum"), max_concurrency=64)
    async with engine_on(tmp_path, text) as engine:
        events = Events(engine)
        await engine.start_vigilance(role="test", canaries="off", status_pages=False)
        early = (await events.until(lambda e: isinstance(e, RegulatorDecided))).decision
        await engine.store.flush()
        assert early.state.value == "critical" and engine.concurrency.limit == 4
        assert await engine.store.decisions() == []
        assert not [e for e in events.seen if isinstance(e, AlertRaised)]
        assert not [a for a in early.actions if "circuits" in a]
        shared = (await events.until(lambda e: isinstance(e, RegulatorDecided))).decision
        await events.until(lambda e: isinstance(e, AlertRaised) and e.source == "regulator")
        await engine.store.flush()
        (row,) = await engine.store.decisions()
    assert shared.ts - early.ts >= 1.0 - 0.25  # the hold, less one tick
    assert shared.previous.value == "optimal"  # what the store knew from this process
    assert row["state"] == "critical"
    assert "no failing provider to cut off" in row["actions"]


async def test_a_short_command_records_no_state_and_opens_no_circuit(alpha, beta, tmp_path,
                                                                     cli_env):
    """A 0.2 s `aetherflow run` left "regulator CRITICAL ... opened circuits: flakyco" in
    `aetherflow status`, on one sample. A process that lives less than hold_s (15 s) keeps
    what it judged to itself."""
    # failure_threshold = 10: flakyco's history alone is not red.
    text = (vigilant(health={"failure_threshold": 10}, interval_s=0.05, window=1,
                     **ALWAYS_CRITICAL)
            + bouquet(provider("steady", alpha.url, "echo", price_in=0.1, price_out=0.2),
                      provider("flakyco", beta.url, "echo", price_in=1.0, price_out=2.0)))
    (tmp_path / "bouquet.toml").write_text(text)
    cli_env["AETHERFLOW_CONFIG"] = str(tmp_path / "bouquet.toml")
    cli_env["AETHERFLOW_HOME"] = str(tmp_path / "home")
    beta.script("status:503", "status:503", "status:503")
    async with engine_on(tmp_path, text) as engine:  # earlier traffic: flakyco failing
        for _ in range(3):
            outcome = await engine.ask("hello", provider="flakyco", model="echo")
            assert not outcome.ok
    plan = write_plan(tmp_path / "plan.json", step("s1", "hello"))
    done = await aetherflow(cli_env, "run", str(plan), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"][0]["provider"] == "steady"
    status = json.loads((await aetherflow(cli_env, "status", "--json")).stdout)
    assert status["regulator"] is None
    with engine_db(tmp_path) as db:
        assert db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM alerts WHERE source = 'regulator'"
                          ).fetchone()[0] == 0
    async with engine_on(tmp_path, text) as engine:
        assert engine.health.circuit("flakyco").allows_traffic()


async def test_a_refused_key_test_is_not_traffic(tmp_path, keyring_backend):
    """One refused key test made the error rate 100%, the machine CRITICAL and the cap 4."""
    from aetherflow_tui.engine.keys import KeyVault
    from aetherflow_tui.engine.regulator import actions_for

    with ScriptedServer(api_key="sk-test-right-key-0000000000") as server:
        text = vigilant(hold_s=0, window=1) + bouquet(
            provider("keyed", server.url, "echo", key="keyring"), max_concurrency=64)
        bq = config.parse(text, tmp_path / "bouquet.toml")
        async with Engine(bq, tmp_path / "home",
                          vault=KeyVault(backend=keyring_backend)) as engine:
            vigilance = await engine.start_vigilance(role="test", canaries="off",
                                                     status_pages=False)
            check = await engine.inject_key("keyed", "sk-wrong-key-000000000000")
            assert check.reason.startswith("the key was refused")
            await vigilance.tick()
            sample = vigilance.samples[-1]
            judged = vigilance.regulator.last
            machine = vigilance.machine.state
            limit = engine.concurrency.limit
    assert sample.error_rate_pct is None
    assert judged is not None and judged.driver != "error_rate_pct"
    assert "error_rate_pct" not in judged.metrics
    assert limit == actions_for(machine, max_concurrency=64,
                                cores=vigilance.sampler.cores).concurrency


async def test_an_error_rate_needs_ten_calls_and_never_throttles_local_work(alpha, tmp_path):
    """Real failing traffic: nine calls are no rate; ten at 100% make the state CRITICAL,
    which opens failing circuits, while the cap and the local throttle follow the
    machine's own signals."""
    from aetherflow_tui.engine.regulator import actions_for
    from aetherflow_tui.engine.vigilance import MIN_ERROR_CALLS

    text = vigilant(hold_s=0, window=1) + bouquet(
        provider("alpha", alpha.url, "echo"), max_concurrency=64)
    async with engine_on(tmp_path, text) as engine:
        vigilance = await engine.start_vigilance(role="test", canaries="off",
                                                 status_pages=False)
        alpha.script(*["status:503"] * MIN_ERROR_CALLS)
        for _ in range(MIN_ERROR_CALLS - 1):
            assert not (await engine.ask("hello", provider="alpha", model="echo")).ok
        await vigilance.tick()
        assert vigilance.samples[-1].error_rate_pct is None
        assert not (await engine.ask("hello", provider="alpha", model="echo")).ok
        decision = await vigilance.tick()
        while decision is None or decision.state.value != "critical":
            decision = await vigilance.tick()  # a busy machine may have moved first
        machine = vigilance.machine.state
        actions = vigilance.actions
    assert vigilance.samples[-1].error_rate_pct == 100.0
    assert "Error rate 100%" in decision.reasoning
    expected = actions_for(machine, max_concurrency=64, cores=vigilance.sampler.cores)
    assert actions is not None
    assert (actions.concurrency, actions.local_threads, actions.local_duty,
            actions.local_paused, actions.prefer_apis) == (
        expected.concurrency, expected.local_threads, expected.local_duty,
        expected.local_paused, expected.prefer_apis)
    assert actions.open_failing_circuits


# -- manual actions ------------------------------------------------------------------------


async def test_emergency_stop_cancels_runs_holds_dispatch_and_survives_a_restart(alpha,
                                                                               tmp_path):
    text = vigilant() + bouquet(provider("alpha", alpha.url, "sum"))
    plan = write_plan(tmp_path / "plan.json", step("slow", "@@slow:30@@ wait"))
    async with engine_on(tmp_path, text) as engine:
        run = await engine.start_run(plan)
        await asyncio.to_thread(alpha.wait_for, lambda s: s.in_flight >= 1)
        detail = await engine.emergency_stop("drill")
        assert "1 run(s) cancelled" in detail
        assert (await run.wait()).status is RunStatus.HELD
        with pytest.raises(DispatchHeld, match="drill"):
            await engine.ask("hello", provider="alpha", model="sum")
    async with engine_on(tmp_path, text) as engine:  # another process, later
        assert engine.held == "drill"
        with pytest.raises(DispatchHeld):
            await engine.start_run(plan)
        assert await engine.resume_dispatch() == "dispatch resumed"
    async with engine_on(tmp_path, text) as engine:
        assert engine.held is None
        outcome = await engine.ask("What is 2 + 2?", provider="alpha", model="sum")
        assert outcome.ok and outcome.result.text == "4"


async def test_reset_and_throttle(alpha, beta, tmp_path):
    async with engine_on(tmp_path, two_providers(alpha, beta)) as engine:
        alpha.script("status:503", "status:503")
        await engine.probe(["alpha"])
        await engine.probe(["alpha"])
        assert engine.health.health("alpha").light is Light.RED
        assert engine.reset_circuits("alpha") == ["alpha"]
        health = engine.health.health("alpha")
        assert health.light is Light.ORANGE and "reset by the operator" in health.reason
        assert engine.health.circuit("alpha").allows_traffic()

        engine.emergency_throttle(3)
        assert engine.concurrency.limit == 3 and engine.manual_cap == 3
        await engine.force_optimisation()  # lifts the operator's throttle
        assert engine.manual_cap is None and engine.concurrency.limit == 64


async def test_controls_from_the_command_line_reach_a_live_process(alpha, tmp_path,
                                                                   cli_env):
    # The live engine runs here; `aetherflow stop` and `resume` run as real processes.
    text = vigilant() + bouquet(provider("alpha", alpha.url, "sum"))
    (tmp_path / "bouquet.toml").write_text(text)
    cli_env["AETHERFLOW_CONFIG"] = str(tmp_path / "bouquet.toml")
    cli_env["AETHERFLOW_HOME"] = str(tmp_path / "home")
    async with engine_on(tmp_path, text) as live:
        events = Events(live)
        await live.start_vigilance(role="cockpit", canaries="off", status_pages=False)
        stop = await aetherflow(cli_env, "stop", "--yes", "--reason", "drill")
        assert stop.returncode == 0, stop.stderr
        assert "emergency stop recorded" in stop.stdout
        assert f"pid {os.getpid()} (cockpit):" in stop.stdout
        assert "dispatch held" in stop.stdout
        assert live.held == "drill"
        await events.until(lambda e: isinstance(e, AlertRaised) and e.title == "EMERGENCY STOP")

        status = await aetherflow(cli_env, "status", "--json")
        assert json.loads(status.stdout)["dispatch"] == {"held": True, "reason": "drill"}
        refused = await aetherflow(cli_env, "probe")
        assert refused.returncode == 3 and "dispatch is held" in refused.stderr

        resume = await aetherflow(cli_env, "resume")
        assert resume.returncode == 0 and "dispatch resumed" in resume.stdout
        assert live.held is None


async def test_destructive_controls_want_confirmation(cli_env):
    done = await aetherflow(cli_env, "stop")  # stdin is not a terminal, and no --yes
    assert done.returncode == 2 and "needs confirmation" in done.stderr
    done = await aetherflow(cli_env, "throttle", "zero")
    assert done.returncode == 2 and "not a positive whole number" in done.stderr


async def aetherflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        *aetherflow_cmd(), *args, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return subprocess.CompletedProcess(args, process.returncode or 0, out.decode(),
                                       err.decode())


# -- Prometheus ----------------------------------------------------------------------------


async def test_metrics_port_exposes_health_spend_and_the_regulator(alpha, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    text = vigilant() + bouquet(provider("alpha", alpha.url, "sum"))
    async with engine_on(tmp_path, text) as engine:
        events = Events(engine)
        vigilance = await engine.start_vigilance(role="test", status_pages=False,
                                                 metrics_port=0)
        await events.until(light_is("alpha", Light.GREEN))
        await vigilance.tick()
        port = engine.metrics_port
        async with httpx.AsyncClient() as client:
            body = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body) for s in family.samples}
    assert samples[("aetherflow_provider_up", (("provider", "alpha"),))] == 1.0
    assert samples[("aetherflow_regulator_state", (("state", "optimal"),))] in (0.0, 1.0)
    assert ("aetherflow_spend_usd_today", ()) in samples
    assert samples[("aetherflow_provider_health_score", (("provider", "alpha"),))] == 1.0


# -- helpers -------------------------------------------------------------------------------


@contextlib.contextmanager
def engine_db(tmp_path: Path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "home" / "aetherflow.db")
    try:
        yield db
    finally:
        db.close()
