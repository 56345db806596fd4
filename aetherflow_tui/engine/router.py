"""Which provider and model does a piece of work: the rules, the limits, the live scores.

For a step the router (1) picks the roles its type asks for (heavier roles for heavy
work), (2) drops what cannot or must not be called — no tested key, an open circuit, a
model with no price, a call above a per-call ceiling — and (3) ranks the rest: models with
a wanted role first, then the others as a last resort, each group by the rule's preference
(cheapest, fastest, or a balanced score of price, live latency, success rate and energy).
The first candidate gets the call; the next ones are the fallbacks, alternating providers.

A decision is a pure function of the bouquet and the live stats, cheap enough to run for
every attempt of every step (benchmarks/routing.py: p50 in microseconds with 20 providers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from .budget import BudgetGuard
from .config import Bouquet, ModelSpec, ProviderSpec, RuleSpec
from .health import HealthBook
from .ledger import PriceTable, Rates

# A provider we have not heard from yet is assumed to answer in this long (seconds).
PRIOR_LATENCY_S = 2.0
PRIOR_LATENCY_FAST_S = 1.0
PRIOR_SUCCESS = 0.95


class Mode(StrEnum):
    FAST = "fast"  # the fastest healthy provider for every step
    BUILD = "build"  # each type's rule: cheapest, fastest or balanced
    DOUBLE_CHECK = "double-check"  # BUILD, then a different provider audits each result


@dataclass(frozen=True, slots=True)
class Candidate:
    provider: ProviderSpec
    model: ModelSpec
    rates: Rates
    adequate: bool  # has a role the rule asks for
    free: bool
    est_usd: float  # the expected cost, for ranking (the budget reserves the worst case)
    latency_s: float
    latency_measured: bool
    success: float
    wh_per_1k: float | None
    score: float

    @property
    def label(self) -> str:
        return f"{self.provider.id}/{self.model.id}"


@dataclass(frozen=True, slots=True)
class Route:
    step_type: str
    roles: tuple[str, ...]
    prefer: str
    heavy: bool
    candidates: tuple[Candidate, ...]
    excluded: tuple[tuple[str, str], ...]  # (provider/model, why)

    def reason(self, chosen: Candidate | None = None) -> str:
        """One line for the decision log and the step monitor."""
        chosen = chosen or (self.candidates[0] if self.candidates else None)
        wanted = "/".join(self.roles) if self.roles else "any role"
        head = f"{self.step_type}: {'heavy work → ' if self.heavy else ''}{wanted}, {self.prefer}"
        if chosen is None:
            why = "; ".join(f"{label}: {reason}" for label, reason in self.excluded[:4])
            return f"{head}; no candidate ({why or 'no model'})"
        latency = (f"p50 {chosen.latency_s:.2f} s" if chosen.latency_measured
                   else f"~{chosen.latency_s:.0f} s assumed")
        fit = "" if chosen.adequate else f" (no {wanted} model available)"
        tail = f"{len(self.candidates) - 1} fallback(s)"
        if self.excluded:
            tail += f", {len(self.excluded)} excluded"
        return (f"{head} → {chosen.label}{fit}: est ${chosen.est_usd:.5f}, {latency}, "
                f"{chosen.success:.0%} ok; {tail}")


class _Entry:
    """A (provider, model) pair with what routing reads about it precomputed."""

    __slots__ = ("fast", "free", "label", "model", "provider", "rates", "roles", "wh_per_1k")

    def __init__(self, provider: ProviderSpec, model: ModelSpec, rates: Rates | None) -> None:
        self.provider = provider
        self.model = model
        self.rates = rates
        self.roles = frozenset(model.roles)
        self.free = provider.free_tier or (rates is not None and rates.input == 0
                                           and rates.output == 0)
        self.fast = "fast" in self.roles
        self.label = f"{provider.id}/{model.id}"
        self.wh_per_1k: float | None = None


class Router:
    def __init__(self, bouquet: Bouquet, prices: PriceTable, health: HealthBook,
                 guard: BudgetGuard) -> None:
        self.bouquet = bouquet
        self.health = health
        self.guard = guard
        self.routable: set[str] = set()  # providers with a usable, tested key
        self._entries = [_Entry(p, m, prices.rates(p, m))
                         for p in bouquet.providers.values() if p.enabled for m in p.models]

    def estimate_energy(self, wh_per_1k: Callable[[ProviderSpec, ModelSpec], float | None]
                        ) -> None:
        """Fill in energy per 1,000 output tokens (slow: EcoLogits; call it in a thread)."""
        for entry in self._entries:
            entry.wh_per_1k = wh_per_1k(entry.provider, entry.model)

    def route(self, step_type: str, *, input_tokens: int, worst_input_tokens: int,
              max_tokens: int, complexity: float = 0.5, estimated_tokens: int = 1000,
              provider: str | None = None, model: str | None = None, mode: Mode = Mode.BUILD,
              avoid: Iterable[str] = ()) -> Route:
        rule = self.bouquet.routing.rule(step_type)
        heavy = bool(rule.heavy_roles) and (complexity > rule.heavy_complexity
                                            or estimated_tokens > rule.heavy_tokens)
        roles = rule.heavy_roles if heavy else rule.roles
        prefer = "fastest" if mode is Mode.FAST else rule.prefer
        wanted = frozenset(roles)
        avoid = frozenset(avoid)
        out_tokens = min(max_tokens, max(1, estimated_tokens - input_tokens))
        excluded: list[tuple[str, str]] = []
        rows: list[tuple[_Entry, float, float, bool, float]] = []
        health = self.health
        guard = self.guard
        for entry in self._entries:
            spec = entry.provider
            if provider is not None and spec.id != provider:
                continue
            if model is not None and entry.model.id != model:
                continue
            pid = spec.id
            why = None
            if pid in avoid or entry.label in avoid:
                why = "already tried for this step" if mode is not Mode.DOUBLE_CHECK else \
                    "produced the result under audit"
            elif pid not in self.routable:
                why = "no tested key"
            elif not health.circuit(pid).allows_traffic():
                why = "circuit open"
            else:
                refusal = guard.per_call(entry.rates, worst_input_tokens, max_tokens)
                if refusal is not None:
                    why = refusal.reason
            if why is not None:
                excluded.append((f"{pid}/{entry.model.id}", why))
                continue
            rates = entry.rates
            assert rates is not None  # per_call refuses unpriced models
            stats = health.stats(pid)
            measured = stats.latency_p50_s is not None
            if measured:
                latency = stats.latency_p50_s
                success = stats.success
            else:
                latency = PRIOR_LATENCY_FAST_S if entry.fast else PRIOR_LATENCY_S
                success = PRIOR_SUCCESS
            est = (input_tokens * rates.input + out_tokens * rates.output) / 1_000_000
            rows.append((entry, est, latency, measured, success))  # type: ignore[arg-type]
        ranked = self._rank(rows, wanted, prefer, rule)
        return Route(step_type, roles, prefer, heavy, tuple(ranked), tuple(excluded))

    def _rank(self, rows: list[tuple[_Entry, float, float, bool, float]],
              wanted: frozenset[str], prefer: str, rule: RuleSpec) -> list[Candidate]:
        if not rows:
            return []
        free_first = rule.free_first and prefer != "fastest"  # FAST: speed before price
        weights = self.bouquet.routing.weights
        max_usd = max(r[1] for r in rows) or 1.0
        max_latency = max(r[2] for r in rows) or 1.0
        max_wh = max((r[0].wh_per_1k or 0.0) for r in rows) or 1.0
        scored: list[tuple[tuple[float, ...], Candidate]] = []
        for entry, est, latency, measured, success in rows:
            adequate = not wanted or not wanted.isdisjoint(entry.roles)
            wh = entry.wh_per_1k
            score = (weights.price * est / max_usd + weights.latency * latency / max_latency
                     + weights.success * (1.0 - success)
                     + weights.energy * (wh or 0.0) / max_wh)
            # A failing provider costs a retry: divide by the success rate.
            if prefer == "cheapest":
                key = (est / max(success, 0.05), latency)
            elif prefer == "fastest":
                key = (latency / max(success, 0.05), est)
            else:
                key = (score,)
            free_rank = 0.0 if (free_first and entry.free) else 1.0
            candidate = Candidate(entry.provider, entry.model, entry.rates,  # type: ignore[arg-type]
                                  adequate, entry.free, est, latency, measured, success, wh,
                                  score)
            scored.append(((0.0 if adequate else 1.0, free_rank, *key), candidate))
        scored.sort(key=lambda pair: pair[0])
        return _alternate_providers([c for _, c in scored])


def _alternate_providers(ranked: list[Candidate]) -> list[Candidate]:
    """Keep the best first, but let fallbacks try another provider before another model of
    the one that just failed (within each adequacy group)."""
    if len(ranked) < 3:
        return ranked
    out: list[Candidate] = []
    for adequate in (True, False):
        group = [c for c in ranked if c.adequate is adequate]
        seen: set[str] = set()
        later: list[Candidate] = []
        for candidate in group:
            if candidate.provider.id in seen:
                later.append(candidate)
            else:
                seen.add(candidate.provider.id)
                out.append(candidate)
        out.extend(later)
    return out
