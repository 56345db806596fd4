"""A veille item as stored: what the feed said (made safe), its label and its prices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Quote:
    """A price read from an item: $ per million tokens, None where it did not say."""

    provider: str | None
    model: str | None
    input_per_mtok: float | None
    output_per_mtok: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Quote:
        return cls(data.get("provider"), data.get("model"), data.get("input_per_mtok"),
                   data.get("output_per_mtok"))

    def as_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model,
                "input_per_mtok": self.input_per_mtok, "output_per_mtok": self.output_per_mtok}

    @property
    def complete(self) -> bool:
        return (self.provider is not None and self.model is not None
                and self.input_per_mtok is not None and self.output_per_mtok is not None)


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
    prices: tuple[Quote, ...]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> VeilleItem:
        return cls(row["id"], row["source"], row["title"], row["summary"], row["link"],
                   row["published_ts"], row["seen_ts"], row["label"], row["confidence"],
                   tuple(Quote.from_json(q) for q in row["prices"]))

    @property
    def when(self) -> float:
        """When it happened: its publication date, else when we first saw it."""
        return self.published_ts if self.published_ts is not None else self.seen_ts
