"""A veille item as stored: what the feed said (made safe), its label and its prices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .extract import PriceQuote


@dataclass(frozen=True, slots=True)
class VeilleItem:
    id: int
    source: str
    title: str
    summary: str
    link: str | None
    published_ts: float | None
    seen_ts: float
    label: str
    confidence: float
    prices: tuple[PriceQuote, ...]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> VeilleItem:
        return cls(row["id"], row["source"], row["title"], row["summary"], row["link"],
                   row["published_ts"], row["seen_ts"], row["label"], row["confidence"],
                   tuple(PriceQuote.from_json(q) for q in row["prices"]))

    @property
    def when(self) -> float:
        """When it happened: its publication date, else when we first saw it."""
        return self.published_ts if self.published_ts is not None else self.seen_ts
