"""What a call used and what it cost: tokens, dollars, watt-hours and CO2e, as plain values.

A leaf: it imports nothing of the engine, so the providers (which report usage and measured
energy), the ledger (which prices and estimates) and the store can all share these values
without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass

# Where a price came from (Cost.method, Rates.source).
PRICE_CONFIG = "config"
PRICE_LOCAL = "local"  # llama.cpp on this machine: paid in watt-hours, not dollars
PRICE_TABLE = "genai-prices"
PRICE_VEILLE = "veille"  # announced in a veille item, approved by the operator
UNPRICED = "unpriced"

# How an energy figure was had (Energy.method).
ENERGY_ECOLOGITS = "ecologits"  # EcoLogits knows the provider and the model
ENERGY_SIZE = "estimate:size"  # EcoLogits' physics with the model size from config or its name
ENERGY_ASSUMED = "estimate:assumed-size"  # size unknown: ledger.ASSUMED_PARAMS_B
ENERGY_RAPL = "measured:rapl"
ENERGY_CPU = "measured:cpu-time"
ENERGY_UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int  # total input, cached tokens included (genai-prices' convention)
    output_tokens: int
    cached_input_tokens: int = 0
    estimated: bool = False  # True when the provider sent no usage and we counted


@dataclass(frozen=True, slots=True)
class Rates:
    """$ per million tokens."""

    input: float
    output: float
    cached_input: float
    source: str  # PRICE_CONFIG or PRICE_TABLE


@dataclass(frozen=True, slots=True)
class Cost:
    usd: float | None  # None: unpriced, never silently zero
    method: str

    @property
    def priced(self) -> bool:
        return self.usd is not None


@dataclass(frozen=True, slots=True)
class Energy:
    wh: float | None
    gco2e: float | None
    method: str

    @property
    def measured(self) -> bool:
        return self.method.startswith("measured")


UNKNOWN_ENERGY = Energy(None, None, ENERGY_UNKNOWN)
# A call that failed before answering: providers do not bill those.
NOT_BILLED = Cost(0.0, "not billed")


LOCAL_RATES = Rates(0.0, 0.0, 0.0, PRICE_LOCAL)
