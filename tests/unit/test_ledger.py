"""What a call cost: dollars against genai-prices' own arithmetic, and Wh / gCO2e from EcoLogits."""

from __future__ import annotations

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from aetherflow_tui.engine import config, ledger
from aetherflow_tui.engine.ledger import (
    ENERGY_ASSUMED,
    ENERGY_ECOLOGITS,
    ENERGY_SIZE,
    PRICE_CONFIG,
    PRICE_TABLE,
    UNPRICED,
    EnergyEstimator,
    PriceTable,
    params_b,
)
from aetherflow_tui.engine.providers.base import Usage
from tests.support.plans import bouquet_text, model_entry, provider_table

BOUQUET = config.parse(bouquet_text(
    provider_table("groq", "llama-3.3-70b-versatile", "llama-3.1-8b-instant",
                   model_entry("priced-by-me", price_in=0.5, price_out=1.5),
                   model_entry("llama-3.3-70b-specdec", price_in=0.5, price_out=1.5,
                               price_cached_in=0.1),
                   base_url="https://api.groq.com/openai/v1", zone="USA"),
    provider_table("openai", "gpt-4o-mini",
                   model_entry("gpt-4o-mini-overridden", price_in=3.0, price_out=4.0),
                   base_url="https://api.openai.com/v1", zone="USA", energy_id="openai"),
    provider_table("deepseek", model_entry("deepseek-chat", params_b=37),
                   base_url="https://api.deepseek.com/v1", zone="CHN"),
    provider_table("codestral", "codestral-latest", base_url="https://codestral.mistral.ai/v1",
                   zone="FRA", price_id="mistral", energy_id="mistralai"),
    provider_table("gemini", "gemini-2.5-pro",
                   base_url="https://generativelanguage.googleapis.com/v1beta/openai",
                   price_id="google"),
    provider_table("ollama", "qwen2.5-coder:3b", "gpt-4o-mini", "house-model",
                   model_entry("house-model-sized", params_b=14),
                   base_url="http://127.0.0.1:11434/v1", key="none", zone="FRA"),
    provider_table("polska", model_entry("house-model", params_b=14),
                   base_url="https://llm.example.pl/v1", zone="POL")), None)


def spec(provider_id: str, model_id: str):
    provider = BOUQUET.providers[provider_id]
    model = provider.model(model_id)
    assert model is not None
    return provider, model


def reference_usd(usage: Usage, model_ref: str, provider_id: str) -> float:
    calc = calc_price(
        PriceUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                   cache_read_tokens=usage.cached_input_tokens),
        model_ref,
        provider_id=provider_id,
    )
    return float(calc.total_price)


# --- PriceTable -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider_id", "model_id", "price_provider", "usage"),
    [
        ("groq", "llama-3.3-70b-versatile", "groq", Usage(12_345, 678)),
        ("groq", "llama-3.1-8b-instant", "groq", Usage(1_000_000, 1_000_000)),
        ("openai", "gpt-4o-mini", "openai", Usage(50_000, 2_000, cached_input_tokens=30_000)),
        ("openai", "gpt-4o-mini", "openai", Usage(1, 0)),
        ("deepseek", "deepseek-chat", "deepseek", Usage(8_000, 1_500, cached_input_tokens=6_000)),
        ("codestral", "codestral-latest", "mistral", Usage(4_096, 512)),
    ],
)
def test_flat_price_matches_genai_prices(provider_id, model_id, price_provider, usage):
    provider, model = spec(provider_id, model_id)

    cost = PriceTable().cost(provider, model, usage)

    assert cost.method == PRICE_TABLE
    assert cost.priced
    assert cost.usd > 0
    assert cost.usd == pytest.approx(reference_usd(usage, model_id, price_provider),
                                     abs=1e-12, rel=0)


