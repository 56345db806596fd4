"""Pane 5 and the operator's manual actions: o, h, c, C, !, R, p.

The pane is driven by SystemSampled and RegulatorDecided events published through the
engine's own bus with fixed values (tests/support/cockpit_fixture.py), as a running
regulator would publish them; the actions go to the real engine, and the probe to a
ScriptedServer on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest
from keyrings.alt.file import PlaintextKeyring
from textual.widgets import DataTable, Input, Sparkline

from aetherflow_tui.app import CockpitApp
from aetherflow_tui.engine import Engine, config
from aetherflow_tui.engine.events import AlertRaised, ProviderHealthChanged
from aetherflow_tui.engine.health import CircuitState, ProbeResult, StatusSignal
from aetherflow_tui.engine.keys import KeyVault, Secret
from aetherflow_tui.engine.progress import RunStatus
from aetherflow_tui.engine.regulator import SystemState
from aetherflow_tui.widgets.confirm import ConfirmScreen
from aetherflow_tui.widgets.help import HelpScreen
from aetherflow_tui.widgets.providers import COLUMNS, NARROW_COLUMNS
from aetherflow_tui.widgets.system import NO_TEMPERATURE, NOT_RUNNING, SystemPane
from aetherflow_tui.widgets.throttle_modal import ThrottleModal
from tests.conftest import TEST_KEY
from tests.integration.test_run_cli import ended, held_plan, run_in_flight
from tests.support.cockpit_fixture import (
    FIXED_NOW,
    fixture_engine,
    publish_system,
    stressed_decision,
    system_samples,
)
from tests.support.plans import bouquet, provider
from tests.support.scripted_server import ScriptedServer
from tests.tui.screen import screen_text, settle, until
from tests.tui.test_pilot import SIZE, Notes, engine_on, select, table
from tests.tui.test_steps_pane import write_plan

HOSTILE = "[bold red]x[/] [@click=app.quit]q[/]"


@pytest.fixture
def cockpit_engine(tmp_path: Path) -> Engine:
    return fixture_engine(tmp_path)


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch):
    """Decision times are local: pin the zone so the text is known."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def keyed_engine(scripted: ScriptedServer, tmp_path: Path) -> Engine:
    """The Pilot bouquet: `scripted` with its key in the keyring, `envkey` in the env."""
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring" / "keyring_pass.cfg")
    vault = KeyVault(backend=backend, environ={"ENVKEY_API_KEY": TEST_KEY})
    vault.store("scripted", Secret(TEST_KEY))
    return engine_on(scripted, vault, tmp_path)


def pane(app: CockpitApp) -> SystemPane:
    return app.query_one(SystemPane)


def pane_text(app: CockpitApp) -> str:
    """Pane 5 on screen, its frame included (the right-hand column of the wide layout)."""
    lines = [line[96:] for line in screen_text(app).splitlines()]
    top = next(i for i, line in enumerate(lines) if "5 System" in line)
    bottom = next(i for i, line in enumerate(lines) if i > top and line.startswith("╰"))
    return "\n".join(lines[top:bottom + 1])


# -- the pane ----------------------------------------------------------------------------


async def test_without_the_regulator_the_pane_says_so_and_shows_no_numbers(cockpit_engine):
    assert cockpit_engine.vigilance is None
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        system = pane(app)
        assert NOT_RUNNING in pane_text(app)
        assert system.has_class("-empty")
        assert not system.query_one("#system-full").region
        shown = pane_text(app)
        assert "no machine figures until it runs" in shown
        for figure in ("CPU", "RAM", "memory", "%", "decision", "samples"):
            assert figure not in shown, figure


