"""`aetherflow providers`: the bouquet, its keys, prices per million tokens and zones."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .output import print_json, rate

if TYPE_CHECKING:
    from ..engine import Engine, ProviderView


async def handle(engine: Engine, args: argparse.Namespace) -> int:
    views = await engine.provider_views()
    if args.json:
        print_json({"config": engine.bouquet.source_label,
                    "providers": [_provider_json(v) for v in views]})
        return 0
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    wide = console.width >= 120  # roles and rate limits only where they fit
    table = Table(title=f"Bouquet — {engine.bouquet.source_label}", title_justify="left",
                  expand=False, pad_edge=False, box=box.SIMPLE_HEAD,
                  caption="in, out: $ per million tokens", caption_justify="left")
    table.add_column("provider", no_wrap=True, min_width=10)
    table.add_column("key", no_wrap=True, min_width=11)
    table.add_column("model", no_wrap=True, overflow="ellipsis", min_width=18, max_width=28)
    table.add_column("in", justify="right", no_wrap=True)
    table.add_column("out", justify="right", no_wrap=True)
    table.add_column("zone", no_wrap=True, min_width=4)
    if wide:
        table.add_column("limits", no_wrap=True)
        table.add_column("roles", style="dim")
    for view in views:
        for index, model in enumerate(view.models):
            first = index == 0
            cells = [
                Text(view.id, style="bold") if first else "",
                _key_text(view) if first else "",
                Text(model.id),
                rate(model.rates.input if model.rates else None),
                rate(model.rates.output if model.rates else None),
                view.zone if first else "",
            ]
            if wide:
                cells += [_limits(view) if first else "", Text(", ".join(model.roles))]
            table.add_row(*cells, end_section=index == len(view.models) - 1)
    console.print(table)
    details = {v.key.detail for v in views if v.key.detail and not v.usable}
    for detail in sorted(details):
        console.print(Text(f"• {detail}", style="dim"))
    return 0


def _key_text(view: ProviderView) -> Any:
    from rich.text import Text

    from ..engine.keys import KeyState
    from ..palette import KEY

    label = view.key.state.value
    if view.key.state is KeyState.PRESENT and view.key.source.startswith("env:"):
        label = f"present ({view.key.source})"
    return Text(label, style=KEY[view.key.state])


def _limits(view: ProviderView) -> str:
    parts = []
    if view.rpm:
        parts.append(f"{view.rpm}rpm")
    if view.tpm:
        parts.append(f"{view.tpm // 1000}k tpm" if view.tpm >= 1000 else f"{view.tpm}tpm")
    return " ".join(parts)


def _provider_json(view: ProviderView) -> dict[str, Any]:
    return {
        "id": view.id,
        "kind": view.kind,
        "base_url": view.base_url,
        "zone": view.zone,
        "rpm": view.rpm,
        "tpm": view.tpm,
        "key": {"state": view.key.state.value, "source": view.key.source,
                "detail": view.key.detail},
        "console_url": view.console_url,
        "models": [
            {
                "id": m.id,
                "roles": list(m.roles),
                "priced": m.rates is not None,
                "usd_per_mtok_in": m.rates.input if m.rates else None,
                "usd_per_mtok_out": m.rates.output if m.rates else None,
                "usd_per_mtok_cached_in": m.rates.cached_input if m.rates else None,
                "price_source": m.rates.source if m.rates else None,
            }
            for m in view.models
        ],
    }
