"""Routing: the seed's rules, the exclusions and their reasons, live latency, and circuits."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from aetherflow_tui.engine import config
from aetherflow_tui.engine.budget import BudgetGuard
from aetherflow_tui.engine.clock import FixedClock
from aetherflow_tui.engine.health import CircuitState, HealthBook
from aetherflow_tui.engine.ledger import PriceTable
from aetherflow_tui.engine.modes import ResponseMode
from aetherflow_tui.engine.records import CallRecord
from aetherflow_tui.engine.router import Mode, Route, Router
from tests.support.plans import model_entry, provider_table, tables

START = 1_700_000_000.0
DAY = "2023-11-14"


def provider(pid: str, *models: dict[str, object], free_tier: bool = False) -> str:
    return provider_table(pid, *models, base_url="http://127.0.0.1:9/v1", key="none",
                          free_tier=free_tier)


def model(model_id: str, roles: Iterable[str], price_in: float | None,
          price_out: float | None) -> dict[str, object]:
    return model_entry(model_id, roles=list(roles), price_in=price_in, price_out=price_out)


BUDGET = tables(budget={"daily_usd": 5.0, "max_usd_per_1k_tokens": 0.02,
                        "max_usd_per_request": 0.10})

# alpha: paid, one cheap/fast model; beta: a free tier, pricier per token; gamma: fast only.
ALPHA_MODELS = (
    model("alpha-mini", ["cheap", "fast"], 0.2, 0.4),
    model("alpha-coder", ["code"], 1.0, 2.0),
    model("alpha-max", ["quality"], 5.0, 10.0),
)
ALPHA = provider("alpha", *ALPHA_MODELS)
BETA_MODELS = (
    model("beta-chat", ["cheap", "chat"], 0.5, 1.0),
    model("beta-coder", ["code"], 0.8, 1.6),
)
BETA_FREE = provider("beta", *BETA_MODELS, free_tier=True)
BETA_PAID = provider("beta", *BETA_MODELS)
GAMMA = provider("gamma", model("gamma-proto", ["fast", "prototyping"], 0.1, 0.2))
SEED = BUDGET + ALPHA + BETA_FREE + GAMMA


class Fixture:
    def __init__(self, toml: str, routable: set[str] | None = None) -> None:
        self.bouquet = config.parse(toml, None)
        self.clock = FixedClock(START)
        self.health = HealthBook(self.clock)
        self.router = Router(self.bouquet, PriceTable(), self.health,
                             BudgetGuard(self.bouquet.budget))
        self.router.routable = set(self.bouquet.providers) if routable is None else routable

    def route(self, step_type: str, **kw: object) -> Route:
        sizes: dict[str, object] = {"input_tokens": 200, "worst_input_tokens": 800,
                                    "max_tokens": 500}
        return self.router.route(step_type, **(sizes | kw))  # type: ignore[arg-type]

    def answered(self, pid: str, seconds: float, times: int = 1) -> None:
        for _ in range(times):
            self.health.observe(CallRecord(ts=self.clock.now(), day=DAY, provider=pid,
                                           model="any", purpose="step", ok=True,
                                           duration_s=seconds))

    def overloaded(self, pid: str, times: int = 3, kind: str = "overloaded") -> None:
        for _ in range(times):
            self.health.observe(CallRecord(ts=self.clock.now(), day=DAY, provider=pid,
                                           model="any", purpose="step", ok=False,
                                           error_kind=kind, error="503"))


def labels(route: Route) -> list[str]:
    return [c.label for c in route.candidates]


def excluded(route: Route) -> dict[str, str]:
    return dict(route.excluded)


# --- the seed's rules ------------------------------------------------------------------


def test_analysis_goes_to_a_free_tier_cheap_model_first() -> None:
    route = Fixture(SEED).route("analysis")

    assert labels(route)[:2] == ["beta/beta-chat", "alpha/alpha-mini"]
    assert route.prefer == "cheapest"
    assert route.candidates[0].free


def test_analysis_without_a_free_tier_goes_to_the_cheapest_cheap_model() -> None:
    # gamma-proto costs less, but has no "cheap" role.
    route = Fixture(BUDGET + ALPHA + BETA_PAID + GAMMA).route("analysis")

    assert labels(route)[:2] == ["alpha/alpha-mini", "beta/beta-chat"]
    assert all("cheap" in c.model.roles for c in route.candidates[:2])
    assert route.candidates[0].est_usd < route.candidates[1].est_usd


def test_refactoring_goes_to_a_code_model() -> None:
    route = Fixture(SEED).route("refactoring")

    assert route.roles == ("code",)
    assert set(labels(route)[:2]) == {"alpha/alpha-coder", "beta/beta-coder"}
    assert all(c.adequate for c in route.candidates[:2])


@pytest.mark.parametrize(("complexity", "estimated_tokens"), [(0.8, 1000), (0.5, 5000)])
def test_heavy_code_generation_goes_to_a_quality_model(complexity: float,
                                                       estimated_tokens: int) -> None:
    route = Fixture(SEED).route("code_generation", complexity=complexity,
                                estimated_tokens=estimated_tokens)

    assert route.heavy
    assert route.roles == ("quality",)
    assert labels(route)[0] == "alpha/alpha-max"


def test_code_generation_at_the_thresholds_is_not_heavy() -> None:
    route = Fixture(SEED).route("code_generation", complexity=0.7, estimated_tokens=4000)

    assert not route.heavy
    assert route.roles == ("fast", "code")
    assert {"fast", "code"} & set(route.candidates[0].model.roles)
    assert labels(route)[0] != "alpha/alpha-max"


@pytest.mark.parametrize(("alpha_s", "gamma_s", "first"), [
    (0.2, 0.9, "alpha/alpha-mini"),
    (0.9, 0.2, "gamma/gamma-proto"),
])
def test_prototyping_goes_to_the_fastest_by_live_p50(alpha_s: float, gamma_s: float,
                                                     first: str) -> None:
    fixture = Fixture(SEED)
    fixture.answered("alpha", alpha_s, times=3)
    fixture.answered("gamma", gamma_s, times=3)

    route = fixture.route("prototyping")

    assert route.prefer == "fastest"
    assert labels(route)[0] == first
    assert route.candidates[0].latency_measured
    assert route.candidates[0].latency_s == pytest.approx(min(alpha_s, gamma_s))


def test_a_rule_in_the_config_replaces_the_seeds_rule() -> None:
    override = tables(routing={"rules": {"analysis": {"roles": ["quality"],
                                                      "prefer": "fastest"}}})
    fixture = Fixture(override + SEED)

    route = fixture.route("analysis")

    assert route.roles == ("quality",)
    assert route.prefer == "fastest"
    assert labels(route)[0] == "alpha/alpha-max"
    assert fixture.route("refactoring").roles == ("code",)  # other types keep the seed's


def test_fast_mode_picks_the_lowest_live_latency() -> None:
    fixture = Fixture(BUDGET + ALPHA + BETA_PAID + GAMMA)
    fixture.answered("alpha", 3.0)
    fixture.answered("beta", 0.1)

    build = fixture.route("analysis")
    fast = fixture.route("analysis", mode=Mode.FAST)

    assert labels(build)[0] == "alpha/alpha-mini"  # cheapest
    assert fast.prefer == "fastest"
    assert labels(fast)[0] == "beta/beta-chat"


def test_fast_mode_prefers_speed_over_a_free_tier() -> None:
    fixture = Fixture(SEED)
    fixture.answered("alpha", 0.2)
    fixture.answered("beta", 3.0)

    route = fixture.route("analysis", mode=Mode.FAST)

    assert labels(route)[0] == "alpha/alpha-mini"


# --- exclusions ------------------------------------------------------------------------


def test_a_provider_without_a_tested_key_is_excluded() -> None:
    route = Fixture(SEED, routable={"alpha", "beta"}).route("prototyping")

    assert excluded(route) == {"gamma/gamma-proto": "no tested key"}
    assert "gamma/gamma-proto" not in labels(route)


def test_a_provider_with_an_open_circuit_is_excluded() -> None:
    fixture = Fixture(SEED)
    fixture.overloaded("beta", times=3)

    route = fixture.route("analysis")

    assert excluded(route) == {"beta/beta-chat": "circuit open",
                               "beta/beta-coder": "circuit open"}
    assert labels(route)[0] == "alpha/alpha-mini"


def test_one_outage_error_stops_the_traffic() -> None:
    fixture = Fixture(SEED)
    fixture.overloaded("beta", times=1)

    assert "beta/beta-chat" not in labels(fixture.route("analysis"))


def test_two_rate_limits_do_not_open_the_circuit() -> None:
    # A 429 says "slower", not "down": only a streak of them opens the circuit.
    fixture = Fixture(SEED)
    fixture.overloaded("beta", times=2, kind="rate_limited")

    assert labels(fixture.route("analysis"))[0] == "beta/beta-chat"


def test_an_unpriced_model_is_excluded() -> None:
    delta = provider("delta", model("mystery-model-7f3a", ["cheap"], None, None))
    route = Fixture(SEED + delta).route("analysis")

    assert "no known price" in excluded(route)["delta/mystery-model-7f3a"]
    assert "delta/mystery-model-7f3a" not in labels(route)


def test_a_model_above_the_per_1k_ceiling_is_excluded() -> None:
    omega = provider("omega", model("omega-ultra", ["quality"], 100.0, 200.0))
    route = Fixture(SEED + omega).route("review")

    assert "per 1k tokens" in excluded(route)["omega/omega-ultra"]
    assert labels(route)[0] == "alpha/alpha-max"


def test_a_request_above_the_per_request_ceiling_is_excluded() -> None:
    # 300,000 tokens of answer from alpha-max: $3 worst case; from gamma-proto: $0.06.
    route = Fixture(SEED).route("prototyping", max_tokens=300_000)

    assert "per-request ceiling" in excluded(route)["alpha/alpha-max"]
    assert "gamma/gamma-proto" in labels(route)
    assert "gamma/gamma-proto" not in excluded(route)


def test_avoid_by_provider_excludes_all_its_models() -> None:
    route = Fixture(SEED).route("analysis", avoid={"beta"})

    assert excluded(route) == {"beta/beta-chat": "already tried for this step",
                               "beta/beta-coder": "already tried for this step"}
    assert not any(c.provider.id == "beta" for c in route.candidates)


def test_avoid_by_label_excludes_only_that_model() -> None:
    route = Fixture(SEED).route("analysis", avoid={"beta/beta-chat"})

    assert excluded(route) == {"beta/beta-chat": "already tried for this step"}
    assert "beta/beta-coder" in labels(route)


def test_double_check_says_why_the_author_is_avoided() -> None:
    route = Fixture(SEED).route("review", avoid={"alpha"}, mode=Mode.DOUBLE_CHECK)

    assert excluded(route)["alpha/alpha-max"] == "produced the result under audit"


# --- pins, roles, fallbacks ------------------------------------------------------------


def test_a_provider_pin_keeps_only_its_models() -> None:
    route = Fixture(SEED).route("refactoring", provider="beta")

    assert {c.provider.id for c in route.candidates} == {"beta"}
    assert labels(route)[0] == "beta/beta-coder"


def test_a_model_pin_keeps_only_that_model() -> None:
    route = Fixture(SEED).route("analysis", model="alpha-coder")

    assert labels(route) == ["alpha/alpha-coder"]


def test_a_pin_to_a_provider_without_a_key_leaves_no_candidate() -> None:
    route = Fixture(SEED, routable={"alpha"}).route("prototyping", provider="gamma")

    assert route.candidates == ()
    assert "no candidate (gamma/gamma-proto: no tested key)" in route.reason()


def test_models_without_a_wanted_role_come_last() -> None:
    route = Fixture(SEED).route("review")

    adequacy = [c.adequate for c in route.candidates]
    assert adequacy[0] is True
    assert adequacy == sorted(adequacy, reverse=True)
    assert len(route.candidates) == 6


def test_with_no_wanted_role_available_the_reason_says_so() -> None:
    route = Fixture(BUDGET + BETA_FREE + GAMMA).route("code_generation", complexity=0.9)

    assert route.candidates
    assert not route.candidates[0].adequate
    assert "(no quality model available)" in route.reason()


def test_a_pinned_step_is_said_to_be_pinned_not_short_of_a_role() -> None:
    # alpha-max has the quality role; the pin to beta is why it is not used.
    route = Fixture(SEED).route("code_generation", complexity=0.9, provider="beta")

    assert not route.candidates[0].adequate
    reason = route.reason()
    assert "no quality model available" not in reason
    assert "(pinned to beta, which has no quality model)" in reason
    pinned = Fixture(SEED).route("analysis", provider="alpha", model="alpha-mini")
    assert "→ alpha/alpha-mini (pinned to alpha/alpha-mini):" in pinned.reason()


def test_fallbacks_try_another_provider_before_another_model() -> None:
    alpha_lite = model("alpha-lite", ["cheap"], 0.25, 0.5)
    fixture = Fixture(BUDGET + provider("alpha", *ALPHA_MODELS, alpha_lite) + BETA_PAID + GAMMA)

    route = fixture.route("analysis")

    # By price alone: alpha-mini, alpha-lite, beta-chat.
    assert labels(route)[:3] == ["alpha/alpha-mini", "beta/beta-chat", "alpha/alpha-lite"]
    assert route.candidates[1].provider.id != route.candidates[0].provider.id


# --- a half-open circuit ---------------------------------------------------------------


def test_a_half_open_circuit_admits_exactly_one_probe() -> None:
    fixture = Fixture(SEED)
    fixture.overloaded("gamma", times=3)
    circuit = fixture.health.circuit("gamma")

    fixture.clock.advance(29.9)
    assert circuit.state is CircuitState.OPEN
    assert excluded(fixture.route("prototyping"))["gamma/gamma-proto"] == "circuit open"

    fixture.clock.advance(0.2)
    assert circuit.state is CircuitState.HALF_OPEN
    assert "gamma/gamma-proto" in labels(fixture.route("prototyping"))

    circuit.dispatching()  # the probe leaves
    assert not circuit.allows_traffic()
    assert excluded(fixture.route("prototyping"))["gamma/gamma-proto"] == "circuit open"

    fixture.answered("gamma", 0.3)  # the probe came back well
    assert circuit.state is CircuitState.CLOSED
    assert circuit.allows_traffic()
    assert "gamma/gamma-proto" in labels(fixture.route("prototyping"))


def test_a_failed_probe_reopens_the_circuit_for_another_cool_down() -> None:
    fixture = Fixture(SEED)
    fixture.overloaded("gamma", times=3)
    circuit = fixture.health.circuit("gamma")
    fixture.clock.advance(31)
    circuit.dispatching()

    fixture.overloaded("gamma", times=1)

    assert circuit.state is CircuitState.OPEN
    fixture.clock.advance(29)
    assert not circuit.allows_traffic()


# --- the reason ------------------------------------------------------------------------


def test_the_reason_is_one_line_naming_the_choice() -> None:
    fixture = Fixture(SEED, routable={"alpha", "beta"})
    fixture.answered("beta", 0.4)
    route = fixture.route("analysis")

    reason = route.reason()

    assert "\n" not in reason
    assert reason.startswith("analysis: cheap, cheapest → beta/beta-chat:")
    assert "p50 0.40 s" in reason
    assert "1 excluded" in reason
    assert f"{len(route.candidates) - 1} fallback(s)" in reason


def test_the_reason_names_a_fallback_when_given_one() -> None:
    route = Fixture(SEED).route("analysis")

    reason = route.reason(route.candidates[1])

    assert "\n" not in reason
    assert f"→ {route.candidates[1].label}:" in reason


# --- response modes ----------------------------------------------------------------------

LOCAL = provider_table("local",
                       model_entry("logic-7b", path="embedded", roles=["logic", "qa", "survival"]),
                       model_entry("code-3b", path="embedded", roles=["code", "survival"]),
                       kind="llama_cpp")
WITH_LOCAL = SEED + LOCAL


def test_bouquet_mode_puts_local_models_after_every_api_model() -> None:
    route = Fixture(WITH_LOCAL).route("refactoring", response=ResponseMode.BOUQUET)

    order = labels(route)
    api = [i for i, label in enumerate(order) if not label.startswith("local/")]
    local = [i for i, label in enumerate(order) if label.startswith("local/")]
    assert api and local and max(api) < min(local)  # the last fallback, never the first
    assert not route.reason().startswith("BOUQUET")


def test_survival_routes_to_local_models_only_and_says_so() -> None:
    route = Fixture(WITH_LOCAL).route("code_generation", response=ResponseMode.SURVIVAL)

    assert {c.provider.id for c in route.candidates} == {"local"}
    assert labels(route)[0] == "local/code-3b"  # role fit still ranks the local models
    assert excluded(route)["alpha/alpha-mini"] == "SURVIVAL: local models only"
    assert route.reason().startswith("SURVIVAL · code_generation")


def test_survival_without_a_local_model_has_no_candidate() -> None:
    route = Fixture(SEED).route("analysis", response=ResponseMode.SURVIVAL)

    assert route.best is None
    assert "no candidate" in route.reason()


def test_hybrid_gives_logic_and_qa_steps_to_local_models_first() -> None:
    route = Fixture(WITH_LOCAL).route("review", response=ResponseMode.HYBRID)

    assert labels(route)[0] == "local/logic-7b"
    assert all(not label.startswith("local/") for label in labels(route)[2:])  # APIs follow


def test_hybrid_sends_syntax_steps_to_the_cheapest_api_model() -> None:
    fixture = Fixture(WITH_LOCAL)
    balanced = fixture.route("refactoring", response=ResponseMode.BOUQUET)
    hybrid = fixture.route("refactoring", response=ResponseMode.HYBRID)

    assert balanced.prefer == "balanced" and hybrid.prefer == "cheapest"
    coders = [c for c in hybrid.candidates if c.adequate and not c.provider.local]
    assert [c.label for c in coders] == ["beta/beta-coder", "alpha/alpha-coder"]
    assert hybrid.candidates[-1].provider.local  # local stays the last fallback


def test_local_models_cost_nothing_and_pass_every_ceiling() -> None:
    route = Fixture(WITH_LOCAL).route("analysis", response=ResponseMode.SURVIVAL,
                                      worst_input_tokens=100_000, max_tokens=50_000)

    assert route.best is not None and route.best.est_usd == 0.0
    assert route.best.rates.source == "local"
