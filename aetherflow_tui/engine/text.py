"""Untrusted text (provider error bodies, feed items) made safe to store and show.

Safe means: no key, no terminal control sequence, bounded length. It says nothing about
markup: the UI renders this text literally (rich Text, markup=False), never as markup.
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def neutralise(text: str) -> str:
    """Show escape and control characters as visible escapes instead of obeying them."""
    text = _ANSI.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def excerpt(text: str, limit: int = 200) -> str:
    """One line of at most `limit` characters, keys masked, controls escaped."""
    from .keys import REDACTOR

    flat = " ".join(REDACTOR.redact(text).split())
    flat = neutralise(flat)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
