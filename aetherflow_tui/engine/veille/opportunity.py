"""Is an announced offer worth the operator's time? The veille report that says so.

An offer is weighed against what the bouquet costs now, at the operator's own usage: the
tokens really sent and received over the last 30 days. Cost is the objective the router
serves (the cheapest adequate provider), so an offer is an opportunity when it is cheaper
by at least [veille] min_saving_pct; the report adds what the operator weighs besides
price: latency, quality, and how much the factory would depend on the newcomer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .extract import PriceQuote

DAY_S = 86_400.0
MONTH_DAYS = 30
# With no traffic to learn from, prices are compared on a typical chat mix.
DEFAULT_INPUT_SHARE = 0.75


@dataclass(frozen=True, slots=True)
class Usage:
    """Real traffic (canaries and sandbox tests apart) over the window it covers."""

    input_tokens: int
    output_tokens: int
    usd: float
    days: float  # how many days of history that is, at most MONTH_DAYS

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def monthly_factor(self) -> float:
        return MONTH_DAYS / max(self.days, 1.0)

    def input_share(self) -> float:
        return self.input_tokens / self.tokens if self.tokens else DEFAULT_INPUT_SHARE


@dataclass(frozen=True, slots=True)
class Baseline:
    """What the bouquet pays now, $ per million tokens at the usage's mix."""

    per_mtok: float | None  # None: no priced API provider carries traffic or is routable
    how: str  # one line: where the figure comes from
    latency_s: float | None  # the bouquet's typical latency now
    params_b: float | None  # the size of the model that carries most traffic


@dataclass(frozen=True, slots=True)
class Candidate:
    """The offered provider as the bouquet knows it (or not)."""

    in_bouquet: bool
    model_in_bouquet: bool
    routable: bool
    keyring: bool  # its key goes in the keychain: the funnel's key dialog can take it
    console_url: str | None
    zone: str | None
    latency_s: float | None  # measured here (canaries, real calls), if ever
    params_b: float | None
    outages_30d: int  # outage items about it in the last 30 days
    geopolitical_30d: int  # geopolitical-risk items about it
    other_routable: int  # API providers routable besides it


@dataclass(frozen=True, slots=True)
class Report:
    provider: str
    model: str
    input_per_mtok: float
    output_per_mtok: float
    offer_per_mtok: float  # at the usage's mix
    baseline_per_mtok: float | None
    baseline_how: str
    saving_pct: float | None
    monthly_usd: float  # the offer at current usage
    current_monthly_usd: float
    latency: str
    quality: str
    risk: str  # low, medium, high
    risk_reasons: tuple[str, ...]
    next_step: str  # what approving does
    funnel: bool  # approving walks the key-acquisition funnel
    console_url: str | None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["risk_reasons"] = list(self.risk_reasons)
        return data

    def lines(self) -> list[str]:
        """The report as the operator reads it, one fact a line."""
        saving = ("" if self.saving_pct is None else f" ({self.saving_pct:.0f}% cheaper)")
        return [
            f"offer: {self.provider}/{self.model} at ${self.input_per_mtok:g} in, "
            f"${self.output_per_mtok:g} out per Mtok = ${self.offer_per_mtok:.4g}/Mtok at "
            f"your mix{saving}",
            f"now: {self.baseline_how}",
            f"monthly cost at current usage: ${self.monthly_usd:.2f} "
            f"(now ${self.current_monthly_usd:.2f})",
            f"latency: {self.latency}",
            f"quality: {self.quality}",
            f"dependency risk: {self.risk.upper()}: {'; '.join(self.risk_reasons)}",
            f"approving: {self.next_step}",
        ]


def blended(input_per_mtok: float, output_per_mtok: float, input_share: float) -> float:
    return input_per_mtok * input_share + output_per_mtok * (1 - input_share)


