"""The market watch at work: poll, classify, store, then propose.

One poll reads every source at once (a dead one never stops the others), keeps the items
not seen before, classifies them in one batch on the classifier's worker thread, extracts
their prices, and stores them before anyone hears of them. Then, for the operator:

- a price for a model of the bouquet that differs from the one in use becomes a
  `price_update` approval (the comparison matrix changes only once approved);
- an offer that beats what the bouquet costs now becomes a `veille_opportunity`
  approval carrying its report; approving it walks the key-acquisition funnel;
- an outage about a provider of the bouquet raises an alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..approvals import OPPORTUNITY, PRICE_UPDATE
from ..errors import UsageError
from ..events import VeilleItemClassified, VeillePolled
from ..text import excerpt
from ..views import SourceStatus  # a read model: the cockpit has it before the veille loads
from .extract import PriceQuote
from .item import VeilleItem
from .opportunity import (
    DAY_S,
    MONTH_DAYS,
    Baseline,
    Candidate,
    Report,
    Usage,
    assess,
    blended,
)

if TYPE_CHECKING:
    import httpx

    from ..approvals import Approval
    from ..context import EngineContext
    from .classifier import ClassifierWorker
    from .sources import PollResult, Source

log = logging.getLogger(__name__)

# A syndicated story is the same news for this long, whatever its link.
TITLE_WINDOW_S = 7 * DAY_S
# Prices within this much of the current ones are the same price, rounded differently.
SAME_PRICE = 0.005
_SIZE_IN_NAME = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])")


@dataclass(frozen=True, slots=True)
class PollSummary:
    sources: tuple[SourceStatus, ...]
    items: tuple[VeilleItem, ...]  # new ones, newest first
    approvals: tuple[Approval, ...]  # what they proposed

    @property
    def errors(self) -> int:
        return sum(1 for s in self.sources if s.outcome == "error")


class VeilleWatch:
    def __init__(self, engine: EngineContext) -> None:
        self.engine = engine
        self.spec = engine.bouquet.veille
        self._classifier: ClassifierWorker | None = None
        self._http: httpx.AsyncClient | None = None
        self._poll_lock = asyncio.Lock()
        self._loop: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def classifier(self) -> ClassifierWorker:
        if self._classifier is None:
            from .classifier import ClassifierWorker

            self._classifier = ClassifierWorker()
        return self._classifier

    def start(self) -> None:
        """Poll every [veille] interval_s until aclose()."""
        if self._loop is None:
            self._loop = asyncio.create_task(self._poll_forever(), name="veille")

    async def aclose(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._classifier is not None:
            await self._classifier.close()
            self._classifier = None

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad poll must not end the watch
                log.exception("veille poll failed")
                self.engine.raise_alert("warning", "Veille poll failed", excerpt(str(exc)),
                                        "veille")
            await asyncio.sleep(self.spec.interval_s)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                headers={"User-Agent": "aetherflow-veille/0.1 (+feed reader)"},
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
        return self._http

    # -- sources ---------------------------------------------------------------------------

    async def sources(self) -> list[Source]:
        """Config sources, the defaults, then the ones added from the command line."""
        from .sources import Source, default_sources

        found = [Source(f.name, f.location, f.kind, f.provider) for f in self.spec.sources]
        if self.spec.default_sources:
            found += default_sources(self.engine.bouquet)
        found += [Source(r["name"], r["location"], r["kind"], r["provider"])
                  for r in await self.engine.store.added_veille_sources()]
        unique: dict[str, Source] = {}
        for source in found:
            unique.setdefault(source.location, source)
        return list(unique.values())

    async def statuses(self) -> list[SourceStatus]:
        polls = await self.engine.store.veille_polls()
        statuses = []
        for source in await self.sources():
            row = polls.get(source.location)
            if row is None:
                statuses.append(SourceStatus(source.name, source.location, source.kind,
                                             "never", None, 0, None, None))
            else:
                statuses.append(SourceStatus(source.name, source.location, source.kind,
                                             row["outcome"], row["error"], row["new_items"],
                                             row["ts"], row["ok_ts"]))
        return statuses

    async def add_source(self, where: str, *, name: str | None = None, kind: str | None = None,
                         provider: str | None = None) -> Source:
        """Remember a feed or status page (a URL or a local file) and poll it from now on."""
        from .sources import Source

        location, default_name = _location(where)
        if kind is None:
            kind = "status" if location.endswith(".json") else "feed"
        if provider is not None:
            self.engine.provider_spec(provider)  # unknown: exit 2 with the known ones
        name = name or default_name
        for source in await self.sources():
            if source.location == location:
                raise UsageError(f"{where} is already watched, as {source.name!r}",
                                 fix="`aetherflow veille sources` lists them")
            if source.name == name:
                raise UsageError(f"a veille source is already named {name!r}",
                                 fix="give this one another name with --name")
        await self.engine.store.add_veille_source(name, location, kind, provider,
                                                  self.engine.clock.now())
        return Source(name, location, kind, provider)  # type: ignore[arg-type]

    async def remove_source(self, name: str) -> None:
        if not await self.engine.store.remove_veille_source(name):
            raise UsageError(f"no source named {name!r} was added with `veille add`",
                             fix="config sources are removed from [veille] in the config")

    # -- the poll --------------------------------------------------------------------------

    async def poll(self, only: list[Source] | None = None) -> PollSummary:
        """Read the sources (all, or `only`), keep and classify what is new, propose."""
        from .sources import Validators, dedupe, poll_all

        async with self._poll_lock:  # the timer and the operator's u must not interleave
            store = self.engine.store
            sources = only if only is not None else await self.sources()
            polls = await store.veille_polls()
            validators = {s.name: Validators(polls[s.location]["etag"],
                                                 polls[s.location]["last_modified"])
                          for s in sources if s.location in polls}
            results = await poll_all(self._client(), sources, validators,
                                     timeout_s=self.spec.timeout_s,
                                     max_bytes=self.spec.max_bytes)
            fresh = dedupe([item for r in results for item in r.items])
            known = await store.known_veille_keys([i.key for i in fresh])
            fresh = [i for i in fresh if i.key not in known]
            items = await self._classify_and_store(fresh)
            counts: dict[str, int] = {}
            for item in items:
                counts[item.source] = counts.get(item.source, 0) + 1
            now = self.engine.clock.now()
            for result in results:
                await store.record_veille_poll(
                    result.source.location, result.source.name, now, result.outcome,
                    result.error, result.validators.etag, result.validators.last_modified,
                    counts.get(result.source.name, 0))
            statuses = tuple(_status(r, counts.get(r.source.name, 0), now) for r in results)
            for item in sorted(items, key=lambda i: i.when):
                self.engine.bus.publish(VeilleItemClassified(now, item))
            self.engine.bus.publish(VeillePolled(now, statuses, len(items)))
            approvals = await self._propose(items)
            return PollSummary(statuses, tuple(sorted(items, key=lambda i: -i.when)),
                               tuple(approvals))

    async def _classify_and_store(self, fresh: list[Any]) -> list[VeilleItem]:
        if not fresh:
            return []
        from ..statuspage import is_finished
        from .classifier import Prediction, item_text
        from .extract import Catalog, extract_prices

        # A source that says its incident is resolved knows better than a reading of the
        # text: such an item is no outage and the classifier is not asked.
        settled = [is_finished(i.status) for i in fresh]
        classified = iter(await self.classifier.classify(
            [item_text(i.title, i.summary) for i, done in zip(fresh, settled, strict=True)
             if not done]))
        over = Prediction("noise", 1.0)
        predictions = [over if done else next(classified) for done in settled]
        catalog = Catalog.from_bouquet(self.engine.bouquet)
        quotes = await asyncio.to_thread(
            lambda: [extract_prices(i.title, i.summary, catalog) for i in fresh])
        now = self.engine.clock.now()
        rows = [{"key": i.key, "title_key": title_key(i.title), "source": i.source,
                 "title": i.title, "summary": i.summary, "link": i.link,
                 "published_ts": i.published_ts, "seen_ts": now, "label": p.label,
                 "confidence": p.confidence, "prices": [q.as_json() for q in found]}
                for i, p, found in zip(fresh, predictions, quotes, strict=True)]
        ids = await self.engine.store.add_veille_items(rows, title_window_s=TITLE_WINDOW_S)
        return [VeilleItem.from_row({**row, "id": item_id})
                for row, item_id in zip(rows, ids, strict=True) if item_id]

    # -- proposals -------------------------------------------------------------------------

    async def _propose(self, items: list[VeilleItem]) -> list[Approval]:
        approvals: list[Approval] = []
        sure = [i for i in items if i.confidence >= self.spec.min_confidence]
        for item in sure:
            if item.label == "outage" and item.confidence >= self.outage_threshold():
                self._outage_alert(item)
            if item.label not in ("price_change", "new_offer"):
                continue
            for quote in item.prices:
                # An offer worth acquiring walks the funnel, whose end adopts its price;
                # any other new price for a bouquet model just keeps the matrix current.
                approval = await self._opportunity(item, quote)
                if approval is None:
                    approval = await self._price_update(item, quote)
                if approval is not None:
                    approvals.append(approval)
        return approvals

    def outage_threshold(self) -> float:
        """The confidence an outage label needs to raise an alert: min_confidence, or the
        head's own threshold (measured on the held-out set, see train.py) if higher."""
        head = self.classifier.head
        return max(self.spec.min_confidence, head.outage_threshold if head else 0.0)

    def _outage_alert(self, item: VeilleItem) -> None:
        providers = _mentioned(self.engine, item)
        if providers:
            self.engine.raise_alert(
                "warning", f"Veille: outage reported for {', '.join(providers)}",
                f"{item.title} ({item.source})", "veille")

    async def _price_update(self, item: VeilleItem, quote: PriceQuote) -> Approval | None:
        """A new price for a model of the bouquet: the matrix changes once approved."""
        engine = self.engine
        spec = engine.bouquet.providers.get(quote.provider or "")
        model = spec.model(quote.model or "") if spec is not None else None
        if spec is None or model is None or not quote.complete:
            return None
        assert quote.input_per_mtok is not None and quote.output_per_mtok is not None
        rates = engine.prices.rates(spec, model)
        if rates is not None and _same(rates.input, quote.input_per_mtok) and _same(
                rates.output, quote.output_per_mtok):
            return None
        payload = {"provider": spec.id, "model": model.id,
                   "input_per_mtok": quote.input_per_mtok,
                   "output_per_mtok": quote.output_per_mtok, "item_id": item.id}
        if await self._already_pending(PRICE_UPDATE, payload):
            return None
        now = ("unpriced" if rates is None
               else f"${rates.input:g} in, ${rates.output:g} out ({rates.source})")
        return await engine.approvals.request(
            PRICE_UPDATE,
            summary=f"New price for {spec.id}/{model.id}: ${quote.input_per_mtok:g} in, "
                    f"${quote.output_per_mtok:g} out per Mtok",
            evidence=f"{item.label} ({item.confidence:.0%}) from {item.source}: "
                     f"{item.title}; the matrix says {now}",
            proposed_action="update the comparison matrix: routing and cost use the new price",
            payload=payload)

    async def _opportunity(self, item: VeilleItem, quote: PriceQuote) -> Approval | None:
        report = await self.assess(quote)
        if report is None:
            return None
        payload = {"provider": report.provider, "model": report.model,
                   "input_per_mtok": report.input_per_mtok,
                   "output_per_mtok": report.output_per_mtok, "item_id": item.id,
                   "report": report.as_json()}
        if await self._already_pending(OPPORTUNITY, payload):
            return None
        summary, evidence = describe_opportunity(item, report)
        return await self.engine.approvals.request(
            OPPORTUNITY, summary=summary, evidence=evidence,
            proposed_action=report.next_step, payload=payload)

    async def _already_pending(self, kind: str, payload: dict[str, Any]) -> bool:
        fields = ("provider", "model", "input_per_mtok", "output_per_mtok")
        return any(a.kind == kind and all(a.payload.get(f) == payload[f] for f in fields)
                   for a in await self.engine.approvals.pending())

    # -- the report ------------------------------------------------------------------------

    async def _month(self) -> list[dict[str, Any]]:
        """Real traffic per provider and model over the last 30 days."""
        return await self.engine.store.usage_since(
            self.engine.clock.now() - MONTH_DAYS * DAY_S)

    async def usage(self) -> Usage:
        return self._usage(await self._month())

    def _usage(self, rows: list[dict[str, Any]]) -> Usage:
        if not rows:
            return Usage(0, 0, 0.0, MONTH_DAYS)
        first = min(r["first_ts"] for r in rows)
        return Usage(sum(r["input_tokens"] or 0 for r in rows),
                     sum(r["output_tokens"] or 0 for r in rows),
                     sum(r["usd"] for r in rows),
                     min(MONTH_DAYS, (self.engine.clock.now() - first) / DAY_S))

    async def assess(self, quote: PriceQuote) -> Report | None:
        rows = await self._month()  # read once: usage and baseline come from the same rows
        usage = self._usage(rows)
        baseline = self._baseline(usage, rows)
        candidate = await self._candidate(quote)
        return assess(quote, usage, baseline, candidate,
                      min_saving_pct=self.spec.min_saving_pct)

    def _baseline(self, usage: Usage, rows: list[dict[str, Any]]) -> Baseline:
        engine = self.engine
        api = [r for r in rows if _is_api(engine, r["provider"])]
        tokens = sum((r["input_tokens"] or 0) + (r["output_tokens"] or 0) for r in api)
        busiest = max(api, key=lambda r: r["calls"], default=None)
        params = _params_b(engine, busiest["provider"], busiest["model"]) if busiest else None
        latencies = [(h.latency_p50_s, r["calls"]) for r in api
                     if (h := engine.health.health(r["provider"])).latency_p50_s is not None]
        latency = (sum(lat * n for lat, n in latencies) / sum(n for _, n in latencies)
                   if latencies else None)
        if tokens:
            usd = sum(r["usd"] for r in api)
            per_mtok = usd / tokens * 1e6
            return Baseline(per_mtok, f"${per_mtok:.4g}/Mtok paid on average over the last "
                                      f"{usage.days:.0f} day(s) of real traffic", latency,
                            params)
        share = usage.input_share()
        cheapest: tuple[float, str] | None = None
        for spec in engine.bouquet.providers.values():
            if spec.local or spec.id not in engine.router.routable:
                continue
            for model in spec.models:
                rates = engine.prices.rates(spec, model)
                if rates is None:
                    continue
                price = blended(rates.input, rates.output, share)
                if cheapest is None or price < cheapest[0]:
                    cheapest = (price, f"{spec.id}/{model.id}")
        if cheapest is None:
            return Baseline(None, "no priced API provider is routable yet: nothing to beat",
                            latency, params)
        return Baseline(cheapest[0], f"${cheapest[0]:.4g}/Mtok on {cheapest[1]}, the cheapest "
                                     "routable API model (no traffic in 30 days)", latency,
                        params)

    async def _candidate(self, quote: PriceQuote) -> Candidate:
        engine = self.engine
        provider = quote.provider or ""
        spec = engine.bouquet.providers.get(provider)
        routable = engine.router.routable
        others = sum(1 for s in engine.bouquet.providers.values()
                     if s.id != provider and not s.local and s.id in routable)
        since = engine.clock.now() - MONTH_DAYS * DAY_S
        outages = geopolitical = 0
        for row in await engine.store.veille_items(limit=2000, since_ts=since):
            if row["label"] not in ("outage", "geopolitical_risk"):
                continue
            if provider in _mentioned(engine, VeilleItem.from_row(row), everyone=True):
                if row["label"] == "outage":
                    outages += 1
                else:
                    geopolitical += 1
        health = engine.health.health(provider) if spec is not None else None
        latency = None
        if health is not None:
            latency = health.latency_p50_s or health.latency_ewma_s
        return Candidate(
            in_bouquet=spec is not None,
            model_in_bouquet=spec is not None and spec.model(quote.model or "") is not None,
            routable=provider in routable,
            keyring=spec is not None and spec.key == "keyring",
            console_url=spec.console_url if spec is not None else None,
            zone=spec.zone if spec is not None else None,
            latency_s=latency,
            params_b=_params_b(engine, provider, quote.model or ""),
            outages_30d=outages, geopolitical_30d=geopolitical, other_routable=others)