def test_cached_tokens_are_cheaper_than_uncached_for_gpt_4o_mini():
    provider, model = spec("openai", "gpt-4o-mini")
    table = PriceTable()

    cached = table.cost(provider, model, Usage(100_000, 0, cached_input_tokens=100_000))
    uncached = table.cost(provider, model, Usage(100_000, 0))

    assert 0 < cached.usd < uncached.usd


def test_rates_from_the_table_are_per_million_tokens():
    provider, model = spec("openai", "gpt-4o-mini")

    rates = PriceTable().rates(provider, model)

    assert rates.source == PRICE_TABLE
    million = Usage(1_000_000, 1_000_000)
    assert rates.input + rates.output == pytest.approx(
        reference_usd(million, "gpt-4o-mini", "openai"), abs=1e-12)


def test_config_price_override_wins_over_the_table():
    provider, model = spec("openai", "gpt-4o-mini-overridden")

    cost = PriceTable().cost(provider, model, Usage(1_000_000, 500_000))

    assert cost.method == PRICE_CONFIG
    assert cost.usd == pytest.approx(3.0 + 2.0, abs=1e-12)


def test_config_override_wins_even_for_a_model_the_table_knows():
    provider = BOUQUET.providers["groq"]
    known = config.ModelSpec(id="llama-3.3-70b-versatile", price_in=10.0, price_out=20.0)

    cost = PriceTable().cost(provider, known, Usage(100_000, 100_000))

    assert cost.method == PRICE_CONFIG
    assert cost.usd == pytest.approx(1.0 + 2.0, abs=1e-12)


def test_config_price_without_cached_rate_charges_cached_tokens_at_price_in():
    provider, model = spec("groq", "priced-by-me")

    cost = PriceTable().cost(provider, model, Usage(1_000_000, 0, cached_input_tokens=400_000))

    assert cost.usd == pytest.approx(0.5, abs=1e-12)


def test_config_price_cached_in_is_used_for_cached_tokens():
    provider, model = spec("groq", "llama-3.3-70b-specdec")

    cost = PriceTable().cost(provider, model, Usage(1_000_000, 200_000,
                                                   cached_input_tokens=400_000))

    expected = (600_000 * 0.5 + 400_000 * 0.1 + 200_000 * 1.5) / 1_000_000
    assert cost.method == PRICE_CONFIG
    assert cost.usd == pytest.approx(expected, abs=1e-12)


def test_local_model_with_zero_config_price_is_free_not_unpriced():
    provider = BOUQUET.providers["ollama"]
    free = config.ModelSpec(id="qwen2.5-coder:3b", price_in=0.0, price_out=0.0)

    cost = PriceTable().cost(provider, free, Usage(10_000, 10_000))

    assert cost == ledger.Cost(0.0, PRICE_CONFIG)
    assert cost.priced


@pytest.mark.parametrize(
    ("provider_id", "model_id"),
    [("ollama", "qwen2.5-coder:3b"), ("ollama", "house-model"), ("ollama", "gpt-4o-mini")],
)
def test_unknown_model_is_unpriced_never_zero(provider_id, model_id):
    provider, model = spec(provider_id, model_id)
    table = PriceTable()

    cost = table.cost(provider, model, Usage(10_000, 10_000))

    assert cost.usd is None
    assert cost.method == UNPRICED
    assert not cost.priced
    assert table.rates(provider, model) is None


def test_unknown_model_at_a_known_provider_is_unpriced():
    provider = BOUQUET.providers["groq"]
    unknown = config.ModelSpec(id="no-such-model-on-groq")

    cost = PriceTable().cost(provider, unknown, Usage(10_000, 10_000))

    assert cost == ledger.Cost(None, UNPRICED)


@pytest.mark.parametrize(
    "usage",
    [
        Usage(10_000, 2_000),
        Usage(10_000, 2_000, cached_input_tokens=4_000),
        Usage(250_000, 8_000),
        Usage(250_000, 8_000, cached_input_tokens=100_000),
    ],
)
def test_tiered_gemini_2_5_pro_matches_genai_prices(usage):
    provider, model = spec("gemini", "gemini-2.5-pro")

    cost = PriceTable().cost(provider, model, usage)

    assert cost.method == PRICE_TABLE
    assert cost.usd == pytest.approx(reference_usd(usage, "gemini-2.5-pro", "google"),
                                     abs=1e-12, rel=0)