def assess(quote: PriceQuote, usage: Usage, baseline: Baseline, candidate: Candidate, *,
           min_saving_pct: float) -> Report | None:
    """The report when the offer beats the bouquet by min_saving_pct, else None."""
    if not quote.complete:
        return None
    assert quote.provider and quote.model and quote.input_per_mtok is not None
    assert quote.output_per_mtok is not None
    if candidate.routable and candidate.model_in_bouquet:
        return None  # already in routing: a new price is a matrix update, not an offer
    share = usage.input_share()
    offer = blended(quote.input_per_mtok, quote.output_per_mtok, share)
    saving_pct = None
    if baseline.per_mtok is not None:
        if baseline.per_mtok <= 0:
            return None  # nothing beats free
        saving_pct = (1 - offer / baseline.per_mtok) * 100
        if saving_pct < min_saving_pct:
            return None
    factor = usage.monthly_factor
    monthly = offer * usage.tokens / 1e6 * factor
    risk, reasons = _risk(candidate)
    next_step, funnel = _next_step(quote, candidate)
    return Report(
        provider=quote.provider, model=quote.model, input_per_mtok=quote.input_per_mtok,
        output_per_mtok=quote.output_per_mtok, offer_per_mtok=offer,
        baseline_per_mtok=baseline.per_mtok, baseline_how=baseline.how,
        saving_pct=saving_pct, monthly_usd=monthly, current_monthly_usd=usage.usd * factor,
        latency=_latency(baseline, candidate), quality=_quality(baseline, candidate),
        risk=risk, risk_reasons=tuple(reasons), next_step=next_step, funnel=funnel,
        console_url=candidate.console_url,
    )


def _latency(baseline: Baseline, candidate: Candidate) -> str:
    if candidate.latency_s is None:
        return "not measured yet: the sandbox test measures it before any traffic goes"
    if baseline.latency_s is None:
        return f"{candidate.latency_s:.2f} s measured here; nothing to compare with yet"
    gain = (1 - candidate.latency_s / baseline.latency_s) * 100
    word = "faster" if gain >= 0 else "slower"
    return (f"{candidate.latency_s:.2f} s measured here vs {baseline.latency_s:.2f} s now "
            f"({abs(gain):.0f}% {word})")


def _quality(baseline: Baseline, candidate: Candidate) -> str:
    if candidate.params_b is None:
        return "the announcement gives no size or score to compare"
    if baseline.params_b is None:
        return f"{candidate.params_b:g}B parameters; the current model's size is unknown"
    word = ("a larger model" if candidate.params_b > baseline.params_b
            else "a smaller model" if candidate.params_b < baseline.params_b else "same size")
    return f"{candidate.params_b:g}B vs {baseline.params_b:g}B parameters now ({word})"


def _risk(candidate: Candidate) -> tuple[str, list[str]]:
    reasons = []
    level = 0
    if candidate.geopolitical_30d:
        level = 2
        reasons.append(f"{candidate.geopolitical_30d} geopolitical-risk item(s) about it in "
                       "30 days")
    if candidate.outages_30d:
        level = max(level, 2 if candidate.outages_30d >= 3 else 1)
        reasons.append(f"{candidate.outages_30d} outage item(s) about it in 30 days")
    if candidate.other_routable == 0:
        level = 2
        reasons.append("no other API provider is routable: it would carry everything")
    elif candidate.other_routable == 1:
        level = max(level, 1)
        reasons.append("one other API provider to fall back on")
    else:
        reasons.append(f"{candidate.other_routable} other API providers to fall back on")
    if candidate.zone:
        reasons.append(f"serves from zone {candidate.zone}")
    return ("low", "medium", "high")[level], reasons


def _next_step(quote: PriceQuote, candidate: Candidate) -> tuple[str, bool]:
    if not candidate.in_bouquet:
        return (f"note it; add [providers.{quote.provider}] (base_url, models) to the config "
                "to use it", False)
    if not candidate.model_in_bouquet:
        return (f"note it; add model {quote.model!r} to [providers.{quote.provider}] in the "
                "config to route to it", False)
    if not candidate.keyring:
        return (f"note it; its key comes from the environment: set it, then "
                f"`aetherflow key test {quote.provider}`", False)
    where = candidate.console_url or "the provider's console"
    return (f"copy the billing URL ({where}), open the key dialog, test the key against the "
            "announced price, then a last approval puts it into routing", True)
