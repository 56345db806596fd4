"""Every binding and modal of the cockpit, pressed through Pilot, on the real engine.

Two engines: the seeded fixture cockpit (tests/support/cockpit_fixture.py) for what the
operator sees on a known day, and a bouquet served by a real ScriptedServer on 127.0.0.1
for everything that makes a call (key injection, sandbox tests, a call in flight at quit).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from keyring.errors import KeyringError
from keyrings.alt.file import PlaintextKeyring
from textual.command import CommandList, CommandPalette
from textual.message import Message
from textual.notifications import Notification, Notify
from textual.widgets import DataTable, Input

from aetherflow_tui.app import BINDINGS, CockpitApp, check_keymap
from aetherflow_tui.engine import Engine, config
from aetherflow_tui.engine.approvals import ACTIVATE_KEY
from aetherflow_tui.engine.clock import FixedClock
from aetherflow_tui.engine.errors import ConfigError
from aetherflow_tui.engine.keycheck import KeyCheckState
from aetherflow_tui.engine.keys import KeyState, KeyVault, Secret
from aetherflow_tui.widgets.approvals import ApprovalsScreen
from aetherflow_tui.widgets.confirm import ConfirmScreen
from aetherflow_tui.widgets.help import HelpScreen
from aetherflow_tui.widgets.key_modal import KeyModal
from aetherflow_tui.widgets.pane import Pane
from aetherflow_tui.widgets.providers import ProviderTable
from aetherflow_tui.widgets.run_modal import RunPlanModal
from aetherflow_tui.widgets.throttle_modal import ThrottleModal
from aetherflow_tui.widgets.veille import VeilleItemScreen, VeillePane
from tests.conftest import TEST_KEY
from tests.support.cockpit_fixture import FIXED_NOW, fixture_engine
from tests.support.plans import model_entry, provider_table, scripted_bouquet
from tests.support.scripted_server import ScriptedServer
from tests.tui.screen import screen_text, settle, until

SIZE = (160, 48)  # wide enough that no message the tests read is wrapped or cut
WRONG_KEY = "sk-wrong-key-000000000000"


def other_providers(url: str) -> tuple[str, str]:
    """Two more providers on the same server: one whose key comes from the environment, one
    keyless (a local server). Neither takes a key from the cockpit."""
    return (provider_table("envkey", model_entry("echo", price_in=0.5, price_out=1.5),
                           base_url=url, key="env:ENVKEY_API_KEY"),
            provider_table("local", model_entry("echo", price_in=0.0, price_out=0.0),
                           base_url=url, key="none"))


class Notes:
    """Every notification the app raised, caught as the Notify message goes by."""

    def __init__(self) -> None:
        self.all: list[Notification] = []

    def __call__(self, message: Message) -> None:
        if isinstance(message, Notify):
            self.all.append(message.notification)

    def texts(self, severity: str | None = None) -> list[str]:
        return [n.message for n in self.all if severity in (None, n.severity)]

    def any(self, fragment: str, severity: str | None = None) -> bool:
        return any(fragment in text for text in self.texts(severity))


@pytest.fixture
def cockpit_engine(tmp_path: Path) -> Engine:
    # Sync on purpose: seeding runs its own event loop, before the test's loop starts.
    return fixture_engine(tmp_path)


@pytest.fixture
def vault(tmp_path: Path) -> KeyVault:
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring" / "keyring_pass.cfg")
    return KeyVault(backend=backend, environ={})


def engine_on(server: ScriptedServer, vault: KeyVault, tmp_path: Path) -> Engine:
    """Unstarted, with no key stored: the cockpit starts it and stops it."""
    text = scripted_bouquet(server.url, *other_providers(server.url))
    bouquet = config.parse(text, tmp_path / "bouquet.toml")
    return Engine(bouquet, tmp_path / "home", vault=vault, clock=FixedClock(FIXED_NOW))


@pytest.fixture
def scripted_engine(scripted: ScriptedServer, vault: KeyVault, tmp_path: Path) -> Engine:
    return engine_on(scripted, vault, tmp_path)


def table(app: CockpitApp) -> ProviderTable:
    return app.query_one(ProviderTable)


def key_cell(app: CockpitApp, provider: str) -> str:
    return table(app).get_cell(provider, "key").plain


def rows(app: CockpitApp) -> list[str]:
    return [str(key.value) for key in table(app).rows]


def select(app: CockpitApp, provider: str) -> None:
    table(app).move_cursor(row=table(app).get_row_index(provider))


async def started(pilot) -> None:
    await settle(pilot)
    assert rows(pilot.app), "the provider table never filled"


# -- k: the key modal ------------------------------------------------------------------


async def test_k_opens_the_key_modal_on_the_selected_row_and_esc_closes_it(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("down")  # groq -> mistral, by keyboard
        assert table(app).selected.id == "mistral"
        await pilot.press("k")
        assert isinstance(app.screen, KeyModal)
        assert app.screen.provider_id == "mistral"
        assert "API key for mistral" in screen_text(app)
        assert isinstance(app.focused, Input) and app.focused.password
        await pilot.press("escape")
        assert not isinstance(app.screen, KeyModal)
        assert isinstance(app.focused, ProviderTable)
        assert cockpit_engine.key_check("mistral").state is KeyCheckState.AWAITING_APPROVAL


async def test_injected_key_is_stored_tested_and_awaits_approval(scripted_engine, scripted,
                                                                 vault):
    app = CockpitApp(scripted_engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert key_cell(app, "scripted") == "no key"
        await pilot.press("k")
        modal = app.screen
        assert isinstance(modal, KeyModal) and modal.provider_id == "scripted"
        await pilot.press(*TEST_KEY)
        box = modal.query_one("#key-input", Input)
        assert box.value == TEST_KEY
        typed = app.export_screenshot()
        assert TEST_KEY not in typed and "•" * 8 in typed  # masked while typed

        await pilot.press("enter")
        assert box.value == ""  # cleared with the submit, before the test even runs
        await settle(pilot)
        assert modal.result is not None
        assert modal.result.state is KeyCheckState.AWAITING_APPROVAL, modal.result.reason
        shown = screen_text(app)
        assert "awaiting approval: authenticated in" in shown
        assert "press a in the cockpit to approve its activation" in shown
        assert TEST_KEY not in app.export_screenshot() and TEST_KEY not in shown
        stored = await asyncio.to_thread(vault.get, scripted_engine.provider_spec("scripted"))
        assert stored is not None and stored.reveal() == TEST_KEY
        # One real sandbox call, carrying the key that was typed.
        (call,) = [r for r in scripted.requests if r["path"] == "/v1/chat/completions"]
        assert call["headers"]["authorization"] == f"Bearer {TEST_KEY}"

        await pilot.press("escape")
        assert app.screen is app.default_screen
        await until(pilot, lambda: key_cell(app, "scripted") == "to approve",
                    what="the row to show the key waiting for approval")
        assert app.provider_light("scripted") == "green"
        (pending,) = await scripted_engine.approvals.pending()
        assert pending.kind == ACTIVATE_KEY and pending.payload == {"provider": "scripted"}
        assert TEST_KEY not in app.export_screenshot()


async def test_a_refused_key_fails_and_the_row_stays_inactive(scripted_engine):
    app = CockpitApp(scripted_engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("k", *WRONG_KEY, "enter")
        modal = app.screen
        assert isinstance(modal, KeyModal)
        await settle(pilot)
        assert modal.query_one("#key-input", Input).value == ""
        assert "failed: the key was refused" in screen_text(app)
        assert WRONG_KEY not in app.export_screenshot()
        await pilot.press("escape")
        await until(pilot, lambda: key_cell(app, "scripted") == "failed",
                    what="the row to show the failed test")
        assert not scripted_engine.key_check("scripted").active
        assert not (await scripted_engine.provider_view("scripted")).routable
        assert await scripted_engine.approvals.pending() == []


async def test_an_empty_submit_asks_for_a_key_and_stores_nothing(scripted_engine, vault):
    app = CockpitApp(scripted_engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("k", "enter")
        await settle(pilot)
        assert "type or paste a key first" in screen_text(app)
        assert vault.get(scripted_engine.provider_spec("scripted")) is None


async def test_ctrl_t_retests_and_ctrl_d_removes_the_key(scripted_engine, scripted, vault):
    vault.store("scripted", Secret(TEST_KEY))
    app = CockpitApp(scripted_engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert key_cell(app, "scripted") == "untested"
        await pilot.press("k")
        modal = app.screen
        assert isinstance(modal, KeyModal)

        await pilot.press("ctrl+t")
        await settle(pilot)
        assert modal.result is not None
        assert modal.result.state is KeyCheckState.AWAITING_APPROVAL, modal.result.reason
        assert "awaiting approval: authenticated in" in screen_text(app)
        assert len([r for r in scripted.requests if r["path"] == "/v1/chat/completions"]) == 1

        await pilot.press("ctrl+d")
        await settle(pilot)
        assert "key removed" in screen_text(app)
        assert vault.get(scripted_engine.provider_spec("scripted")) is None

        await pilot.press("ctrl+d")  # nothing left to remove: it says so
        await settle(pilot)
        assert "no key was stored" in screen_text(app)

        await pilot.press("escape")
        assert not isinstance(app.screen, KeyModal)
        await until(pilot, lambda: key_cell(app, "scripted") == "no key",
                    what="the row to show the key gone")


@pytest.mark.parametrize(("provider", "expected"), [
    ("envkey", "envkey takes its key from the environment (env:ENVKEY_API_KEY)"),
    ("local", 'local needs no key (key = "none" in the config)'),
])
async def test_k_on_a_provider_whose_key_is_not_in_the_keychain_warns(scripted_engine,
                                                                     provider, expected):
    notes = Notes()
    app = CockpitApp(scripted_engine)
    async with app.run_test(size=SIZE, notifications=True, message_hook=notes) as pilot:
        await started(pilot)
        select(app, provider)
        await pilot.press("k")
        await pilot.pause()
        assert not isinstance(app.screen, KeyModal)
        assert notes.any(expected, "warning"), notes.texts()
        assert expected[:30] in screen_text(app)


# -- a: approvals ----------------------------------------------------------------------


async def test_a_lists_the_pending_approval_and_y_activates_the_key(cockpit_engine):
    notes = Notes()
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await started(pilot)
        assert key_cell(app, "mistral") == "to approve"
        assert app.provider_light("mistral") == "orange"  # one failure in five
        await pilot.press("a")
        screen = app.screen
        assert isinstance(screen, ApprovalsScreen)
        await settle(pilot)
        approvals = screen.query_one(DataTable)
        assert approvals.row_count == 2  # the fixture's veille opportunity is the second
        assert [c.plain for c in approvals.get_row_at(0)][1:3] == [
            "activate key", "Activate the new key for mistral"]
        assert "Activate the new key for mistral" in screen_text(app)

        await pilot.press("y")
        await settle(pilot)
        assert cockpit_engine.key_check("mistral").active
        assert approvals.row_count == 1
        # Announced once, from the engine's event (not a second time by the screen).
        decided = [t for t in notes.texts() if t.startswith(("approved", "rejected"))]
        assert decided == ["approved: Activate the new key for mistral"]

        await pilot.press("n")  # the opportunity: declined, nothing else happens
        await settle(pilot)
        assert approvals.row_count == 0
        assert "nothing waiting for you" in screen_text(app)
        assert not isinstance(app.screen, KeyModal)

        await pilot.press("y")  # nothing left: says so, decides nothing
        await settle(pilot)
        assert "nothing to decide" in screen_text(app)

        await pilot.press("escape")
        assert not isinstance(app.screen, ApprovalsScreen)
        await until(pilot, lambda: key_cell(app, "mistral") == "active",
                    what="the mistral row to show its key active")
        assert await cockpit_engine.approvals.pending() == []


async def test_n_rejects_an_activation_and_the_key_stays_out(scripted_engine, vault):
    vault.store("scripted", Secret(TEST_KEY))
    app = CockpitApp(scripted_engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("t")  # a passing test puts the activation in the queue
        await settle(pilot)
        await until(pilot, lambda: key_cell(app, "scripted") == "to approve",
                    what="the sandbox test to pass")
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(app.screen, ApprovalsScreen)
        assert app.screen.query_one(DataTable).row_count == 1
        assert "Activate the new key for scripted" in screen_text(app)
        await pilot.press("n")
        await settle(pilot)
        assert scripted_engine.key_check("scripted").state is KeyCheckState.REJECTED
        assert app.screen.query_one(DataTable).row_count == 0
        await pilot.press("escape")
        await until(pilot, lambda: key_cell(app, "scripted") == "rejected",
                    what="the row to show the rejected activation")
        assert not (await scripted_engine.provider_view("scripted")).routable


# -- g, t ------------------------------------------------------------------------------


async def test_g_copies_the_console_url_and_says_so(cockpit_engine):
    notes = Notes()
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE, notifications=True, message_hook=notes) as pilot:
        await started(pilot)
        select(app, "deepseek")
        await pilot.press("g")
        await pilot.pause()
        url = cockpit_engine.provider_spec("deepseek").console_url
        assert url == "https://platform.deepseek.com/api_keys"
        assert app.clipboard == url
        assert notes.any(f"copied to your clipboard: {url}", "information")
        assert url in screen_text(app)


async def test_g_without_a_console_url_warns(scripted_engine):
    notes = Notes()
    app = CockpitApp(scripted_engine)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await started(pilot)
        await pilot.press("g")
        await pilot.pause()
        assert app.clipboard == ""
        assert notes.any("no console_url for scripted in the config", "warning")


async def test_t_without_a_key_warns_and_calls_nothing(cockpit_engine):
    notes = Notes()
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE, notifications=True, message_hook=notes) as pilot:
        await started(pilot)
        select(app, "codestral")
        await pilot.press("t")
        await settle(pilot)
        assert notes.any("codestral has no usable key to test: press k to add one", "warning")
        assert cockpit_engine.key_check("codestral").state is KeyCheckState.UNTESTED
        assert "codestral has no usable key to test" in screen_text(app)


async def test_t_runs_the_sandbox_test_on_the_stored_key(scripted_engine, scripted, vault):
    vault.store("scripted", Secret(TEST_KEY))
    notes = Notes()
    app = CockpitApp(scripted_engine)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await started(pilot)
        await pilot.press("t")
        await settle(pilot)
        assert notes.any("testing the key for scripted...")
        assert notes.any("scripted: awaiting approval: authenticated in", "information"), \
            notes.texts()
        (call,) = [r for r in scripted.requests if r["path"] == "/v1/chat/completions"]
        assert call["body"]["max_tokens"] == 64
        await until(pilot, lambda: key_cell(app, "scripted") == "to approve",
                    what="the row to show the passed test")


# -- /, ?, digits ----------------------------------------------------------------------


async def test_slash_filters_the_table_and_esc_clears_it(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        every = rows(app)
        assert len(every) == len(cockpit_engine.bouquet.providers) == 8
        await pilot.press("slash")
        box = app.query_one("#filter-input", Input)
        assert box.display and app.focused is box
        await pilot.press(*"deep")
        await pilot.pause()
        # By name or model: openrouter serves deepseek/deepseek-chat-v3-0324.
        assert rows(app) == ["deepseek", "openrouter"]
        await pilot.press("s", "e", "e", "k", "slash", "d", "e", "e", "p")
        await pilot.pause()
        assert rows(app) == ["openrouter"]  # "deepseek/deep" only matches the model id
        await pilot.press("escape")
        await pilot.pause()
        assert rows(app) == every
        assert not box.display and box.value == ""
        assert isinstance(app.focused, ProviderTable)

        await pilot.press("slash", *"groq", "enter")  # enter keeps the filter, closes the box
        await pilot.pause()
        assert rows(app) == ["groq"] and not box.display
        assert isinstance(app.focused, ProviderTable)
        await pilot.press("k")  # and the filtered row is the selected one
        assert isinstance(app.screen, KeyModal) and app.screen.provider_id == "groq"


async def test_question_mark_lists_every_key_and_esc_closes(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_table = app.screen.query_one(DataTable)
        shown = [(help_table.get_row_at(i)[0].plain, help_table.get_row_at(i)[1].plain)
                 for i in range(help_table.row_count)]
        for row in [("k", "Key"), ("t", "Test"), ("g", "Get key"), ("a", "Approvals"),
                    ("/", "Filter"), ("?", "Help"), ("q", "Quit"), ("esc", "Back"),
                    ("1", "Pane 1"), ("2", "Pane 2"), ("3", "Pane 3"), ("4", "Pane 4"),
                    ("5", "Pane 5"), ("ctrl+p", "Palette"),
                    ("esc", "Close (key dialog)"), ("^t", "Test again (key dialog)"),
                    ("^d", "Remove key (key dialog)"), ("y", "Approve (approvals)"),
                    ("n", "Reject (approvals)"), ("esc", "Back (approvals)"),
                    ("⏎", "Open (veille pane)"), ("f", "Filter label (veille pane)"),
                    ("u", "Poll now (veille pane)"), ("esc", "Back (veille item)")]:
            assert row in shown, (row, shown)
        # Every binding id of the cockpit and of its dialogs has its row.
        dialogs = [b for s in (VeillePane, VeilleItemScreen, KeyModal, ApprovalsScreen,
                               RunPlanModal, ThrottleModal)
                   for b in s.BINDINGS]
        assert help_table.row_count == len(BINDINGS) + 1 + len(dialogs)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark", "q")  # q closes the help, it does not quit
        assert not isinstance(app.screen, HelpScreen) and app.is_running


async def test_digits_focus_the_pane_with_that_number(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        panes = {pane.number: pane for pane in app.query(Pane)}
        assert sorted(panes) == [1, 2, 3, 4, 5]
        for number in (3, 2, 5, 4, 1):
            await pilot.press(str(number))
            focused = app.focused
            assert focused is not None
            assert focused is panes[number] or panes[number] in focused.ancestors, \
                (number, focused)
            for other, pane in panes.items():
                if other != number:
                    assert focused is not pane and pane not in focused.ancestors
        assert isinstance(app.focused, ProviderTable)


# -- q ---------------------------------------------------------------------------------


async def test_q_quits_at_once_when_nothing_is_in_flight(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert cockpit_engine.busy() == 0
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, what="the app to exit")
    assert app.return_code == 0
    assert not cockpit_engine.started  # the cockpit started the engine, and stopped it


async def test_q_asks_first_while_a_call_is_in_flight(scripted_engine, vault):
    vault.store("scripted", Secret(TEST_KEY))
    app = CockpitApp(scripted_engine)
    call: asyncio.Task | None = None
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            call = asyncio.create_task(
                scripted_engine.ask("@@hang@@ wait for me", provider="scripted"))
            await until(pilot, lambda: scripted_engine.busy() == 1, what="the call to start")

            await pilot.press("q")
            assert isinstance(app.screen, ConfirmScreen)
            shown = screen_text(app)
            assert "Quit the cockpit?" in shown and "1 call(s) in flight will be cut." in shown
            await pilot.press("n")
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen)
            assert app.is_running and not call.done()

            await pilot.press("q")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await until(pilot, lambda: not app.is_running, what="the app to exit")
        assert app.return_code == 0
    finally:
        if call is not None:
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await call


# -- ctrl+p, keymap --------------------------------------------------------------------


async def test_the_palette_finds_approvals_by_name(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"Approvals")
        commands = app.screen.query_one(CommandList)
        await until(pilot, lambda: commands.option_count and commands.highlighted is not None,
                    what="the palette to list Approvals")
        assert str(commands.get_option_at_index(commands.highlighted).prompt).startswith(
            "Approvals")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ApprovalsScreen),
                    what="the approvals screen")
        await settle(pilot)
        assert app.screen.query_one(DataTable).row_count == 2


async def test_the_palette_lists_every_cockpit_action(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        for binding in BINDINGS:
            if binding.id != "back" and not binding.id.startswith("focus_"):
                assert binding.description in titles, binding.id
        assert {f"Focus {name}" for name in ("providers", "steps", "cost", "veille",
                                             "system")} <= titles


async def test_a_keymap_override_moves_the_binding(cockpit_engine):
    app = CockpitApp(cockpit_engine, keymap={"approvals": "ctrl+o"})
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("a")
        assert not isinstance(app.screen, ApprovalsScreen)
        await pilot.press("ctrl+o")
        assert isinstance(app.screen, ApprovalsScreen)
        await settle(pilot)
        await pilot.press("escape", "question_mark")
        help_table = app.screen.query_one(DataTable)
        keys = {help_table.get_row_at(i)[1].plain: help_table.get_row_at(i)[0].plain
                for i in range(help_table.row_count)}
        assert keys["Approvals"] == "^o"


def test_an_unknown_keymap_id_is_a_config_error():
    check_keymap({"approvals": "ctrl+o", "inject_key": "ctrl+k"})
    with pytest.raises(ConfigError, match="unknown binding id 'nope'") as raised:
        check_keymap({"nope": "x"})
    assert "inject_key" in str(raised.value.fix)


# -- untrusted text --------------------------------------------------------------------

MARKUP = "[b]busy[/b] [red]x[/red] [@click=app.quit]quit[/] \x1b[31m"


async def test_a_provider_error_body_shows_literally_in_the_key_modal(scripted_engine,
                                                                       scripted):
    scripted.script("malformed")  # a 200 whose body carries markup and an ANSI escape
    app = CockpitApp(scripted_engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("k", *TEST_KEY, "enter")
        await settle(pilot)
        check = app.screen.result
        assert check is not None and check.state is KeyCheckState.FAILED
        shown = screen_text(app)
        assert "failed: the test call failed (malformed)" in shown
        assert "<b>not json</b> [red]markup[/red] \\x1b[31m" in shown
        assert "\x1b" not in app.export_screenshot()


async def test_a_provider_error_body_shows_literally_in_a_notification(scripted_engine,
                                                                       scripted, vault):
    vault.store("scripted", Secret(TEST_KEY))
    scripted.script("malformed")
    notes = Notes()
    app = CockpitApp(scripted_engine)
    async with app.run_test(size=SIZE, notifications=True, message_hook=notes) as pilot:
        await started(pilot)
        await pilot.press("t")
        await settle(pilot)
        assert notes.any("[red]markup[/red]", "error"), notes.texts()
        assert all(not n.markup for n in notes.all)
        assert "[red]markup[/red]" in screen_text(app)
        assert "\x1b" not in app.export_screenshot()


async def test_untrusted_text_in_an_approval_renders_literally(cockpit_engine):
    notes = Notes()
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE, notifications=True, message_hook=notes) as pilot:
        await started(pilot)
        await cockpit_engine.approvals.request(
            ACTIVATE_KEY, summary=f"Activate {MARKUP}", evidence=f"said {MARKUP}",
            proposed_action="nothing", payload={"provider": "codestral"})
        await until(pilot, lambda: notes.any("approval waiting"), what="the notification")
        await pilot.pause()
        literal = "[b]busy[/b] [red]x[/red] [@click=app.quit]quit[/] \\x1b[31m"
        assert notes.texts() == [f"approval waiting: Activate {literal} (press a)"]
        toast = screen_text(app)  # wrapped in the toast, so look for each piece
        for piece in ("[b]busy[/b]", "[red]x[/red]", "[@click=app.quit]quit[/]", "\\x1b[31m"):
            assert piece in toast, piece
        assert "\x1b" not in app.export_screenshot()

        await pilot.press("a")
        await settle(pilot)
        approvals = app.screen.query_one(DataTable)
        assert approvals.row_count == 3
        _, _, summary = (cell.plain for cell in approvals.get_row_at(2))
        assert summary == f"Activate {literal}"
        assert "[@click=app.quit]quit[/]" in screen_text(app)
        approvals.move_cursor(row=2)
        await pilot.pause()
        # The highlighted item's evidence is shown in full, literally, below the list.
        assert f"said {literal}" in screen_text(app)
        await pilot.press("n")  # rejecting it notifies with the same text, still literal
        await settle(pilot)
        assert approvals.row_count == 2
        assert app.is_running
        assert notes.texts()[-1] == f"rejected: Activate {literal}"
        assert "\x1b" not in app.export_screenshot()
        assert cockpit_engine.key_check("codestral").state is KeyCheckState.UNTESTED


class RefusingKeyring(PlaintextKeyring):
    """A keychain that will not store anything, and says so with markup in its error."""

    def set_password(self, service: str, username: str, password: str) -> None:
        raise KeyringError("[b]denied[/b] by policy")


async def test_a_keychain_failure_is_shown_in_the_modal_not_raised(scripted, tmp_path):
    backend = RefusingKeyring()
    backend.file_path = str(tmp_path / "keyring" / "keyring_pass.cfg")
    vault = KeyVault(backend=backend, environ={})
    engine = engine_on(scripted, vault, tmp_path)
    app = CockpitApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("k", *TEST_KEY, "enter")
        await settle(pilot)
        assert isinstance(app.screen, KeyModal) and app.is_running
        assert app.screen.result is None
        assert "the keychain failed: KeyringError: [b]denied[/b] by policy" in screen_text(app)
        assert TEST_KEY not in app.export_screenshot()
        status = await asyncio.to_thread(vault.status, engine.provider_spec("scripted"))
        assert status.state is KeyState.MISSING
        assert scripted.requests == []
