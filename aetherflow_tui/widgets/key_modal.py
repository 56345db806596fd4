"""Inject a key from the keyboard: masked input, then the sandbox test, result in place.

The modal never holds the key longer than the submit: the input is cleared at once and
the request goes to the app, which hands it to the engine (keychain, test, approval).
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from ..engine.keycheck import KeyCheck, KeyCheckState
from ..requests import Ask, RemoveKey, RetestKey, SetKey
from .safe import literal


def check_text(check: KeyCheck) -> Text:
    style = {KeyCheckState.ACTIVE: "green", KeyCheckState.AWAITING_APPROVAL: "green",
             KeyCheckState.FAILED: "red", KeyCheckState.REJECTED: "red"}.get(check.state, "")
    text = Text(f"{check.state.value}: ", style=f"bold {style}")
    text.append_text(literal(check.reason, limit=200))
    if check.state is KeyCheckState.AWAITING_APPROVAL:
        text.append("\npress a in the cockpit to approve its activation", style="dim")
    return text


class KeyModal(ModalScreen[KeyCheck | None]):
    BINDINGS = [
        Binding("escape", "dismiss_modal", "Close", id="key_modal.close",
                tooltip="Close without changing anything"),
        Binding("ctrl+t", "retest", "Test again", id="key_modal.retest",
                tooltip="Run the sandbox test again on the stored key"),
        # priority: the focused Input binds ctrl+d (delete right) and would take it first.
        Binding("ctrl+d", "remove", "Remove key", id="key_modal.remove",
                tooltip="Delete this provider's key from the keychain", priority=True),
    ]

    def __init__(self, provider_id: str, ask: Ask) -> None:
        super().__init__()
        self.ask = ask
        self.provider_id = provider_id
        self.result: KeyCheck | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="key-dialog", classes="dialog"):
            yield Label(f"API key for {self.provider_id}", classes="dialog-title")
            yield Input(password=True, placeholder="paste the key, then enter",
                        id="key-input")
            yield Static(Text("The key goes to the OS keychain, then one real minimal call "
                              "tests it.", style="dim"), id="key-status")
            yield Static(Text("enter test · ctrl+t test again · ctrl+d remove · esc close",
                              style="dim"), classes="dialog-keys")

    def status(self, text: Text) -> None:
        self.query_one("#key-status", Static).update(text)

    @on(Input.Submitted, "#key-input")
    def submit(self, event: Input.Submitted) -> None:
        secret = event.value
        event.input.value = ""  # the key leaves the screen's memory with the submit
        if not secret.strip():
            self.status(Text("type or paste a key first", style="yellow"))
            return
        self.status(Text("storing and testing...", style="yellow"))
        self.ask(SetKey(self.provider_id, secret), self)

    def action_retest(self) -> None:
        self.status(Text("testing...", style="yellow"))
        self.ask(RetestKey(self.provider_id), self)

    def action_remove(self) -> None:
        self.ask(RemoveKey(self.provider_id), self)

    # -- the app's answers -----------------------------------------------------------------

    def checked(self, check: KeyCheck) -> None:
        self.result = check
        self.status(check_text(check))

    def removed(self, removed: bool) -> None:
        self.status(Text("key removed" if removed else "no key was stored", style="yellow"))

    def refused(self, message: str) -> None:
        self.status(literal(message, limit=200, style="red"))

    def action_dismiss_modal(self) -> None:
        self.dismiss(self.result)
