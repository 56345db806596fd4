"""The veille: sources added from the command line, each source's last poll, classified
items (deduplicated by key, and by title across sources), and the prices the operator
approved from them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .base import StoreBase
from .statements import VEILLE_ITEM_COLUMNS


class VeilleMixin(StoreBase):
    async def add_veille_items(self, rows: Sequence[dict[str, Any]], *, title_window_s: float
                               ) -> list[int]:
        """Insert new items in one transaction; the id of each row, 0 for a duplicate.

        A duplicate has a key already stored, or the same title as an item seen within
        `title_window_s` (the same story syndicated under another link).
        """
        ids = []
        async with self._immediate():
            for row in rows:
                cursor = await self._db.execute(
                    "SELECT 1 FROM veille_items WHERE key = ? OR (title_key = ? AND "
                    "seen_ts >= ?) LIMIT 1",
                    (row["key"], row["title_key"], row["seen_ts"] - title_window_s))
                if await cursor.fetchone() is not None:
                    ids.append(0)
                    continue
                cursor = await self._db.execute(
                    f"INSERT INTO veille_items ({', '.join(VEILLE_ITEM_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(VEILLE_ITEM_COLUMNS))})",
                    [json.dumps(row[c]) if c == "prices" else row[c]
                     for c in VEILLE_ITEM_COLUMNS])
                ids.append(int(cursor.lastrowid or 0))
        return ids

    async def known_veille_keys(self, keys: Sequence[str]) -> set[str]:
        known: set[str] = set()
        for start in range(0, len(keys), 500):  # SQLite caps bound parameters
            chunk = keys[start:start + 500]
            cursor = await self._db.execute(
                f"SELECT key FROM veille_items WHERE key IN ({', '.join('?' * len(chunk))})",
                chunk)
            known.update(row[0] for row in await cursor.fetchall())
        return known

    async def veille_items(self, *, limit: int = 200, label: str | None = None,
                           since_ts: float | None = None) -> list[dict[str, Any]]:
        """Items, newest first (by when they were seen, then by id)."""
        where, params = [], []
        if label is not None:
            where.append("label = ?")
            params.append(label)
        if since_ts is not None:
            where.append("seen_ts >= ?")
            params.append(since_ts)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._dicts(
            f"SELECT id, {', '.join(VEILLE_ITEM_COLUMNS)} FROM veille_items {clause} "
            "ORDER BY seen_ts DESC, id DESC LIMIT ?", (*params, limit))
        for row in rows:
            row["prices"] = json.loads(row["prices"])
        return rows

    async def veille_item(self, item_id: int) -> dict[str, Any] | None:
        rows = await self._dicts(
            f"SELECT id, {', '.join(VEILLE_ITEM_COLUMNS)} FROM veille_items WHERE id = ?",
            (item_id,))
        for row in rows:
            row["prices"] = json.loads(row["prices"])
        return rows[0] if rows else None

    async def record_veille_poll(self, location: str, name: str, ts: float, outcome: str,
                                 error: str | None, etag: str | None,
                                 last_modified: str | None, new_items: int) -> None:
        # A failed poll keeps the validators and the last success of the one before it.
        await self._write(
            "INSERT INTO veille_polls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (location) DO UPDATE SET name = excluded.name, ts = excluded.ts, "
            "outcome = excluded.outcome, error = excluded.error, "
            "etag = CASE WHEN excluded.outcome = 'error' THEN etag ELSE excluded.etag END, "
            "last_modified = CASE WHEN excluded.outcome = 'error' THEN last_modified "
            "ELSE excluded.last_modified END, "
            "ok_ts = COALESCE(excluded.ok_ts, ok_ts), new_items = excluded.new_items",
            (location, name, ts, outcome, error, etag, last_modified,
             None if outcome == "error" else ts, new_items))

    async def veille_polls(self) -> dict[str, dict[str, Any]]:
        rows = await self._dicts("SELECT * FROM veille_polls", ())
        return {row["location"]: row for row in rows}

    async def added_veille_sources(self) -> list[dict[str, Any]]:
        return await self._dicts("SELECT name, location, kind, provider, added_ts FROM "
                                 "veille_sources ORDER BY added_ts", ())

    async def add_veille_source(self, name: str, location: str, kind: str,
                                provider: str | None, ts: float) -> None:
        await self._write("INSERT INTO veille_sources VALUES (?, ?, ?, ?, ?)",
                          (name, location, kind, provider, ts))

    async def remove_veille_source(self, name: str) -> bool:
        cursor = await self._write("DELETE FROM veille_sources WHERE name = ?", (name,))
        return cursor.rowcount == 1

    async def price_updates(self) -> list[dict[str, Any]]:
        return await self._dicts("SELECT provider, model, input_per_mtok, output_per_mtok, "
                                 "item_id, ts FROM price_updates ORDER BY ts", ())

    async def set_price_update(self, provider: str, model: str, input_per_mtok: float,
                               output_per_mtok: float, item_id: int | None, ts: float) -> None:
        await self._write("INSERT OR REPLACE INTO price_updates VALUES (?, ?, ?, ?, ?, ?)",
                          (provider, model, input_per_mtok, output_per_mtok, item_id, ts))