def describe_opportunity(item: VeilleItem, report: Report) -> tuple[str, str]:
    """The approval's summary line and its evidence: the item, then the report."""
    saving = ("" if report.saving_pct is None
              else f", {report.saving_pct:.0f}% under the bouquet")
    summary = (f"Opportunity: {report.provider}/{report.model} at "
               f"${report.offer_per_mtok:.3g}/Mtok{saving}")
    evidence = "\n".join([f"{item.label} ({item.confidence:.0%}) from {item.source}: "
                          f"{item.title}", *report.lines()])
    return summary, evidence


def title_key(title: str) -> str:
    return " ".join(title.casefold().split())


def _status(result: PollResult, new_items: int, now: float) -> SourceStatus:
    source = result.source
    ok = None if result.outcome == "error" else now
    return SourceStatus(source.name, source.location, source.kind, result.outcome,
                        result.error, new_items, now, ok)


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= SAME_PRICE * max(abs(a), abs(b), 1e-9)


def _is_api(engine: EngineContext, provider: str) -> bool:
    spec = engine.bouquet.providers.get(provider)
    return spec is not None and not spec.local


def _params_b(engine: EngineContext, provider: str, model_id: str) -> float | None:
    spec = engine.bouquet.providers.get(provider)
    model = spec.model(model_id) if spec is not None else None
    if model is not None and model.params_b is not None:
        return model.params_b
    match = _SIZE_IN_NAME.search(model_id)
    return float(match.group(1)) if match else None