async def test_published_samples_and_a_decision_fill_the_pane(cockpit_engine, utc):
    app = CockpitApp(cockpit_engine)
    samples = system_samples()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        publish_system(cockpit_engine, samples, stressed_decision())
        system = pane(app)
        await until(pilot, lambda: system.decision is not None and len(system.samples) == 60,
                    what="the events to reach the pane")
        await settle(pilot)
        shown = pane_text(app)
        last = samples[-1]
        assert last.cpu_pct == 99.0 and last.memory_pct == pytest.approx(62.13)
        for text in (" STRESSED ", "CPU 99%", "RAM 62%", "temp 72 °C", "38–99%",
                     "CPU 99% · load 1.00/core · memory 62% · swap 3%",
                     "loop lag 2 ms · errors 4.0% · p50 920 ms",
                     "last decision at 11:59:46 (14 s ago)",
                     "STRESSED from OPTIMAL · confidence 82%",
                     "CPU 87% (5-sample mean) is above the STRESSED threshold of",
                     "→ concurrency cap 4", "→ local inference: 7 thread(s) at 75% duty",
                     "last 60 samples · 59 s"):
            assert text in shown, (text, shown)
        assert NOT_RUNNING not in shown and NO_TEMPERATURE not in shown
        assert system.query_one("#cpu-spark", Sparkline).data == [s.cpu_pct for s in samples]
        assert system.query_one("#temp-spark", Sparkline).data == [
            s.temperature_c for s in samples]


