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
from .config import Bouquet, BudgetSpec, ModelSpec, ProviderSpec, WeightsSpec
from .health import HealthBook
from .ledger import PriceTable, Rates
from .modes import ResponseMode

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


def _free(provider: ProviderSpec, rates: Rates | None) -> bool:
    return provider.free_tier or (rates is not None and rates.input == 0 and rates.output == 0)


class _Entry:
    """A (provider, model) pair with what routing reads about it precomputed."""

    __slots__ = ("fast", "free", "label", "local", "model", "provider", "rates", "refused",
                 "roles", "wh_per_1k")

    def __init__(self, provider: ProviderSpec, model: ModelSpec, rates: Rates | None) -> None:
        self.provider = provider
        self.model = model
        self.rates = rates
        self.roles = frozenset(model.roles)
        self.free = _free(provider, rates)
        self.fast = "fast" in self.roles
        self.local = provider.local
        self.label = f"{provider.id}/{model.id}"
        self.wh_per_1k: float | None = None
        # The last per-call refusal, keyed by the request's size: a pure function of the
        # rates, the size and the limits, and steps of a plan ask the same sizes again.
        self.refused: tuple[tuple[int, int, BudgetSpec], str | None] | None = None


# A ranked row: [sort key, entry, est $, latency s, latency measured, success]. The sort
# key starts with the group (0 where the response mode wants the work and the role fits,
# 1 wrong role, +2 on the other side of local/API), then the free-tier rank, then the
# rule's preference.
_Row = tuple


class Route:
    """A decision: the ranked candidates and what was left out, with why.

    Ranking works on light rows; the Candidate objects are only built when someone reads
    them (the scheduler reads the first one and one line of reason).
    """

    __slots__ = ("_candidates", "_ranked", "_weights", "excluded", "heavy", "pinned",
                 "prefer", "response", "roles", "step_type")

    def __init__(self, step_type: str, roles: tuple[str, ...], prefer: str, heavy: bool,
                 ranked: list[_Row], excluded: list[tuple[str, str]],
                 response: ResponseMode = ResponseMode.BOUQUET,
                 weights: WeightsSpec | None = None, pinned: str | None = None) -> None:
        self.response = response
        self.pinned = pinned  # the provider and/or model the step was pinned to
        self.step_type = step_type
        self.roles = roles
        self.prefer = prefer
        self.heavy = heavy
        self._ranked = ranked
        self._weights = weights or WeightsSpec()
        self.excluded = excluded  # (provider/model, why)
        self._candidates: tuple[Candidate, ...] | None = None

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        if self._candidates is None:
            norm = _norms(self._ranked)
            self._candidates = tuple(self._candidate(row, norm) for row in self._ranked)
        return self._candidates

    @property
    def best(self) -> Candidate | None:
        """The first candidate, built alone (what a dispatch needs)."""
        if self._candidates is not None:
            return self._candidates[0] if self._candidates else None
        return self._candidate(self._ranked[0], _norms(self._ranked)) if self._ranked else None

    def _candidate(self, row: _Row, norm: tuple[float, float, float]) -> Candidate:
        key, entry, est, latency, measured, success = row
        wh = entry.wh_per_1k
        return Candidate(entry.provider, entry.model, entry.rates, not key[0] & 1, entry.free,
                         est, latency, measured, success, wh,
                         _score(self._weights, norm, est, latency, success, wh))

    def __len__(self) -> int:
        return len(self._ranked)

    def reason(self, chosen: Candidate | None = None) -> str:
        """One line for the decision log and the step monitor."""
        chosen = chosen or self.best
        wanted = "/".join(self.roles) if self.roles else "any role"
        head = f"{self.step_type}: {'heavy work → ' if self.heavy else ''}{wanted}, {self.prefer}"
        if self.response is not ResponseMode.BOUQUET:
            head = f"{self.response.value.upper()} · {head}"
        if chosen is None:
            why = "; ".join(f"{label}: {reason}" for label, reason in self.excluded[:4])
            return f"{head}; no candidate ({why or 'no model'})"
        latency = (f"p50 {chosen.latency_s:.2f} s" if chosen.latency_measured
                   else f"~{chosen.latency_s:.0f} s assumed")
        if self.pinned is not None:
            # The pin chose, not the bouquet: other providers may well have the role.
            fit = f" (pinned to {self.pinned}" + ("" if chosen.adequate
                                                  else f", which has no {wanted} model") + ")"
        else:
            fit = "" if chosen.adequate else f" (no {wanted} model available)"
        tail = f"{len(self._ranked) - 1} fallback(s)"
        if self.excluded:
            tail += f", {len(self.excluded)} excluded"
        return (f"{head} → {chosen.label}{fit}: est ${chosen.est_usd:.5f}, {latency}, "
                f"{chosen.success:.0%} ok; {tail}")


