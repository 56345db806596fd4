"""`aetherflow ask`: one call; the answer on stdout, then its cost and energy on one line."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .output import PROG, print_json

if TYPE_CHECKING:
    from ..engine import Engine


async def handle(engine: Engine, args: argparse.Namespace) -> int:
    from ..engine.errors import EXIT_FAILED, UsageError
    from ..engine.text import neutralise

    if args.max_tokens is not None and args.max_tokens < 1:
        raise UsageError("--max-tokens must be at least 1")
    streamed = not args.no_stream and not args.json
    out = sys.stdout

    def show(token: str) -> None:
        out.write(neutralise(token))
        out.flush()

    outcome = await engine.ask(args.prompt, provider=args.provider, model=args.model,
                               max_tokens=args.max_tokens, stream=not args.no_stream,
                               on_token=show if streamed else None)
    record = outcome.record
    if args.json:
        print_json({
            "ok": outcome.ok,
            "answer": outcome.result.text if outcome.result else None,
            "error": {"kind": outcome.error.kind, "message": record.error}
            if outcome.error else None,
            "call": _record_json(record),
        })
        return 0 if outcome.ok else EXIT_FAILED
    if outcome.result is not None:
        if not streamed:
            out.write(neutralise(outcome.result.text))
        out.write("\n")
    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=not outcome.ok, highlight=False)
    if outcome.error is not None:
        console.print(Text(f"{PROG}: call failed: {record.error}", style="red"))
    console.print(Text(call_line(record), style="dim"))
    return 0 if outcome.ok else EXIT_FAILED


def call_line(record: Any) -> str:
    """provider · model · TTFT · duration · tokens · cost · energy, on one line."""
    from ..formatting import significant, usd

    parts = [record.provider, record.model]
    if record.ttft_s is not None:
        parts.append(f"TTFT {record.ttft_s * 1000:.0f} ms")
    parts.append(f"{record.duration_s:.2f} s")
    tokens = f"{record.input_tokens}→{record.output_tokens} tok"
    if record.cached_input_tokens:
        tokens += f" ({record.cached_input_tokens} cached)"
    if record.usage_estimated:
        tokens += " (estimated)"
    parts.append(tokens)
    if record.tokens_per_s:
        parts.append(f"{record.tokens_per_s:.1f} tok/s")
    cost = record.cost
    parts.append(cost.method if cost.method == "not billed" else usd(cost.usd))
    energy = record.energy
    if energy is not None and energy.wh is not None:
        tag = "measured" if energy.measured else "est."
        parts.append(f"{significant(energy.wh)} Wh {tag}")
        if energy.gco2e is not None:
            parts.append(f"{significant(energy.gco2e)} gCO2e")
    else:
        parts.append("energy unknown")
    if record.ok and record.error:  # the usage the provider reported was out of bounds
        parts.append(record.error)
    return " · ".join(parts)


def _record_json(record: Any) -> dict[str, Any]:
    energy = record.energy
    return {
        "id": record.id,
        "ts": record.ts,
        "provider": record.provider,
        "model": record.model,
        "ok": record.ok,
        "ttft_s": record.ttft_s,
        "duration_s": record.duration_s,
        "tokens_per_s": record.tokens_per_s,
        "input_tokens": record.input_tokens,
        "cached_input_tokens": record.cached_input_tokens,
        "output_tokens": record.output_tokens,
        "usage_estimated": record.usage_estimated,
        "usd": record.cost.usd,
        "price_method": record.cost.method,
        "wh": energy.wh if energy else None,
        "gco2e": energy.gco2e if energy else None,
        "energy_method": energy.method if energy else None,
        "error_kind": record.error_kind,
    }
