"""Untrusted text for the screen: literal, one line, bounded. Never parsed as markup."""

from __future__ import annotations

from rich.text import Text

from ..engine.text import excerpt


def literal(text: str | None, limit: int = 120, style: str = "") -> Text:
    """Provider error bodies, feed titles: shown as typed, escapes visible, truncated."""
    return Text(excerpt(text or "", limit=limit), style=style)