def test_tiered_price_rises_above_200k_input_tokens():
    provider, model = spec("gemini", "gemini-2.5-pro")
    table = PriceTable()
    base_input = table.rates(provider, model).input

    small = table.cost(provider, model, Usage(200_000, 0)).usd
    large = table.cost(provider, model, Usage(200_001, 0)).usd

    assert small == pytest.approx(200_000 * base_input / 1e6, abs=1e-12)
    assert large > 200_001 * base_input / 1e6  # the whole prompt moves to the higher tier


# --- params_b -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "size"),
    [
        ("llama-3.3-70b-versatile", 70),
        ("llama-3.1-8b-instant", 8),
        ("qwen2.5-coder:3b", 3),
        ("Qwen/Qwen2.5-Coder-7B-Instruct", 7),
        ("qwen/qwen-2.5-coder-32b-instruct", 32),
        ("phi-3.8b", 3.8),
        ("gpt-4o-mini", None),
        ("house-model", None),
        ("deepseek-chat", None),
    ],
)
def test_params_b_reads_the_size_from_the_model_name(model_id, size):
    assert params_b(config.ModelSpec(id=model_id)) == size


def test_params_b_prefers_the_config_value():
    assert params_b(config.ModelSpec(id="llama-3.3-70b-versatile", params_b=12)) == 12
    assert params_b(config.ModelSpec(id="deepseek-chat", params_b=37)) == 37


# --- EnergyEstimator ------------------------------------------------------------------------


def test_known_openai_model_uses_ecologits(capsys):
    provider, model = spec("openai", "gpt-4o-mini")

    energy = EnergyEstimator().estimate(provider, model, output_tokens=400, latency_s=2.0)

    assert energy.method == ENERGY_ECOLOGITS
    assert energy.wh > 0
    assert energy.gco2e > 0
    assert not energy.measured
    assert capsys.readouterr().err == ""


def test_known_mistral_model_via_energy_id_uses_ecologits(capsys):
    provider, model = spec("codestral", "codestral-latest")

    energy = EnergyEstimator().estimate(provider, model, output_tokens=400, latency_s=2.0)

    assert energy.method == ENERGY_ECOLOGITS
    assert energy.wh > 0
    assert capsys.readouterr().err == ""


def test_groq_model_with_a_size_is_estimated_from_the_size(capsys):
    provider, model = spec("groq", "llama-3.3-70b-versatile")

    energy = EnergyEstimator().estimate(provider, model, output_tokens=400, latency_s=2.0)

    assert energy.method == ENERGY_SIZE
    assert energy.wh > 0
    assert energy.gco2e > 0
    assert capsys.readouterr().err == ""


def test_config_size_counts_for_a_model_with_none_in_its_name():
    provider, model = spec("deepseek", "deepseek-chat")

    energy = EnergyEstimator().estimate(provider, model, output_tokens=400, latency_s=2.0)

    assert energy.method == ENERGY_SIZE


def test_model_with_no_known_size_uses_the_assumed_size(capsys):
    provider, model = spec("ollama", "house-model")

    energy = EnergyEstimator().estimate(provider, model, output_tokens=400, latency_s=2.0)

    assert energy.method == ENERGY_ASSUMED
    assert energy.wh > 0
    assert energy.gco2e > 0
    assert capsys.readouterr().err == ""


def test_assumed_size_gives_the_same_estimate_as_a_model_of_that_size():
    provider = BOUQUET.providers["ollama"]
    estimator = EnergyEstimator()
    unknown = config.ModelSpec(id="house-model")
    sized = config.ModelSpec(id="house-model", params_b=ledger.ASSUMED_PARAMS_B)

    assumed = estimator.estimate(provider, unknown, output_tokens=300, latency_s=1.5)
    explicit = estimator.estimate(provider, sized, output_tokens=300, latency_s=1.5)

    assert assumed.wh == pytest.approx(explicit.wh)
    assert (assumed.method, explicit.method) == (ENERGY_ASSUMED, ENERGY_SIZE)