class Router:
    def __init__(self, bouquet: Bouquet, prices: PriceTable, health: HealthBook,
                 guard: BudgetGuard) -> None:
        self.bouquet = bouquet
        self.health = health
        self.guard = guard
        self.routable: set[str] = set()  # providers with a usable, tested key
        self._entries = [_Entry(p, m, prices.rates(p, m))
                         for p in bouquet.providers.values() if p.enabled for m in p.models]
        # Grouped by provider, so the provider-wide checks run once per provider.
        self._by_provider: list[tuple[ProviderSpec, list[_Entry]]] = []
        for entry in self._entries:
            if not self._by_provider or self._by_provider[-1][0] is not entry.provider:
                self._by_provider.append((entry.provider, []))
            self._by_provider[-1][1].append(entry)

    def reprice(self, prices: PriceTable) -> None:
        """Read the rates again: the operator approved a new price."""
        for entry in self._entries:
            entry.rates = prices.rates(entry.provider, entry.model)
            entry.free = _free(entry.provider, entry.rates)
            entry.refused = None

    def estimate_energy(self, wh_per_1k: Callable[[ProviderSpec, ModelSpec], float | None]
                        ) -> None:
        """Fill in energy per 1,000 output tokens (slow: EcoLogits; call it in a thread)."""
        for entry in self._entries:
            entry.wh_per_1k = wh_per_1k(entry.provider, entry.model)

    def route(self, step_type: str, *, input_tokens: int, worst_input_tokens: int,
              max_tokens: int, complexity: float = 0.5, estimated_tokens: int = 1000,
              provider: str | None = None, model: str | None = None, mode: Mode = Mode.BUILD,
              avoid: Iterable[str] = (), response: ResponseMode = ResponseMode.BOUQUET
              ) -> Route:
        """response: BOUQUET ranks local models after every API model (the last fallback);
        HYBRID puts them first for [modes] local_types and ranks the APIs cheapest-first
        for the rest; SURVIVAL routes to local models only."""
        rule = self.bouquet.routing.rule(step_type)
        heavy = bool(rule.heavy_roles) and (complexity > rule.heavy_complexity
                                            or estimated_tokens > rule.heavy_tokens)
        roles = rule.heavy_roles if heavy else rule.roles
        prefer = "fastest" if mode is Mode.FAST else rule.prefer
        local_first = response is ResponseMode.SURVIVAL or (
            response is ResponseMode.HYBRID and step_type in self.bouquet.modes.local_types)
        if response is ResponseMode.HYBRID and not local_first and mode is not Mode.FAST:
            prefer = "cheapest"  # a cheap API handles the syntax
        avoid = frozenset(avoid)
        out_tokens = min(max_tokens, max(1, estimated_tokens - input_tokens))
        # The per-call ceilings as one dollar cap on the worst case, computed once; a model
        # above it is confirmed (and explained) by the guard itself.
        limits = self.guard.limits
        cap = min(limits.max_usd_per_request,
                  limits.max_usd_per_1k_tokens * max(1, worst_input_tokens + max_tokens) / 1000)
        size = (worst_input_tokens, max_tokens, limits)
        wanted = frozenset(roles)
        free_first = rule.free_first and prefer != "fastest"  # FAST: speed before price
        by_price = prefer == "cheapest"
        by_speed = prefer == "fastest"
        max_usd = max_latency = max_wh = 0.0
        excluded: list[tuple[str, str]] = []
        rows: list[_Row] = []
        add = rows.append
        health = self.health
        routable = self.routable
        tried = ("already tried for this step" if mode is not Mode.DOUBLE_CHECK
                 else "produced the result under audit")
        # Rank as the rows are built: one pass, one tuple per candidate. The balanced score
        # needs every row's figures first, so it keys the rows afterwards.
        for spec, entries in self._by_provider:
            pid = spec.id
            if provider is not None and pid != provider:
                continue
            if pid in avoid:
                why: str | None = tried
            elif response is ResponseMode.SURVIVAL and not spec.local:
                why = "SURVIVAL: local models only"
            elif pid not in routable:
                why = "no tested key"
            elif (stats := health.routing(pid)) is None:
                why = "circuit open"
            else:
                why = None
            if why is not None:
                excluded.extend((entry.label, why) for entry in entries
                                if model is None or entry.model.id == model)
                continue
            measured = stats.latency_p50_s is not None
            if measured:
                live_latency, live_success = stats.latency_p50_s, stats.success
            for entry in entries:
                if model is not None and entry.model.id != model:
                    continue
                if avoid and entry.label in avoid:
                    excluded.append((entry.label, tried))
                    continue
                rates = entry.rates
                if rates is None or (worst_input_tokens * rates.input
                                     + max_tokens * rates.output) / 1_000_000 > cap:
                    refused = entry.refused
                    if refused is None or refused[0] != size:
                        refusal = self.guard.per_call(rates, worst_input_tokens, max_tokens)
                        refused = entry.refused = (size, refusal and refusal.reason)
                    if refused[1] is not None:
                        excluded.append((entry.label, refused[1]))
                        continue
                    assert rates is not None
                if measured:
                    latency, success = live_latency, live_success
                else:
                    latency = PRIOR_LATENCY_FAST_S if entry.fast else PRIOR_LATENCY_S
                    success = PRIOR_SUCCESS
                est = (input_tokens * rates.input + out_tokens * rates.output) / 1_000_000
                group = (0 if entry.local is local_first else 2) + (
                    0 if not wanted or not wanted.isdisjoint(entry.roles) else 1)
                free_rank = 0 if free_first and entry.free else 1
                # A failing provider costs a retry: divide by the success rate.
                if by_price:
                    key: tuple[float, ...] = (group, free_rank,
                                              est / (success if success > 0.05 else 0.05),
                                              latency)
                elif by_speed:
                    key = (group, free_rank, latency / (success if success > 0.05 else 0.05),
                           est)
                else:
                    key = (group, free_rank)
                    # The scale of the balanced score, gathered on the way.
                    max_usd = est if est > max_usd else max_usd
                    max_latency = latency if latency > max_latency else max_latency
                    wh = entry.wh_per_1k
                    max_wh = wh if wh is not None and wh > max_wh else max_wh
                add((key, entry, est, latency, measured, success))
        weights = self.bouquet.routing.weights
        if rows and not (by_price or by_speed):
            max_usd, max_latency, max_wh = max_usd or 1.0, max_latency or 1.0, max_wh or 1.0
            w_usd, w_latency = weights.price / max_usd, weights.latency / max_latency
            w_success, w_wh = weights.success, weights.energy / max_wh
            # _score() inlined: this runs for every candidate of every balanced decision.
            rows = [((key[0], key[1], w_usd * est + w_latency * latency
                      + w_success * (1.0 - success) + w_wh * (entry.wh_per_1k or 0.0)),
                     entry, est, latency, measured, success)
                    for key, entry, est, latency, measured, success in rows]
        rows.sort(key=_sort_key)
        pinned = "/".join(p for p in (provider, model) if p is not None) or None
        return Route(step_type, roles, prefer, heavy, _alternate_providers(rows), excluded,
                     response, weights, pinned)


