"""Runs, their steps, their calls and routing decisions, and the response-mode switches."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..records import CallRecord
from .base import StoreBase
from .rows import _call_from_row
from .statements import _CALL_COLUMNS, STEP_COLUMNS


class RunsMixin(StoreBase):
    flush: Callable[[], Awaitable[None]]  # the writer's (WriterMixin.flush)

    async def create_run(self, run_id: str, task_id: str, plan_path: str, mode: str,
                         started: float, digest: str, plan_text: str,
                         pid: int | None = None) -> None:
        await self._write(
            "INSERT INTO runs (id, task_id, plan_path, mode, status, started, plan_digest, "
            "plan_text, pid) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
            (run_id, task_id, plan_path, mode, started, digest, plan_text, pid))

    async def update_run(self, run_id: str, *, status: str, mode: str,
                         finished: float | None, detail: str | None,
                         pid: int | None = None) -> None:
        """pid: the process that takes the run over (a resume); None leaves it."""
        await self.flush()  # the run's last step rows land before its final status
        await self._write("UPDATE runs SET status = ?, mode = ?, finished = ?, detail = ?, "
                          "pid = COALESCE(?, pid) WHERE id = ?",
                          (status, mode, finished, detail, pid, run_id))

    async def running_runs(self) -> list[dict[str, Any]]:
        """Runs marked running, with the process that runs them (None: not recorded)."""
        return await self._dicts("SELECT id, pid FROM runs WHERE status = 'running'", ())

    async def run_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        if not run_ids:
            return {}
        cursor = await self._db.execute(
            f"SELECT id, status FROM runs WHERE id IN ({', '.join('?' * len(run_ids))})",
            tuple(run_ids))
        return {row[0]: row[1] for row in await cursor.fetchall()}

    async def run(self, run_id: str) -> dict[str, Any] | None:
        rows = await self._dicts("SELECT * FROM runs WHERE id = ?", (run_id,))
        return rows[0] if rows else None

    async def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return await self._dicts(
            "SELECT id, task_id, plan_path, mode, status, started, finished, detail FROM runs "
            "ORDER BY started DESC LIMIT ?", (limit,))

    async def steps(self, run_id: str) -> list[dict[str, Any]]:
        return await self._dicts(
            f"SELECT {', '.join(STEP_COLUMNS)} FROM steps WHERE run_id = ?", (run_id,))

    async def run_calls(self, run_id: str) -> list[CallRecord]:
        cursor = await self._db.execute(
            f"SELECT id, {_CALL_COLUMNS} FROM calls WHERE run_id = ? ORDER BY id", (run_id,))
        return [_call_from_row(row) for row in await cursor.fetchall()]

    async def routes(self, run_id: str) -> list[dict[str, Any]]:
        return await self._dicts(
            "SELECT ts, step_id, attempt, provider, model, reason FROM routes WHERE run_id = ? "
            "ORDER BY id", (run_id,))

    async def mode_changes(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest response-mode switches, newest first."""
        return await self._dicts(
            "SELECT ts, mode, reason, pinned FROM mode_changes ORDER BY id DESC LIMIT ?",
            (limit,))
