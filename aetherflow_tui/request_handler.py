"""The app's side of the dialogs' requests (requests.py): carry each out on the engine and
answer the dialog that asked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from .engine.errors import OperatorError
from .requests import (
    Decide,
    LoadApprovals,
    RemoveKey,
    Request,
    RetestKey,
    RunPlan,
    SetKey,
    Throttle,
)

if TYPE_CHECKING:
    from .engine import Engine, PlanRun
    from .engine.keycheck import KeyCheck
    from .widgets.approvals import ApprovalsScreen
    from .widgets.key_modal import KeyModal
    from .widgets.run_modal import RunPlanModal
    from .widgets.throttle_modal import ThrottleModal


class Cockpit(Protocol):
    """What the requests need of the app: its engine, and where a started run goes."""

    engine: Engine

    def call_next(self, callback: Callable[..., Any], *args: Any) -> bool: ...

    def run_started(self, run: PlanRun) -> None: ...


class Requests:
    def __init__(self, app: Cockpit) -> None:
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
