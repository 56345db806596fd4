"""Changes the operator signs off: queued, persisted, decided with y or n.

Producers (key activation, veille price updates and opportunities) describe the change
and its evidence; a handler registered for the kind carries out the decision.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

# Approval and its kinds live in approval_types.py (a leaf) and are re-exported here.
from .approval_types import ACTIVATE_KEY as ACTIVATE_KEY
from .approval_types import OPPORTUNITY as OPPORTUNITY
from .approval_types import PRICE_UPDATE as PRICE_UPDATE
from .approval_types import Approval
from .bus import EventBus
from .clock import Clock
from .errors import UsageError
from .events import ApprovalDecided, ApprovalRequested
from .store import ApprovalRow, Store

Handler = Callable[[Approval, bool], Awaitable[None]]


class ApprovalQueue:
    def __init__(self, store: Store, bus: EventBus, clock: Clock) -> None:
        self._store = store
        self._bus = bus
        self._clock = clock
        self._handlers: dict[str, Handler] = {}

    def handle(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    async def request(self, kind: str, summary: str, evidence: str, proposed_action: str,
                      payload: dict[str, Any]) -> Approval:
        ts = self._clock.now()
        approval_id = await self._store.add_approval(ts, kind, summary, evidence,
                                                     proposed_action, payload)
        approval = Approval(approval_id, ts, kind, summary, evidence, proposed_action, payload)
        self._bus.publish(ApprovalRequested(ts, approval))
        return approval

    async def pending(self) -> list[Approval]:
        return [_approval(row) for row in await self._store.approvals("pending")]

    async def history(self) -> list[Approval]:
        """Every approval, decided or not, oldest first."""
        return [_approval(row) for row in await self._store.approvals(None)]

    async def decide(self, approval_id: int, approve: bool) -> Approval:
        ts = self._clock.now()
        status = "approved" if approve else "rejected"
        if not await self._store.decide_approval(approval_id, status, ts):
            raise UsageError(f"approval {approval_id} is not pending",
                             fix="list pending approvals with `a` in the cockpit")
        (row,) = [r for r in await self._store.approvals(None) if r.id == approval_id]
        approval = _approval(row)
        handler = self._handlers.get(approval.kind)
        if handler is not None:
            await handler(approval, approve)
        self._bus.publish(ApprovalDecided(ts, approval))
        return approval


def _approval(row: ApprovalRow) -> Approval:
    return Approval(row.id, row.ts, row.kind, row.summary, row.evidence or "",
                    row.proposed_action or "", json.loads(row.payload or "{}"), row.status,
                    row.decided_ts)