async def test_without_a_temperature_sensor_the_pane_says_so(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        publish_system(cockpit_engine, system_samples(temperature=False))
        await until(pilot, lambda: len(pane(app).samples) == 60, what="the samples")
        await settle(pilot)
        shown = pane_text(app)
        assert NO_TEMPERATURE in shown
        assert "temp " not in shown and "°C" not in shown
        assert not pane(app).query_one("#temp-row").display
        assert "CPU 99%" in shown  # the rest is there
        assert "no decision yet" not in shown  # nothing running to decide


async def test_a_burst_of_events_is_one_repaint_and_each_sample_at_most_one(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    samples = system_samples()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        system = pane(app)
        before = system.repaints
        publish_system(cockpit_engine, samples[:30], stressed_decision())
        await until(pilot, lambda: system.decision is not None, what="the burst")
        await settle(pilot)
        assert system.repaints - before == 1
        for count, sample in enumerate(samples[30:], start=31):
            before = system.repaints
            publish_system(cockpit_engine, [sample])
            await until(pilot, lambda n=count: len(system.samples) == n, what="the sample")
            await settle(pilot)
            assert system.repaints - before == 1


async def test_the_pane_waits_under_a_dialog_and_catches_up_after(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        system = pane(app)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        before = system.repaints
        publish_system(cockpit_engine, system_samples(count=5))
        await until(pilot, lambda: len(system.samples) == 5, what="the samples")
        await settle(pilot)
        assert system.repaints == before  # covered: not painted
        await pilot.press("escape")
        await until(pilot, lambda: system.repaints == before + 1,
                    what="the cockpit's tick to repaint the pane")
        assert "CPU " in pane_text(app)


async def test_hostile_reasoning_actions_and_alerts_show_literally(cockpit_engine):
    notes = Notes()
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE, notifications=True, message_hook=notes) as pilot:
        await settle(pilot)
        decision = replace(stressed_decision(reasoning=f"because {HOSTILE}"),
                           actions=(f"did {HOSTILE}",))
        publish_system(cockpit_engine, system_samples(count=3), decision)
        cockpit_engine.bus.publish(AlertRaised(FIXED_NOW, "error", f"title {HOSTILE}",
                                               f"said {HOSTILE}", "regulator"))
        await until(pilot, lambda: notes.any("said"), what="the alert")
        await settle(pilot)
        assert app.is_running
        shown = pane_text(app)
        assert f"because {HOSTILE}" in shown
        assert f"→ did {HOSTILE}" in shown
        (alert,) = [n for n in notes.all if n.message.startswith("said")]
        assert alert.message == f"said {HOSTILE}" and alert.title == f"title {HOSTILE}"
        assert alert.severity == "error" and not alert.markup
        toast = screen_text(app)
        for piece in ("[bold red]x[/]", "[@click=app.quit]q[/]"):
            assert piece in toast, piece


async def test_an_unknown_alert_severity_is_a_warning(cockpit_engine):
    notes = Notes()
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await settle(pilot)
        cockpit_engine.bus.publish(AlertRaised(FIXED_NOW, "critical", "odd", "odd one",
                                               "health"))
        await until(pilot, lambda: notes.any("odd one"), what="the alert")
        assert notes.any("odd one", "warning")


# -- !, R: emergency stop and resume ---------------------------------------------------


async def test_bang_asks_then_holds_dispatch_and_cancels_runs_and_R_resumes(keyed_engine,
                                                                           tmp_path):
    plan = write_plan(tmp_path, "@@hang@@ never answers", "after it")
    engine = keyed_engine
    notes = Notes()
    app = CockpitApp(engine)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await settle(pilot)
        await pilot.press("R")  # nothing held: says so
        await settle(pilot)
        assert notes.any("dispatch is not held", "warning")

        run = await engine.start_run(plan)
        await until(pilot, lambda: engine.busy() == 1, what="the call to start")
        await pilot.press("exclamation_mark")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Cancel 1 run(s) in progress" in screen_text(app)
        await pilot.press("n")
        await settle(pilot)
        assert engine.held is None and run.view().status is RunStatus.RUNNING

        await pilot.press("exclamation_mark", "y")
        await until(pilot, lambda: engine.held is not None, what="dispatch to be held")
        await settle(pilot)
        assert run.view().status is RunStatus.HELD
        assert engine.active_runs() == []
        assert notes.any("1 run(s) cancelled, local generation stopped, dispatch held",
                         "error")
        await until(pilot, lambda: "DISPATCH HELD" in app.sub_title, what="the header")
        await until(pilot, lambda: "DISPATCH HELD" in pane_text(app), what="the badge")
        assert "emergency stop by the operator (cockpit)" in pane_text(app)

        await pilot.press("exclamation_mark")  # already held: no second dialog
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert notes.any("dispatch is already held", "warning")

        await pilot.press("R")
        await settle(pilot)
        assert engine.held is None
        assert notes.any("resumed by the operator", "information")
        await until(pilot, lambda: "DISPATCH HELD" not in app.sub_title, what="the header")
        await until(pilot, lambda: "DISPATCH HELD" not in pane_text(app), what="the badge")


async def test_the_narrow_pane_shows_the_hold(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        publish_system(cockpit_engine, system_samples(count=3), stressed_decision())
        await pilot.press("exclamation_mark", "y")
        await until(pilot, lambda: cockpit_engine.held is not None, what="the hold")
        await until(pilot, lambda: "HELD" in pane(app).query_one("#system-compact")
                    .render().plain, what="the compact line")
        line = next(line for line in screen_text(app).splitlines() if "STRESSED" in line)
        assert " STRESSED   HELD  CPU" in line


# -- c, C: circuits ----------------------------------------------------------------------


async def test_c_resets_the_selected_circuit_and_says_when_there_is_nothing_to_reset(
        cockpit_engine):
    notes = Notes()
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await settle(pilot)
        assert table(app).get_cell("deepseek", "circuit").plain == "open"
        await pilot.press("c")  # groq, closed
        await pilot.pause()
        assert notes.any("groq's circuit is closed: nothing to reset", "warning")
        select(app, "deepseek")
        await pilot.press("c")
        await settle(pilot)
        assert cockpit_engine.health.circuit("deepseek").state is CircuitState.CLOSED
        await until(pilot, lambda: table(app).get_cell("deepseek", "circuit").plain
                    == "closed", what="the row to show the circuit closed")
        assert notes.any("deepseek", "warning")  # the engine's "circuits reset" alert
        assert [n.title for n in notes.all][-1] == "circuits reset"


async def test_shift_c_resets_every_circuit_after_asking(cockpit_engine):
    notes = Notes()
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await settle(pilot)
        await pilot.press("C")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Not closed now: deepseek." in screen_text(app)
        await pilot.press("n")
        await pilot.pause()
        assert cockpit_engine.health.circuit("deepseek").state is CircuitState.OPEN
        await pilot.press("C", "y")
        await settle(pilot)
        assert all(cockpit_engine.health.circuit(p).state is CircuitState.CLOSED
                   for p in cockpit_engine.bouquet.providers)
        await until(pilot, lambda: table(app).get_cell("deepseek", "circuit").plain
                    == "closed", what="the row")
        await pilot.press("C")  # nothing open any more: no dialog, the reason
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert notes.any("every circuit is closed: nothing to reset", "warning")


# -- h, o: throttle and force optimisation ------------------------------------------------


async def test_bang_counts_and_stops_a_cli_run_in_another_process(cli_env, tmp_path):
    # The cockpit is this process; the run is a real `aetherflow run` in another one.
    with ScriptedServer() as server:
        text = bouquet(provider("alpha", server.url))
        path = tmp_path / "bouquet.toml"
        path.write_text(text)
        cli_env["AETHERFLOW_CONFIG"] = str(path)
        proc, _ = await asyncio.to_thread(run_in_flight, cli_env, held_plan(tmp_path),
                                          tmp_path, server)
        engine = Engine(config.parse(text, path), Path(cli_env["AETHERFLOW_HOME"]))
        notes = Notes()
        app = CockpitApp(engine)
        try:
            async with app.run_test(size=SIZE, message_hook=notes) as pilot:
                await settle(pilot)
                await pilot.press("exclamation_mark")
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen),
                            what="the dialog")
                assert "Cancel 1 run(s) in progress" in screen_text(app)
                await pilot.press("y")
                await until(pilot, lambda: notes.any("run(s) cancelled"),
                            what="the stop's alert")
                assert notes.any("1 run(s) cancelled, local generation stopped, dispatch "
                                 "held", "error"), notes.texts()
        finally:
            summary = await asyncio.to_thread(ended, proc)
    assert proc.returncode == 3 and summary["status"] == "stopped-by-hold"


async def test_h_sets_and_lifts_the_emergency_throttle(cockpit_engine):
    notes = Notes()
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await settle(pilot)
        top = cockpit_engine.concurrency.limit
        await pilot.press("h")
        modal = app.screen
        assert isinstance(modal, ThrottleModal)
        assert isinstance(app.focused, Input)
        assert f"now: at most {top} call(s) in flight · no throttle of yours" in \
            screen_text(app)
        await pilot.press("enter")  # nothing to lift
        assert "there is no throttle to lift" in screen_text(app)
        await pilot.press("0", "enter")
        assert "throttle limit 0 is below 1" in screen_text(app)
        assert cockpit_engine.manual_cap is None and app.screen is modal
        modal.query_one(Input).value = "two"
        await pilot.press("enter")
        assert "type a whole number of calls" in screen_text(app)
        modal.query_one(Input).value = ""
        await pilot.press("2", "enter")
        await settle(pilot)
        assert app.screen is not modal
        assert cockpit_engine.manual_cap == 2 and cockpit_engine.concurrency.limit == 2
        assert notes.any("emergency throttle by the operator: 2; concurrency cap 2",
                         "warning")

        await pilot.press("h")
        assert "your throttle: 2" in screen_text(app)
        await pilot.press("enter")  # empty lifts it
        await settle(pilot)
        assert cockpit_engine.manual_cap is None
        assert cockpit_engine.concurrency.limit == top

        await pilot.press("h", "escape")  # esc changes nothing
        assert not isinstance(app.screen, ThrottleModal)
        assert cockpit_engine.manual_cap is None


async def test_o_forces_optimisation(cockpit_engine):
    notes = Notes()
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await settle(pilot)
        cockpit_engine.emergency_throttle(3)
        await pilot.press("o")
        await settle(pilot)
        assert cockpit_engine.manual_cap is None  # force optimisation lifts the throttle
        (done,) = [n for n in notes.all if n.title == "Force optimisation"]
        assert done.message == "optimised: throttle lifted, idle local models unloaded"


# -- p: probe ----------------------------------------------------------------------------


async def test_p_probes_the_selected_provider_and_the_row_shows_the_canary(keyed_engine,
                                                                         scripted):
    notes = Notes()
    app = CockpitApp(keyed_engine)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await settle(pilot)
        assert table(app).selected.id == "scripted"
        assert table(app).get_cell("scripted", "canary").plain == "—"
        scripted.script("sum")
        await pilot.press("p")
        await settle(pilot)
        assert notes.any("probing scripted...")
        assert notes.any("scripted/echo: ok: answered 12 in", "information"), notes.texts()
        await until(pilot, lambda: table(app).get_cell("scripted", "canary").plain
                    .startswith("ok "), what="the canary cell")
        detail = next(line for line in screen_text(app).splitlines() if "scripted: " in line)
        assert "answered 12 in" in detail, detail

        scripted.script("status:503")
        await pilot.press("p")
        await settle(pilot)
        assert notes.any("scripted/echo: FAIL: ", "error"), notes.texts()
        await until(pilot, lambda: table(app).get_cell("scripted", "canary").plain
                    .startswith("FAIL"), what="the failed canary")
        probes = [r for r in scripted.requests if r["path"] == "/v1/chat/completions"]
        assert len(probes) == 2


async def test_p_without_a_key_says_so_and_sends_nothing(scripted_engine_nokey, scripted):
    notes = Notes()
    app = CockpitApp(scripted_engine_nokey)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert notes.any("scripted has no usable key to probe: press k to add one",
                         "warning")
        assert scripted.requests == []


@pytest.fixture
def scripted_engine_nokey(scripted: ScriptedServer, tmp_path: Path) -> Engine:
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring" / "keyring_pass.cfg")
    return engine_on(scripted, KeyVault(backend=backend, environ={}), tmp_path)


# -- the provider table's new columns -------------------------------------------------------


async def test_score_and_canary_columns_and_the_detail_line(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert table(app).shown_columns == COLUMNS
        health = cockpit_engine.health.health("groq")
        assert health.score is not None
        assert table(app).get_cell("groq", "score").plain == f"{health.score:.2f}"
        assert table(app).get_cell("codestral", "score").plain == "—"
        # The status page's reason is the light's: said once.
        changed = cockpit_engine.health.status_read(
            "groq", StatusSignal(FIXED_NOW, "degraded", f"status page: slow {HOSTILE}", True))
        cockpit_engine.bus.publish(ProviderHealthChanged(FIXED_NOW, changed))
        await until(pilot, lambda: "groq: status page: slow" in screen_text(app),
                    what="the detail line")
        line = next(line for line in screen_text(app).splitlines() if "groq: " in line)
        assert f"groq: status page: slow {HOSTILE}" in line
        assert line.count("status page:") == 1
        # A canary's reason, and a status page that is not why the light is what it is.
        cockpit_engine.health.probed(ProbeResult(FIXED_NOW, "groq", "llama-3.1-8b-instant",
                                                 True, f"answered 12 in 240 ms {HOSTILE}",
                                                 0.24, 0.1, 0.0000012))
        changed = cockpit_engine.health.status_read(
            "groq", StatusSignal(FIXED_NOW, "operational", "status page: operational", True))
        cockpit_engine.bus.publish(ProviderHealthChanged(FIXED_NOW, changed))
        await until(pilot, lambda: table(app).get_cell("groq", "canary").plain
                    == "ok 240 ms", what="the canary cell")
        await pilot.pause()
        line = next(line for line in screen_text(app).splitlines() if "groq: " in line)
        # The canary is why the light is what it is now: its reason, once.
        assert "groq: answered 12 in 240 ms [bold red]x[/] [@click=app.quit]q[/]" in line
        assert line.count("answered 12") == 1, line
        assert "[/] · status page: operational" in line, line
        assert app.is_running


async def test_at_80_columns_the_prices_make_room_and_come_back_when_wide(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        providers = table(app)
        assert providers.shown_columns == NARROW_COLUMNS
        assert [str(c.value) for c in providers.columns] == [k for k, _ in NARROW_COLUMNS]
        header = screen_text(app).splitlines()[2]
        for label in ("provider", "key", "score", "canary", "p50", "ok %", "circuit"):
            assert label in header, (label, header)
        assert providers.virtual_size.width <= providers.size.width  # no sideways scroll
        select(app, "deepseek")
        await pilot.resize_terminal(160, 48)
        await until(pilot, lambda: providers.shown_columns == COLUMNS, what="every column")
        assert "in $/M" in screen_text(app)
        assert providers.selected.id == "deepseek"  # the rebuild kept the selection
        assert providers.row_count == len(cockpit_engine.bouquet.providers)


async def test_help_and_palette_list_the_new_keys(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        help_table = app.screen.query_one(DataTable)
        rows = {(help_table.get_row_at(i)[0].plain, help_table.get_row_at(i)[1].plain)
                for i in range(help_table.row_count)}
        for row in [("o", "Optimise"), ("h", "Throttle"), ("c", "Reset circuit"),
                    ("C", "Reset all circuits"), ("!", "Emergency stop"), ("R", "Resume"),
                    ("p", "Probe"), ("esc", "Close (throttle dialog)")]:
            assert row in rows, (row, rows)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Optimise", "Throttle", "Reset circuit", "Reset all circuits",
                "Emergency stop", "Resume", "Probe"} <= titles


def test_the_states_have_their_colours():
    from aetherflow_tui.widgets.system import BADGE_STYLE, badge

    assert set(BADGE_STYLE) == set(SystemState)
    text = badge(SystemState.CRITICAL, "stop [b]now[/b]", running=True)
    assert text.plain == " CRITICAL    DISPATCH HELD \nstop [b]now[/b] · R resumes"
    assert "red" in str(text.spans[0].style)


async def test_on_a_short_screen_the_pane_scrolls_to_the_decision(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=(120, 32)) as pilot:
        await settle(pilot)
        publish_system(cockpit_engine, system_samples(), stressed_decision())
        system = pane(app)
        await until(pilot, lambda: system.decision is not None, what="the decision")
        await settle(pilot)
        assert "concurrency cap 4" not in screen_text(app)  # below the pane's bottom
        await pilot.press("5")
        assert app.focused is system
        await pilot.press("pagedown")
        await pilot.pause()
        assert system.scroll_y > 0
        assert "→ concurrency cap 4" in screen_text(app)
        await pilot.press("up", "up", "up", "up", "up", "up", "up", "up", "up", "up")
        await pilot.pause()
        assert system.scroll_y == 0


async def test_zoomed_at_80_columns_the_pane_shows_all_or_says_it_has_nothing(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("5", "z")
        await pilot.pause()
        shown = screen_text(app)
        assert NOT_RUNNING in shown and "no machine figures until it runs" in shown
        assert "CPU" not in shown and "RAM" not in shown
        publish_system(cockpit_engine, system_samples(), stressed_decision())
        await until(pilot, lambda: pane(app).decision is not None, what="the events")
        await settle(pilot)
        shown = screen_text(app)
        for text in (" STRESSED ", "RAM 62%", "loop lag 2 ms", "→ concurrency cap 4"):
            assert text in shown, text
        assert pane(app).scroll_y == 0
        await pilot.press("z")
        await pilot.pause()
        line = next(line for line in screen_text(app).splitlines() if "STRESSED" in line)
        assert " STRESSED  CPU 99% RAM 62% lag 2 ms" in line  # the one-line form again
