"""The operator's controls across processes (written by one, applied and acknowledged by
every live one), the live processes themselves (a heartbeat), and settings that outlive a
process (the stop hold)."""

from __future__ import annotations

import json
from typing import Any

from .base import StoreBase


class ControlsMixin(StoreBase):
    async def add_control(self, ts: float, action: str, params: dict[str, Any],
                          origin: str) -> int:
        cursor = await self._write(
            "INSERT INTO controls (ts, action, params, origin) VALUES (?, ?, ?, ?)",
            (ts, action, json.dumps(params), origin))
        return int(cursor.lastrowid or 0)

    async def last_control_id(self) -> int:
        cursor = await self._db.execute("SELECT COALESCE(MAX(id), 0) FROM controls")
        (last,) = await cursor.fetchone()  # type: ignore[misc]
        return int(last)

    async def controls_after(self, control_id: int) -> list[dict[str, Any]]:
        rows = await self._dicts(
            "SELECT id, ts, action, params, origin FROM controls WHERE id > ? ORDER BY id",
            (control_id,))
        for row in rows:
            row["params"] = json.loads(row["params"])
        return rows

    async def ack_control(self, control_id: int, pid: int, ts: float, detail: str) -> None:
        await self._write("INSERT OR REPLACE INTO control_acks VALUES (?, ?, ?, ?)",
                          (control_id, pid, ts, detail))

    async def control_acks(self, control_id: int) -> list[dict[str, Any]]:
        return await self._dicts(
            "SELECT a.pid, a.ts, a.detail, p.role FROM control_acks a LEFT JOIN processes p "
            "ON p.pid = a.pid WHERE a.control_id = ? ORDER BY a.pid", (control_id,))

    async def heartbeat(self, pid: int, role: str, started: float, seen: float) -> None:
        await self._write("INSERT INTO processes VALUES (?, ?, ?, ?) ON CONFLICT (pid) DO "
                          "UPDATE SET role = excluded.role, started = excluded.started, "
                          "seen = excluded.seen", (pid, role, started, seen))

    async def drop_process(self, pid: int) -> None:
        await self._write("DELETE FROM processes WHERE pid = ?", (pid,))

    async def processes(self, seen_since: float) -> list[dict[str, Any]]:
        return await self._dicts("SELECT pid, role, started, seen FROM processes WHERE "
                                 "seen >= ? ORDER BY started", (seen_since,))

    async def setting(self, key: str) -> Any:
        cursor = await self._db.execute("SELECT value FROM settings WHERE key = ?", (key,))
        row = await cursor.fetchone()
        return json.loads(row[0]) if row else None

    async def set_setting(self, key: str, value: Any, ts: float) -> None:
        if value is None:
            await self._write("DELETE FROM settings WHERE key = ?", (key,))
            return
        await self._write("INSERT OR REPLACE INTO settings VALUES (?, ?, ?)",
                          (key, json.dumps(value), ts))