def _norms(rows: list[_Row]) -> tuple[float, float, float]:
    """The largest price, latency and energy among the candidates, to scale scores by."""
    max_usd = max_latency = max_wh = 0.0
    for _, entry, est, latency, _, _ in rows:
        max_usd = est if est > max_usd else max_usd
        max_latency = latency if latency > max_latency else max_latency
        wh = entry.wh_per_1k or 0.0
        max_wh = wh if wh > max_wh else max_wh
    return max_usd or 1.0, max_latency or 1.0, max_wh or 1.0


def _score(weights: WeightsSpec, norm: tuple[float, float, float], est: float,
           latency: float, success: float, wh: float | None) -> float:
    """The balanced score of price, latency, success and energy: lower is better."""
    max_usd, max_latency, max_wh = norm
    return (weights.price * est / max_usd + weights.latency * latency / max_latency
            + weights.success * (1.0 - success) + weights.energy * (wh or 0.0) / max_wh)


def _sort_key(row: _Row) -> tuple[float, ...]:
    return row[0]


def _alternate_providers(ranked: list[_Row]) -> list[_Row]:
    """Keep the best first, but let fallbacks try another provider before another model of
    the one that just failed (within each group of place and role fit, in order)."""
    if len(ranked) < 3:
        return ranked
    out: list[_Row] = []
    later: list[_Row] = []
    seen: set[str] = set()
    group = ranked[0][0][0]
    for row in ranked:  # already sorted: groups come in order
        if row[0][0] != group:
            out.extend(later)
            later.clear()
            seen.clear()
            group = row[0][0]
        pid = row[1].provider.id
        if pid in seen:
            later.append(row)
        else:
            seen.add(pid)
            out.append(row)
    out.extend(later)
    return out
