"""`aetherflow spend`: today's spend, tokens and energy per provider."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .output import print_json

if TYPE_CHECKING:
    from ..engine import Engine


async def handle(engine: Engine, args: argparse.Namespace) -> int:
    totals = await engine.totals_today()
    budget = engine.bouquet.budget.daily_usd
    spent = sum(t.usd for t in totals)
    if args.json:
        print_json({
            "budget_usd": budget,
            "spent_usd": spent,
            "providers": [
                {"provider": t.provider, "day": t.day, "calls": t.calls, "failures": t.failures,
                 "usd": t.usd, "unpriced_calls": t.unpriced_calls,
                 "input_tokens": t.input_tokens, "output_tokens": t.output_tokens,
                 "wh": t.wh, "measured_wh": t.measured_wh, "gco2e": t.gco2e}
                for t in totals
            ],
        })
        return 0
    from rich.console import Console
    from rich.table import Table

    from ..formatting import usd

    table = Table(title=f"Today: {usd(spent)} of ${budget:.2f}", title_justify="left")
    for column in ("provider", "calls", "failed", "$", "unpriced", "tokens in", "tokens out",
                   "Wh", "gCO2e"):
        table.add_column(column, justify="left" if column == "provider" else "right")
    for t in totals:
        table.add_row(t.provider, str(t.calls), str(t.failures), usd(t.usd).lstrip("$"),
                      str(t.unpriced_calls), str(t.input_tokens), str(t.output_tokens),
                      f"{t.wh:.3f}", f"{t.gco2e:.3f}")
    Console().print(table)
    return 0
