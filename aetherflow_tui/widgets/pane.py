"""The frame every pane shares: a numbered title, so digits can focus it."""

from __future__ import annotations

from textual.containers import Vertical


class Pane(Vertical):
    """A bordered pane; `number` is the digit that focuses it."""

    DEFAULT_CLASSES = "pane"
    ALLOW_MAXIMIZE = True  # z zooms the pane that has the focus

    def __init__(self, title: str, number: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.number = number
        self.border_title = f"{number} {title}"
