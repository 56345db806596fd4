"""A pane whose feature has not landed yet: it says so, and shows no numbers."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from .pane import Pane


class InactivePane(Pane):
    can_focus = True

    def __init__(self, title: str, number: int, status: str, detail: str,
                 **kwargs: object) -> None:
        super().__init__(title, number, **kwargs)
        self._status = status
        self._detail = detail

    def compose(self) -> ComposeResult:
        yield Static(Text(self._status, style="italic"), classes="inactive")
        yield Static(Text(self._detail, style="dim"), classes="inactive-detail")
