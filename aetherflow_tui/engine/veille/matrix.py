"""The comparison matrix: every model of the bouquet on price, live performance and energy.

Prices are the ones routing uses (an approved veille price, the config's, or the price
table's); performance is what this machine measured (health); energy is the estimate per
thousand output tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..context import EngineContext


@dataclass(frozen=True, slots=True)
class MatrixRow:
    provider: str
    model: str
    input_per_mtok: float | None
    output_per_mtok: float | None
    price_source: str  # veille (approved), config, genai-prices, local, unpriced
    routable: bool
    light: str
    latency_s: float | None  # the model's latency EWMA, else the provider's median
    success_pct: float | None
    wh_per_1k: float | None  # per thousand output tokens

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def build(engine: EngineContext) -> list[MatrixRow]:
    """Blocking (EcoLogits estimates energy): call it in a thread."""
    rows = []
    routable = engine.router.routable
    for spec in engine.bouquet.providers.values():
        if not spec.enabled:
            continue
        health = engine.health.health(spec.id)
        by_model = {m.model: m for m in health.models}
        for model in spec.models:
            rates = engine.prices.rates(spec, model)
            measured = by_model.get(model.id)
            rows.append(MatrixRow(
                provider=spec.id, model=model.id,
                input_per_mtok=rates.input if rates else None,
                output_per_mtok=rates.output if rates else None,
                price_source=rates.source if rates else "unpriced",
                routable=spec.id in routable, light=health.light.value,
                latency_s=(measured.latency_ewma_s if measured else None)
                or health.latency_p50_s,
                success_pct=(measured.success_pct if measured else None)
                or health.success_pct,
                wh_per_1k=engine.energy.estimate(spec, model, 1000, 10.0).wh,
            ))
    return rows
