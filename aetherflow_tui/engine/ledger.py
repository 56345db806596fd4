"""What a call cost: dollars from the price table, watt-hours and CO2e from EcoLogits.

Pricing sits on the call path, so rates are resolved once per model (and again each hour,
for providers whose price depends on the time of day) and a call is priced with plain
arithmetic. Models with tiered prices keep genai-prices' own calculation.

Energy is off the call path (the store's writer asks for it just before the row is
written): EcoLogits' model takes a fraction of a millisecond per call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from .config import ModelSpec, ProviderSpec
from .model_size import params_b_in_name

# A call's values are defined in usage.py (a leaf) and re-exported here, where they lived.
from .usage import (
    ENERGY_ASSUMED,
    ENERGY_ECOLOGITS,
    ENERGY_SIZE,
    LOCAL_RATES,
    PRICE_CONFIG,
    PRICE_TABLE,
    PRICE_VEILLE,
    UNKNOWN_ENERGY,
    UNPRICED,
    Cost,
    Energy,
    Rates,
    Usage,
)

# Re-exported only: the ledger does not use these itself.
from .usage import ENERGY_CPU as ENERGY_CPU
from .usage import ENERGY_RAPL as ENERGY_RAPL
from .usage import ENERGY_UNKNOWN as ENERGY_UNKNOWN
from .usage import NOT_BILLED as NOT_BILLED
from .usage import PRICE_LOCAL as PRICE_LOCAL

# When neither EcoLogits nor the config knows a model's size, assume a mid-size hosted model.
ASSUMED_PARAMS_B = 70.0
# Datacenter overhead for providers EcoLogits has no figure for: its own range for hyperscalers.
FALLBACK_PUE = (1.09, 1.2)
FALLBACK_WUE = 0.569


class PriceTable:
    """Rates per (provider, model): approved veille prices, config overrides, genai-prices.

    A price the operator approved from an announcement is the newest word on it, so it
    wins over the config's and the table's.
    """

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        # Table prices can depend on the hour (DeepSeek's off-peak discount): read them at
        # the engine's clock, so a fixed clock gives the same prices at any time of day.
        self._now = now
        self._flat: dict[tuple[str, str], tuple[float, Rates | None, Any]] = {}
        self._approved: dict[tuple[str, str], Rates] = {}

    def approve(self, provider_id: str, model_id: str, input_per_mtok: float,
                output_per_mtok: float) -> None:
        self._approved[(provider_id, model_id)] = Rates(input_per_mtok, output_per_mtok,
                                                        input_per_mtok, PRICE_VEILLE)

    def rates(self, provider: ProviderSpec, model: ModelSpec) -> Rates | None:
        return self._resolve(provider, model)[0]

    def cost(self, provider: ProviderSpec, model: ModelSpec, usage: Usage) -> Cost:
        rates, tiered = self._resolve(provider, model)
        if tiered is not None:
            return _tiered_cost(tiered, usage)
        if rates is None:
            return Cost(None, UNPRICED)
        uncached = usage.input_tokens - usage.cached_input_tokens
        usd = (uncached * rates.input + usage.cached_input_tokens * rates.cached_input
               + usage.output_tokens * rates.output) / 1_000_000
        return Cost(usd, rates.source)

    def _resolve(self, provider: ProviderSpec, model: ModelSpec) -> tuple[Rates | None, Any]:
        approved = self._approved.get((provider.id, model.id))
        if approved is not None:
            return approved, None
        if model.price_in is not None and model.price_out is not None:
            cached = model.price_cached_in if model.price_cached_in is not None else model.price_in
            return Rates(model.price_in, model.price_out, cached, PRICE_CONFIG), None
        if provider.kind == "llama_cpp":
            return LOCAL_RATES, None
        key = (provider.id, model.id)
        now = self._now()
        hour = now // 3600
        hit = self._flat.get(key)
        if hit is None or hit[0] != hour:
            rates, tiered = _table_rates(provider, model.id, now)
            self._flat[key] = hit = (hour, rates, tiered)
        return hit[1], hit[2]


def _table_rates(provider: ProviderSpec, model_id: str, now: float
                 ) -> tuple[Rates | None, Any]:
    """Flat rates from genai-prices, or (base rates, model) when prices are tiered."""
    from genai_prices import data_snapshot
    from genai_prices.types import TieredPrices

    snapshot = data_snapshot.get_snapshot()
    try:
        if provider.price_id:
            found = snapshot.find_provider_model(model_id, None, provider.price_id, None)
        else:
            try:
                found = snapshot.find_provider_model(model_id, None, provider.id, None)
            except LookupError:
                found = snapshot.find_provider_model(model_id, None, None, provider.base_url)
    except LookupError:
        return None, None
    model_info = found[1]
    prices = model_info.get_prices(datetime.fromtimestamp(now, tz=UTC))
    values = [getattr(prices, name, None) for name in ("input_mtok", "output_mtok",
                                                        "cache_read_mtok")]
    if values[0] is None and values[1] is None:
        return None, None
    tiered = any(isinstance(v, TieredPrices) for v in values)
    base = [float(v.base if isinstance(v, TieredPrices) else v or 0) for v in values]
    cached = base[2] if values[2] is not None else base[0]
    rates = Rates(base[0], base[1], cached, PRICE_TABLE)
    return rates, (found if tiered else None)


def _tiered_cost(found: Any, usage: Usage) -> Cost:
    from genai_prices import Usage as PriceUsage

    provider, model_info = found
    calc = model_info.calc_price(
        PriceUsage(input_tokens=usage.input_tokens, cache_read_tokens=usage.cached_input_tokens,
                   output_tokens=usage.output_tokens),
        provider,
    )
    return Cost(float(calc.total_price), PRICE_TABLE)


def params_b(model: ModelSpec) -> float | None:
    """Model size in billions: from config, else from a name like llama-3.3-70b."""
    if model.params_b:
        return model.params_b
    return params_b_in_name(model.id)


class EnergyEstimator:
    """Wh and gCO2e of an API call, from EcoLogits' model of inference in a datacenter."""

    def estimate(self, provider: ProviderSpec, model: ModelSpec, output_tokens: int,
                 latency_s: float) -> Energy:
        try:
            return self._estimate(provider, model, output_tokens, latency_s)
        except Exception:  # EcoLogits raises on data it lacks; energy must never fail a call
            logging.getLogger(__name__).debug("energy estimate failed", exc_info=True)
            return UNKNOWN_ENERGY

    def _estimate(self, provider: ProviderSpec, model: ModelSpec, output_tokens: int,
                  latency_s: float) -> Energy:
        eco = _ecologits()
        known = eco.model(provider.energy_id, model.id) if provider.energy_id else None
        mix = eco.mix(provider.zone) or eco.mix("WOR")
        if known is not None:
            params, pue, wue, deployment = known
            method = ENERGY_ECOLOGITS
        else:
            size = params_b(model)
            method = ENERGY_SIZE if size else ENERGY_ASSUMED
            size = size or ASSUMED_PARAMS_B
            params = (size, size)
            pue, wue, deployment = eco.range(*FALLBACK_PUE), FALLBACK_WUE, None
        impacts = eco.compute(
            model_active_parameter_count=params[0],
            model_total_parameter_count=params[1],
            output_token_count=max(0, output_tokens),
            request_latency=max(latency_s, 1e-3),
            if_electricity_mix_adpe=mix.adpe,
            if_electricity_mix_pe=mix.pe,
            if_electricity_mix_gwp=mix.gwp,
            if_electricity_mix_wue=mix.wue,
            datacenter_pue=pue,
            datacenter_wue=wue,
            tps=deployment.tps if deployment else None,
            ttft=deployment.ttft if deployment else None,
        )
        kwh = _mean(impacts.energy.value)
        kg = _mean(impacts.gwp.value)
        return Energy(kwh * 1000.0, kg * 1000.0, method)


