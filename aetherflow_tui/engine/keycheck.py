"""The sandbox test a key passes before it may carry real traffic.

One real, minimal completion against the provider: the key must authenticate, the answer
must come back in time, and what the provider says it billed (where it says so) must
match what our price table makes of the reported usage.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .providers.base import ChatResult, ProviderError
from .usage import Cost

SANDBOX_PROMPT = "Reply with the single word OK."
# Enough for reasoning models, which think before they answer; still a fraction of a cent.
SANDBOX_MAX_TOKENS = 64
SANDBOX_MAX_LATENCY_S = 30.0
# Billed and computed costs may differ by rounding and by cache discounts we cannot see.
COST_TOLERANCE = 0.10
COST_TOLERANCE_USD = 1e-6


class KeyCheckState(StrEnum):
    UNTESTED = "untested"
    TESTING = "testing"
    AWAITING_APPROVAL = "awaiting approval"
    ACTIVE = "active"
    FAILED = "failed"
    REJECTED = "rejected"  # passed, but the operator declined to activate it


@dataclass(frozen=True, slots=True)
class KeyCheck:
    provider: str
    state: KeyCheckState
    reason: str
    ts: float
    latency_s: float | None = None
    usd: float | None = None
    billed_usd: float | None = None

    @property
    def active(self) -> bool:
        return self.state is KeyCheckState.ACTIVE


def judge(result: ChatResult | None, error: ProviderError | None, cost: Cost,
          announced: tuple[float, float] | None = None) -> tuple[bool, str]:
    """Did the sandbox call pass, and why (one line for the operator).

    `announced` ($ per Mtok in, out): the price a veille announcement gave; the bill is
    checked against it rather than against the price table, which may predate it.
    """
    if error is not None:
        if error.kind == "auth":
            return False, f"the key was refused: {error.excerpt or error.message}"
        return False, f"the test call failed ({error.kind}): {error.excerpt or error.message}"
    assert result is not None
    latency = f"{result.duration_s * 1000:.0f} ms"
    if result.duration_s > SANDBOX_MAX_LATENCY_S:
        return False, f"answered, but in {latency} (limit {SANDBOX_MAX_LATENCY_S:.0f} s)"
    if result.usage.estimated:
        return False, "answered without reporting token usage: its calls cannot be priced"
    if announced is not None:
        agrees, said = against_announcement(result, *announced)
        return agrees, f"authenticated in {latency}; {said}"
    if result.billed_usd is not None and cost.usd is not None:
        gap = abs(result.billed_usd - cost.usd)
        if gap > max(COST_TOLERANCE * cost.usd, COST_TOLERANCE_USD):
            return False, (f"billed ${result.billed_usd:.8f} but the price table says "
                           f"${cost.usd:.8f}: check the model's prices")
        return True, f"authenticated in {latency}; billed cost matches the price table"
    if cost.usd is None:
        return True, f"authenticated in {latency}; model unpriced: set price_in/price_out"
    return True, f"authenticated in {latency}; priced from usage (no billed figure sent)"


def against_announcement(result: ChatResult, announced_in: float, announced_out: float
                         ) -> tuple[bool, str]:
    """Did the provider bill what its announcement said, for the tokens it reported?"""
    usage = result.usage
    expected = (usage.input_tokens * announced_in + usage.output_tokens * announced_out) / 1e6
    said = f"${announced_in:g} in, ${announced_out:g} out per Mtok"
    if result.billed_usd is None:
        return True, (f"no billed figure sent: the announced price ({said}) is checked on "
                      "the invoice, not here")
    gap = result.billed_usd - expected
    if gap > max(COST_TOLERANCE * expected, COST_TOLERANCE_USD):
        return False, (f"billed ${result.billed_usd:.8f} where the announcement ({said}) "
                       f"makes ${expected:.8f}: more than announced")
    return True, f"billed ${result.billed_usd:.8f}, as announced ({said}: ${expected:.8f})"