@pytest.mark.parametrize(
    ("provider_id", "model_id"),
    [("openai", "gpt-4o-mini"), ("groq", "llama-3.3-70b-versatile"), ("ollama", "house-model")],
)
def test_more_output_tokens_cost_more_energy(provider_id, model_id):
    provider, model = spec(provider_id, model_id)
    estimator = EnergyEstimator()

    whs = [estimator.estimate(provider, model, output_tokens=n, latency_s=5.0).wh
           for n in (10, 100, 1_000, 4_000)]

    assert all(w is not None for w in whs)
    assert whs == sorted(whs)
    assert len(set(whs)) == len(whs), whs


def test_bigger_model_costs_more_energy():
    provider = BOUQUET.providers["ollama"]
    estimator = EnergyEstimator()

    small = estimator.estimate(provider, config.ModelSpec(id="m-3b"), 500, 2.0)
    large = estimator.estimate(provider, config.ModelSpec(id="m-70b"), 500, 2.0)

    assert small.wh < large.wh


def test_dirtier_grid_gives_more_co2e_for_the_same_energy():
    estimator = EnergyEstimator()
    france = estimator.estimate(*spec("ollama", "house-model-sized"), 500, 2.0)
    poland = estimator.estimate(*spec("polska", "house-model"), 500, 2.0)

    assert france.wh == pytest.approx(poland.wh)
    assert poland.gco2e > 2 * france.gco2e


def test_grid_intensity_by_zone_and_world_fallback():
    poland = ledger.grid_gco2e_per_kwh("POL")
    france = ledger.grid_gco2e_per_kwh("FRA")
    world = ledger.grid_gco2e_per_kwh("WOR")

    assert poland > world > france > 0
    assert ledger.grid_gco2e_per_kwh("ZZZ") == world


def test_unknown_zone_is_estimated_with_the_world_mix():
    estimator = EnergyEstimator()
    nowhere = config.ProviderSpec(id="nowhere", kind="openai", base_url="https://x.example/v1",
                                  zone="ZZZ", models=[config.ModelSpec(id="m-8b")])
    world = nowhere.model_copy(update={"zone": "WOR"})
    model = nowhere.models[0]

    got = estimator.estimate(nowhere, model, 200, 1.0)
    expected = estimator.estimate(world, model, 200, 1.0)

    assert got.method == ENERGY_SIZE
    assert got.gco2e == pytest.approx(expected.gco2e)


def test_negative_tokens_and_zero_latency_do_not_fail_the_estimate():
    provider, model = spec("groq", "llama-3.1-8b-instant")

    energy = EnergyEstimator().estimate(provider, model, output_tokens=-5, latency_s=0.0)

    assert energy.method == ENERGY_SIZE
    assert energy.wh is not None and energy.wh >= 0


def test_table_prices_are_read_at_the_engines_clock_not_the_wall_clock():
    # DeepSeek's table prices halve off-peak (16:30-00:30 UTC): a table on a fixed clock
    # must give that hour's prices whatever time the test runs at.
    from datetime import UTC, datetime

    bouquet = config.load(None)
    provider = bouquet.providers["deepseek"]
    model = provider.models[0]
    peak = datetime(2026, 12, 7, 10, 0, tzinfo=UTC).timestamp()
    off_peak = datetime(2026, 12, 7, 20, 0, tzinfo=UTC).timestamp()

    at_peak = PriceTable(lambda: peak).rates(provider, model)
    at_night = PriceTable(lambda: off_peak).rates(provider, model)

    assert at_peak is not None and at_night is not None
    assert at_night.input < at_peak.input
    assert PriceTable(lambda: peak).rates(provider, model) == at_peak