def _mean(value: Any) -> float:
    return float(value.mean) if hasattr(value, "mean") else float(value)


class _EcoLogits:
    """EcoLogits' repositories, imported once and only when energy is first needed."""

    def __init__(self) -> None:
        from ecologits.electricity_mix_repository import electricity_mixes
        from ecologits.impacts.llm import compute_llm_impacts
        from ecologits.log import logger
        from ecologits.model_repository import ParametersMoE, models
        from ecologits.tracers.utils import PROVIDER_CONFIG_MAP
        from ecologits.utils.range_value import RangeValue

        # It warns once per model on stderr about its own precision; we tag the method.
        logger.setLevel(logging.ERROR)
        self._models = models
        self._mixes = electricity_mixes
        self._providers = PROVIDER_CONFIG_MAP
        self._moe = ParametersMoE
        self._range = RangeValue
        self.compute = compute_llm_impacts

    def range(self, low: float, high: float) -> Any:
        return self._range(min=low, max=high)

    @cache  # noqa: B019 - one instance for the process, never collected
    def model(self, provider: str, model_id: str) -> tuple[Any, Any, Any, Any] | None:
        config = self._providers.get(provider)
        found = self._models.find_model(provider=provider, model_name=model_id)
        if config is None or found is None:
            return None
        params = found.architecture.parameters
        pair = (params.active, params.total) if isinstance(params, self._moe) else (params, params)
        return pair, config.datacenter_pue, config.datacenter_wue, found.deployment

    @cache  # noqa: B019
    def mix(self, zone: str) -> Any:
        return self._mixes.find_electricity_mix(zone=zone)


@cache
def _ecologits() -> _EcoLogits:
    return _EcoLogits()


def grid_gco2e_per_kwh(zone: str) -> float | None:
    """Carbon intensity of a zone's electricity, for energy we measure locally."""
    try:
        mix = _ecologits().mix(zone) or _ecologits().mix("WOR")
    except Exception:
        return None
    return float(mix.gwp) * 1000.0 if mix else None
