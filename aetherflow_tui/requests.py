"""What the operator asks for in a dialog, as data (request_handler.py is the app's side).

A dialog never calls the engine: it builds a request (SetKey, RunPlan, Throttle...) and
hands it, with itself, to the `ask` callable it was given: `Requests.carry_out`. That runs
it on the engine (in a worker of the dialog when it awaits, so closing the dialog cancels
it, as before) and answers the dialog: `refused(message)` for an OperatorError, else the
dialog's own answer (a key check, the pending approvals...). A dialog with nothing left
to show is dismissed with its request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class SetKey:
    """Store this key in the keychain, then run the sandbox test on it."""

    provider: str
    secret: str = field(repr=False)  # never in a repr, a log or a traceback's locals


@dataclass(frozen=True, slots=True)
class RetestKey:
    """Run the sandbox test again on the stored key."""

    provider: str


@dataclass(frozen=True, slots=True)
class RemoveKey:
    provider: str


@dataclass(frozen=True, slots=True)
class RunPlan:
    path: Path
    mode: str


@dataclass(frozen=True, slots=True)
class Throttle:
    limit: int | None  # None lifts the operator's throttle


@dataclass(frozen=True, slots=True)
class LoadApprovals:
    """The pending approvals, to list."""


@dataclass(frozen=True, slots=True)
class Decide:
    approval_id: int
    approve: bool


Request = SetKey | RetestKey | RemoveKey | RunPlan | Throttle | LoadApprovals | Decide
Ask = Callable[[Request, Any], None]  # (the request, the dialog that asks)