def _mentioned(engine: EngineContext, item: VeilleItem, *, everyone: bool = False) -> list[str]:
    """Bouquet providers the item speaks about: its quotes', else the names in its text."""
    named = [q.provider for q in item.prices if q.provider]
    text = f"{item.title} {item.summary}".casefold()
    for pid in engine.bouquet.providers:
        if re.search(rf"(?<![a-z0-9]){re.escape(pid)}(?![a-z0-9])", text):
            named.append(pid)
    providers = list(dict.fromkeys(named))
    return providers if everyone else [p for p in providers if p in engine.bouquet.providers]


def _location(where: str) -> tuple[str, str]:
    """(location, a default name) for `veille add`: an http(s) URL or an existing file."""
    parts = urlsplit(where)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise UsageError(f"{where!r} is not a URL with a host",
                             fix="give a full URL, e.g. https://example.com/feed.xml")
        return where, parts.hostname
    if parts.scheme and len(parts.scheme) > 1:
        raise UsageError(f"{where!r}: only http(s) URLs and local files can be watched",
                         fix="download it, then `aetherflow veille add FILE`")
    path = Path(where).expanduser()
    if not path.is_file():
        raise UsageError(f"{where}: no such file", fix="check the path, or give an http(s) URL")
    return str(path.resolve()), path.stem
