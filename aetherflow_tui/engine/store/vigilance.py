"""Vigilance: health samples, the regulator's decisions, alerts, key checks and the
approvals asked of the operator."""

from __future__ import annotations

import json
from typing import Any

from .base import StoreBase
from .rows import ApprovalRow, KeyCheckRow


class VigilanceMixin(StoreBase):
    async def health_samples(self, since_ts: float, limit: int = 2000
                             ) -> list[dict[str, Any]]:
        """Canary and status-page readings since since_ts, oldest first."""
        rows = await self._dicts(
            "SELECT ts, provider, model, source, ok, latency_s, ttft_s, detail "
            "FROM health_samples WHERE ts >= ? ORDER BY id DESC LIMIT ?", (since_ts, limit))
        return rows[::-1]

    async def decisions(self, limit: int = 20) -> list[dict[str, Any]]:
        """The regulator's latest decisions, newest first (metrics and actions decoded)."""
        rows = await self._dicts(
            "SELECT ts, kind, state, confidence, reasoning, metrics, actions FROM decisions "
            "ORDER BY id DESC LIMIT ?", (limit,))
        for row in rows:
            row["metrics"] = json.loads(row["metrics"] or "{}")
            row["actions"] = json.loads(row["actions"] or "[]")
        return rows

    async def alerts(self, limit: int = 20) -> list[dict[str, Any]]:
        return await self._dicts(
            "SELECT id, ts, severity, title, message, source FROM alerts "
            "ORDER BY id DESC LIMIT ?", (limit,))

    async def add_key_check(self, ts: float, provider: str, passed: bool, state: str,
                            reason: str, latency_s: float | None, usd: float | None,
                            billed_usd: float | None) -> None:
        await self._write(
            "INSERT INTO key_checks (ts, provider, passed, state, reason, latency_s, usd, "
            "billed_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ts, provider, int(passed), state, reason, latency_s, usd, billed_usd))

    async def latest_key_checks(self) -> dict[str, KeyCheckRow]:
        """Each provider's last key check."""
        cursor = await self._db.execute(
            "SELECT provider, ts, passed, state, reason, latency_s, usd, billed_usd "
            "FROM key_checks WHERE id IN (SELECT MAX(id) FROM key_checks GROUP BY provider)")
        return {row[0]: KeyCheckRow(row[0], row[1], bool(row[2]), *row[3:])
                for row in await cursor.fetchall()}

    async def add_approval(self, ts: float, kind: str, summary: str, evidence: str,
                           proposed_action: str, payload: dict[str, Any]) -> int:
        cursor = await self._write(
            "INSERT INTO approvals (ts, kind, summary, evidence, proposed_action, payload) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (ts, kind, summary, evidence, proposed_action, json.dumps(payload)))
        return int(cursor.lastrowid or 0)

    async def approvals(self, status: str | None = "pending") -> list[ApprovalRow]:
        """Approvals with this status (None: all of them), oldest first."""
        where = "WHERE status = ?" if status else ""
        cursor = await self._db.execute(
            "SELECT id, ts, kind, summary, evidence, proposed_action, payload, status, "
            f"decided_ts FROM approvals {where} ORDER BY id", (status,) if status else ())
        return [ApprovalRow(*row) for row in await cursor.fetchall()]

    async def decide_approval(self, approval_id: int, status: str, ts: float) -> bool:
        cursor = await self._write(
            "UPDATE approvals SET status = ?, decided_ts = ? WHERE id = ? AND status = "
            "'pending'", (status, ts, approval_id))
        return cursor.rowcount == 1
