"""One veille source after a poll, as `veille poll` and the veille pane's header show it.

A leaf: it imports nothing of the engine, so the event that carries these statuses does
not import the watch that makes them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """One source after a poll, as `veille poll` and the pane's header show it."""

    name: str
    location: str
    kind: str
    outcome: str  # new, not_modified, error, or "never" before its first poll
    error: str | None
    new_items: int
    ts: float | None
    ok_ts: float | None
