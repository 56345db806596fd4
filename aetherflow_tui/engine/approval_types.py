"""What an approval is: a change the operator signs off, and the kinds of change there are.

A leaf: it imports nothing of the engine, so the events that carry an approval and the
producers that request one (the veille, key activation) need not import the queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACTIVATE_KEY = "activate_key"
PRICE_UPDATE = "price_update"  # a veille price for a bouquet model, into the matrix
OPPORTUNITY = "veille_opportunity"  # a better offer: approving walks the acquisition funnel


@dataclass(frozen=True, slots=True)
class Approval:
    id: int
    ts: float
    kind: str
    summary: str
    evidence: str
    proposed_action: str
    payload: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"  # pending, approved, rejected
    decided_ts: float | None = None
