"""The canary: a fixed tiny request with a checkable answer, sent to every provider.

The question has one right answer a model of any size gets right, so a wrong or empty
answer is a failure as real as an HTTP 503. The token allowance leaves room for a
reasoning model's thoughts; a plain model answers in two or three tokens, and that is
what is billed.
"""

from __future__ import annotations

import re

from .config import ModelSpec, ProviderSpec
from .ledger import PriceTable

CANARY_PROMPT = "What is 7 + 5? Reply with the number only."
_RIGHT = re.compile(r"(?<![\d.])12(?![\d.]*\d)|\btwelve\b", re.IGNORECASE)
_THOUGHTS = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)


def check(answer: str, finish_reason: str | None = None) -> tuple[bool, str]:
    """Did the canary get it right; if not, why (one line)."""
    visible = _THOUGHTS.sub("", answer).strip()
    if _RIGHT.search(visible):
        return True, "answered 12"
    if not visible:
        if finish_reason == "length":
            return False, "no answer within the canary's token allowance (still thinking)"
        return False, "empty answer"
    shown = visible if len(visible) <= 40 else visible[:39] + "…"
    return False, f"wrong answer {shown!r} (expected 12)"


def probed_by_canary(spec: ProviderSpec) -> bool:
    """Providers the canary covers: enabled API endpoints, the local server kind included.
    In-process llama.cpp models are not probed: loading one to ask it 7 + 5 would cost
    more memory than the answer is worth, and its health is this machine's."""
    return spec.enabled and spec.canary and spec.kind != "llama_cpp"


def canary_model(spec: ProviderSpec, prices: PriceTable) -> ModelSpec:
    """canary_model when set, else the provider's cheapest priced model."""
    if spec.canary_model is not None:
        model = spec.model(spec.canary_model)
        assert model is not None  # the config checked it
        return model

    def price(model: ModelSpec) -> float:
        rates = prices.rates(spec, model)
        return rates.input + rates.output if rates else float("inf")

    return min(spec.models, key=price)


class CanaryBudget:
    """The daily cap on canary spend, across providers; reserved before a probe goes out."""

    def __init__(self, daily_usd: float) -> None:
        self.daily_usd = daily_usd
        self.day = ""
        self.spent = 0.0
        self.reserved = 0.0

    def sync(self, day: str, spent: float) -> None:
        self.day, self.spent = day, spent

    def reserve(self, day: str, worst_usd: float) -> bool:
        if day != self.day:
            self.day, self.spent = day, 0.0
        if self.spent + self.reserved + worst_usd > self.daily_usd:
            return False
        self.reserved += worst_usd
        return True

    def settle(self, worst_usd: float, actual_usd: float) -> None:
        self.reserved = max(0.0, self.reserved - worst_usd)
        self.spent += actual_usd
