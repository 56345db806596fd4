"""Is an offer an opportunity, and what does its report say? Pure logic, exact figures."""

from __future__ import annotations

import pytest

from aetherflow_tui.engine.veille.extract import PriceQuote
from aetherflow_tui.engine.veille.opportunity import Baseline, Candidate, Usage, assess

# 30 days of real traffic: 30 M tokens in, 10 M out, $40 paid ($1/Mtok on average).
USAGE = Usage(30_000_000, 10_000_000, 40.0, 30)
BASELINE = Baseline(1.0, "$1/Mtok paid on average", latency_s=0.8, params_b=70)


def candidate(**changes: object) -> Candidate:
    fields = dict(in_bouquet=True, model_in_bouquet=True, routable=False, keyring=True,
                  console_url="https://console.example/keys", zone="USA", latency_s=None,
                  params_b=70, outages_30d=0, geopolitical_30d=0, other_routable=2)
    fields.update(changes)
    return Candidate(**fields)  # type: ignore[arg-type]


def test_a_cheaper_offer_is_reported_with_monthly_cost_at_current_usage():
    quote = PriceQuote("groq", "llama-3.3-70b-versatile", 0.4, 0.8)
    report = assess(quote, USAGE, BASELINE, candidate(), min_saving_pct=10)
    assert report is not None
    # 0.75 * 0.4 + 0.25 * 0.8 = $0.50 per Mtok at this mix: 40 M tokens a month = $20.
    assert report.offer_per_mtok == pytest.approx(0.5)
    assert report.monthly_usd == pytest.approx(20.0)
    assert report.current_monthly_usd == pytest.approx(40.0)
    assert report.saving_pct == pytest.approx(50.0)
    assert report.funnel and "billing URL (https://console.example/keys)" in report.next_step
    assert report.risk == "low"
    assert "not measured yet" in report.latency
    assert report.quality == "70B vs 70B parameters now (same size)"


def test_a_short_history_is_scaled_to_a_month():
    usage = Usage(3_000_000, 1_000_000, 4.0, 3)  # three days
    report = assess(PriceQuote("groq", "m", 0.4, 0.8), usage, BASELINE, candidate(),
                    min_saving_pct=10)
    assert report is not None and report.monthly_usd == pytest.approx(20.0)
    assert report.current_monthly_usd == pytest.approx(40.0)


@pytest.mark.parametrize(("quote", "cand", "why"), [
    (PriceQuote("groq", "m", 0.95, 0.95), candidate(), "5% cheaper is under min_saving_pct"),
    (PriceQuote("groq", "m", 0.1, None), candidate(), "no output price: cannot compare"),
    (PriceQuote(None, "m", 0.1, 0.1), candidate(), "no provider"),
    (PriceQuote("groq", "m", 0.1, 0.1), candidate(routable=True), "already routed: a price update"),
])
def test_no_report(quote, cand, why):
    assert assess(quote, USAGE, BASELINE, cand, min_saving_pct=10) is None, why


def test_nothing_to_beat_reports_any_complete_offer():
    nothing = Baseline(None, "no priced API provider is routable yet", None, None)
    report = assess(PriceQuote("groq", "m", 2.0, 6.0), Usage(0, 0, 0.0, 30), nothing, candidate(),
                    min_saving_pct=10)
    assert report is not None and report.saving_pct is None and report.monthly_usd == 0


def test_nothing_beats_free():
    free = Baseline(0.0, "free tier", None, None)
    assert assess(PriceQuote("groq", "m", 0.01, 0.01), USAGE, free, candidate(),
                  min_saving_pct=0) is None


@pytest.mark.parametrize(("changes", "risk"), [
    ({"geopolitical_30d": 1}, "high"),
    ({"other_routable": 0}, "high"),
    ({"outages_30d": 3}, "high"),
    ({"outages_30d": 1}, "medium"),
    ({"other_routable": 1}, "medium"),
    ({}, "low"),
])
def test_dependency_risk(changes, risk):
    report = assess(PriceQuote("groq", "m", 0.1, 0.1), USAGE, BASELINE, candidate(**changes),
                    min_saving_pct=10)
    assert report is not None and report.risk == risk


def test_latency_gain_and_the_steps_when_the_funnel_cannot_run():
    report = assess(PriceQuote("groq", "m", 0.1, 0.1), USAGE, BASELINE,
                    candidate(latency_s=0.4, params_b=8), min_saving_pct=10)
    assert report is not None
    assert report.latency == "0.40 s measured here vs 0.80 s now (50% faster)"
    assert report.quality == "8B vs 70B parameters now (a smaller model)"
    outside = assess(PriceQuote("acme", "m", 0.1, 0.1), USAGE, BASELINE,
                     candidate(in_bouquet=False, model_in_bouquet=False), min_saving_pct=10)
    assert outside is not None and not outside.funnel
    assert "add [providers.acme]" in outside.next_step
    new_model = assess(PriceQuote("groq", "new-1", 0.1, 0.1), USAGE, BASELINE,
                       candidate(model_in_bouquet=False, routable=True), min_saving_pct=10)
    assert new_model is not None and "add model 'new-1'" in new_model.next_step
