"""`aetherflow veille ...`: poll the market, classify items, read the report.

Everything a feed wrote is untrusted: it reaches the terminal as rich Text (never markup),
already made safe by the engine (escapes neutralised, length capped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..engine.errors import EXIT_FAILED, UsageError
from ..formatting import age, ago, latency, per_mtok, percent
from ..palette import SOURCE, VEILLE_LABEL
from .output import print_json

if TYPE_CHECKING:
    from ..engine import Engine
    from ..engine.config import Bouquet
    from ..engine.paths import Paths
    from ..engine.veille.item import VeilleItem
    from ..engine.veille.watch import PollSummary, SourceStatus

# Lines classified together: big enough to batch well, small enough to stream.
CLASSIFY_BATCH = 64
MAX_LINE = 1_000_000  # bytes: a longer stdin line is refused, not read into memory


def _console() -> Console:
    return Console(highlight=False)


async def classify(bouquet: Bouquet, paths: Paths, args: argparse.Namespace) -> int:
    """stdin JSONL {"title","summary"} → label, confidence and prices per line, in order."""
    from ..engine.veille.classifier import ClassifierWorker, item_text
    from ..engine.veille.extract import Catalog, extract_prices

    as_jsonl = args.jsonl
    catalog = Catalog.from_bouquet(bouquet)
    worker = ClassifierWorker()
    table = None if as_jsonl else Table("label", "conf", "prices", "title")
    try:
        for batch in _batches(sys.stdin.buffer):
            predictions = await worker.classify([item_text(t, s) for t, s in batch])
            for (title, summary), prediction in zip(batch, predictions, strict=True):
                quotes = [q.as_json() for q in extract_prices(title, summary, catalog)]
                if table is None:
                    sys.stdout.write(json.dumps({"label": prediction.label,
                                                 "confidence": round(prediction.confidence, 4),
                                                 "prices": quotes}, ensure_ascii=False) + "\n")
                else:
                    table.add_row(_label(prediction.label), percent(prediction.confidence * 100),
                                  Text(_quotes(quotes)), Text(_one_line(title, 80)))
            sys.stdout.flush()
    finally:
        await worker.close()
    if table is not None:
        _console().print(table)
    return 0


def _batches(stream: Any) -> Any:
    from ..engine.text import excerpt

    batch: list[tuple[str, str]] = []
    for number, raw in enumerate(iter(lambda: stream.readline(MAX_LINE + 1), b""), start=1):
        if len(raw) > MAX_LINE:
            raise UsageError(f"stdin line {number}: longer than {MAX_LINE:,} bytes",
                             fix="send one item per line, title and summary only")
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"stdin line {number}: not JSON ({excerpt(str(exc), 80)})",
                             fix='send one object a line: {"title": "...", "summary": "..."}'
                             ) from None
        if not isinstance(data, dict) or not isinstance(data.get("title", ""), str) \
                or not isinstance(data.get("summary", ""), str) \
                or not (data.get("title") or data.get("summary")):
            raise UsageError(f"stdin line {number}: needs a string title or summary",
                             fix='send one object a line: {"title": "...", "summary": "..."}')
        batch.append((data.get("title", ""), data.get("summary", "")))
        if len(batch) == CLASSIFY_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


async def poll(engine: Engine, args: argparse.Namespace) -> int:
    await engine.provider_views()
    return _show_poll(engine, await engine.veille.poll(), args.json)


async def add(engine: Engine, args: argparse.Namespace) -> int:
    source = await engine.veille.add_source(args.where, name=args.name, kind=args.kind,
                                            provider=args.provider)
    await engine.provider_views()
    summary = await engine.veille.poll(only=[source])
    if not args.json:
        _console().print(Text(f"watching {source.name} ({source.kind}): {source.location}"))
    return _show_poll(engine, summary, args.json)


async def remove(engine: Engine, args: argparse.Namespace) -> int:
    await engine.veille.remove_source(args.name)
    _console().print(Text(f"no longer watching {args.name}"))
    return 0


async def sources(engine: Engine, args: argparse.Namespace) -> int:
    return _show_sources(engine, await engine.veille.statuses(), args.json)


async def items(engine: Engine, args: argparse.Namespace) -> int:
    if args.label is not None:
        _check_label(args.label)
    found = await engine.veille_items(limit=args.limit, label=args.label)
    if args.json:
        print_json([_item_json(i) for i in found])
    else:
        _console().print(_items_table(engine, found))
    return 0


def _check_label(label: str) -> None:
    from ..engine.veille.classifier import LABELS

    if label not in LABELS:
        raise UsageError(f"unknown label {label!r}", fix=f"use one of: {', '.join(LABELS)}")


# -- poll ------------------------------------------------------------------------------------


def _show_poll(engine: Engine, summary: PollSummary, as_json: bool) -> int:
    code = EXIT_FAILED if summary.errors else 0
    if as_json:
        print_json({"sources": [_source_json(s) for s in summary.sources],
                     "items": [_item_json(i) for i in summary.items],
                     "approvals": [{"id": a.id, "kind": a.kind, "summary": a.summary}
                                   for a in summary.approvals]})
        return code
    console = _console()
    console.print(_sources_table(engine, summary.sources))
    if summary.items:
        console.print(_items_table(engine, list(summary.items)))
    console.print(Text(f"{len(summary.items)} new item(s); {summary.errors} source(s) failed"))
    for approval in summary.approvals:
        console.print(Text(f"approval #{approval.id} waiting: {approval.summary} "
                           "(a in the cockpit)", style="bold"))
    return code


def _show_sources(engine: Engine, statuses: list[SourceStatus], as_json: bool) -> int:
    if as_json:
        print_json([_source_json(s) for s in statuses])
    else:
        _console().print(_sources_table(engine, statuses))
    return 0


def _sources_table(engine: Engine, statuses: Any) -> Table:
    now = engine.clock.now()
    table = Table("source", "kind", "last poll", "outcome", "new", "detail")
    for s in statuses:
        style = SOURCE.get(s.outcome, "green")
        detail = s.error or s.location
        table.add_row(Text(s.name), s.kind, "—" if s.ts is None else ago(now - s.ts),
                      Text(s.outcome.replace("_", " "), style=style), str(s.new_items),
                      Text(_one_line(detail, 90)))
    return table


def _items_table(engine: Engine, items: list[VeilleItem]) -> Table:
    now = engine.clock.now()
    table = Table("#", "age", "label", "conf", "source", "title", "prices")
    for item in items:
        table.add_row(str(item.id), age(now - item.when), _label(item.label),
                      percent(item.confidence * 100), Text(item.source),
                      Text(_one_line(item.title, 70)),
                      Text(_quotes([q.as_json() for q in item.prices])))
    return table


def _label(label: str) -> Text:
    return Text(label, style=VEILLE_LABEL.get(label, ""))


def _quotes(quotes: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{q['provider'] or '?'}/{q['model'] or '?'} {per_mtok(q['input_per_mtok'], '—')}"
        f"/{per_mtok(q['output_per_mtok'], '—')}" for q in quotes)


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _source_json(s: SourceStatus) -> dict[str, Any]:
    return {"name": s.name, "location": s.location, "kind": s.kind, "outcome": s.outcome,
            "error": s.error, "new_items": s.new_items, "ts": s.ts, "ok_ts": s.ok_ts}


def _item_json(item: VeilleItem) -> dict[str, Any]:
    return {"id": item.id, "source": item.source, "title": item.title,
            "summary": item.summary, "link": item.link, "published_ts": item.published_ts,
            "seen_ts": item.seen_ts, "label": item.label, "confidence": item.confidence,
            "prices": [q.as_json() for q in item.prices]}


# -- report ----------------------------------------------------------------------------------


async def report(engine: Engine, args: argparse.Namespace) -> int:
    """Opportunities and price proposals, the comparison matrix, the week's items, sources."""
    from ..engine.approvals import OPPORTUNITY, PRICE_UPDATE
    from ..engine.veille.classifier import LABELS
    from ..engine.veille.opportunity import DAY_S

    now = engine.clock.now()
    approvals = [a for a in await engine.approvals.history()
                 if a.kind in (OPPORTUNITY, PRICE_UPDATE)
                 and (a.status == "pending" or now - a.ts < 30 * DAY_S)]
    matrix, statuses, usage = await asyncio.gather(
        engine.comparison_matrix(), engine.veille.statuses(), engine.veille.usage())
    week = await engine.store.veille_items(limit=10_000, since_ts=now - 7 * DAY_S)
    counts = {label: sum(1 for r in week if r["label"] == label) for label in LABELS}
    data = {
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                  "usd": usage.usd, "days": usage.days},
        "opportunities": [_approval_json(a) for a in approvals if a.kind == OPPORTUNITY],
        "price_updates": [_approval_json(a) for a in approvals if a.kind == PRICE_UPDATE],
        "matrix": [r.as_json() for r in matrix],
        "items_7d": counts,
        "sources": [_source_json(s) for s in statuses],
    }
    if args.json:
        print_json(data)
        return 0
    console = _console()
    console.rule("Opportunities")
    opportunities = [a for a in approvals if a.kind == OPPORTUNITY]
    if not opportunities:
        console.print(Text("none: no announced offer beats the bouquet at your usage"))
    for a in opportunities:
        console.print(Text(f"#{a.id} [{a.status}] {a.summary}", style="bold"))
        for line in a.evidence.splitlines():
            console.print(Text(f"  {line}"))
    console.rule("Price updates")
    updates = [a for a in approvals if a.kind == PRICE_UPDATE]
    if not updates:
        console.print(Text("none"))
    for a in updates:
        console.print(Text(f"#{a.id} [{a.status}] {a.summary}"))
        console.print(Text(f"  {a.evidence}", style="dim"))
    console.rule("Comparison matrix ($ per Mtok · live performance · energy)")
    console.print(_matrix_table(matrix))
    console.rule("The last 7 days")
    console.print(Text("  ".join(f"{label}: {n}" for label, n in counts.items())))
    failing = [s for s in statuses if s.outcome == "error"]
    console.print(Text(f"{len(statuses)} source(s), {len(failing)} failing"
                       + "".join(f"\n  {s.name}: {s.error}" for s in failing)))
    return 0


def _approval_json(a: Any) -> dict[str, Any]:
    return {"id": a.id, "ts": a.ts, "status": a.status, "summary": a.summary,
            "evidence": a.evidence, "proposed_action": a.proposed_action,
            "payload": a.payload}


def _matrix_table(matrix: Any) -> Table:
    table = Table("provider/model", "in", "out", "price from", "routable", "light",
                  "latency", "success", "Wh/1k out")
    for r in matrix:
        table.add_row(Text(f"{r.provider}/{r.model}"), per_mtok(r.input_per_mtok),
                      per_mtok(r.output_per_mtok), r.price_source,
                      "yes" if r.routable else "no", r.light, latency(r.latency_s),
                      percent(r.success_pct),
                      "—" if r.wh_per_1k is None else f"{r.wh_per_1k:.3g}")
    return table
