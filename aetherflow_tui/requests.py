"""What the operator asks for in a dialog, as data, and the app's side that does it.

A dialog never calls the engine: it builds a request (SetKey, RunPlan, Throttle...) and
hands it, with itself, to the `ask` callable it was given: `Requests.carry_out`. That runs
it on the engine (in a worker of the dialog when it awaits, so closing the dialog cancels
it, as before) and answers the dialog: `refused(message)` for an OperatorError, else the
dialog's own answer (a key check, the pending approvals...). A dialog with nothing left
to show is dismissed with its request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .engine.errors import OperatorError

if TYPE_CHECKING:
    from .app import CockpitApp
    from .engine.keycheck import KeyCheck
    from .widgets.approvals import ApprovalsScreen
    from .widgets.key_modal import KeyModal
    from .widgets.run_modal import RunPlanModal
    from .widgets.throttle_modal import ThrottleModal


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


class Requests:
    def __init__(self, app: CockpitApp) -> None:
        self._app = app
        self._carry: dict[type[Any], Callable[[Any, Any], None]] = {
            SetKey: self._set_key, RetestKey: self._retest_key, RemoveKey: self._remove_key,
            RunPlan: self._run_plan, Throttle: self._throttle,
            LoadApprovals: self._load_approvals, Decide: self._decide}

    def carry_out(self, request: Request, dialog: Any) -> None:
        self._carry[type(request)](request, dialog)

    @staticmethod
    def _in(dialog: Any, group: str, work: Callable[[], Awaitable[None]]) -> None:
        # The dialog's worker: it ends with the dialog; a new one in the group ends the last.
        dialog.run_worker(work, group=group, exclusive=True)

    # -- the key dialog --------------------------------------------------------------------

    def _set_key(self, request: SetKey, dialog: KeyModal) -> None:
        engine = self._app.engine
        self._in(dialog, "key", partial(self._check, dialog, partial(
            engine.inject_key, request.provider, request.secret)))

    def _retest_key(self, request: RetestKey, dialog: KeyModal) -> None:
        engine = self._app.engine
        self._in(dialog, "key", partial(self._check, dialog, partial(
            engine.test_key, request.provider)))

    async def _check(self, dialog: KeyModal, checking: Callable[[], Awaitable[KeyCheck]]
                     ) -> None:
        try:
            check = await checking()
        except OperatorError as exc:
            dialog.refused(str(exc))
            return
        dialog.checked(check)

    def _remove_key(self, request: RemoveKey, dialog: KeyModal) -> None:
        async def remove() -> None:
            try:
                removed = await self._app.engine.remove_key(request.provider)
            except OperatorError as exc:
                dialog.refused(str(exc))
                return
            dialog.removed(removed)

        self._in(dialog, "key", remove)

    # -- the run and throttle dialogs: dismissed with the request once it is done --------------

    def _run_plan(self, request: RunPlan, dialog: RunPlanModal) -> None:
        async def start() -> None:
            try:
                run = await self._app.engine.start_run(request.path, mode=request.mode)
            except OperatorError as exc:
                dialog.refused(str(exc))
                return
            # Queued before the dialog goes, as a dismiss callback is: the app shows the
            # run once the cockpit is back on screen.
            self._app.call_next(self._app.run_started, run)
            dialog.dismiss(request)

        self._in(dialog, "run-plan", start)

    def _throttle(self, request: Throttle, dialog: ThrottleModal) -> None:
        try:
            # The engine raises an alert for the change: that is the notification.
            self._app.engine.emergency_throttle(request.limit)
        except OperatorError as exc:
            dialog.refused(str(exc))
            return
        dialog.dismiss(request)

    # -- the approvals screen ----------------------------------------------------------------

    def _load_approvals(self, request: LoadApprovals, dialog: ApprovalsScreen) -> None:
        async def load() -> None:
            dialog.show(await self._app.engine.pending_approvals())

        self._in(dialog, "approvals", load)

    def _decide(self, request: Decide, dialog: ApprovalsScreen) -> None:
        async def decide() -> None:
            try:
                await self._app.engine.decide_approval(request.approval_id,
                                                         request.approve)
            except OperatorError as exc:
                dialog.refused(str(exc))
                return
            dialog.decided()  # the app's ApprovalDecided handler tells the operator

        self._in(dialog, "approvals-decide", decide)
