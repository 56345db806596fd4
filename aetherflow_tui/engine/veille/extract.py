"""Provider, model and $ per million tokens from a market-watch item's title and summary.

Feed text is untrusted, free-form, English or French. Only its first _MAX_TEXT characters
are read and at most _MAX_FINDS prices, models and provider names, and every pattern has
bounded repetition only, so a hostile item costs milliseconds, never a backtracking storm.

Only US dollar prices are read ("$", "US$", "USD", "dollars", cents). A euro price (or a
CA$, A$...) would need a currency field and a rate to compare with the bouquet's $ prices,
so it is skipped rather than silently converted.
"""

from __future__ import annotations

import bisect
import functools
import html
import re
import unicodedata
from dataclasses import dataclass, replace
from typing import Any

from ..config import Bouquet, default_text, parse

_MAX_TITLE = 1_000
_MAX_RAW = 32_000  # of the summary, before its markup is stripped
_MAX_TEXT = 8_000  # of the plain text that is scanned
_MAX_FINDS = 64  # prices, models, provider names: a longer list is a table, not news
_WINDOW = 40  # characters around a price searched for "input" / "output"


@dataclass(frozen=True, slots=True)
class PriceQuote:
    provider: str | None  # a bouquet provider id, else a known vendor's slug
    model: str | None  # a bouquet model id, else the name as written, slugged
    input_per_mtok: float | None  # US dollars per million tokens
    output_per_mtok: float | None

    def as_json(self) -> dict[str, str | float | None]:
        return {"provider": self.provider, "model": self.model,
                "input_per_mtok": self.input_per_mtok, "output_per_mtok": self.output_per_mtok}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PriceQuote:
        return cls(data.get("provider"), data.get("model"), data.get("input_per_mtok"),
                   data.get("output_per_mtok"))

    @property
    def complete(self) -> bool:
        """Who, what, and both prices: enough to compare with the bouquet."""
        return (self.provider is not None and self.model is not None
                and self.input_per_mtok is not None and self.output_per_mtok is not None)


@dataclass(frozen=True, slots=True)
class _Vendor:
    slug: str  # reported when the bouquet has no provider for it
    names: tuple[str, ...]  # as news writes them, lower case
    ids: tuple[str, ...]  # bouquet provider ids that mean this vendor
    hosts: tuple[str, ...]  # API hosts (or their parent domains) that mean this vendor


_VENDORS = (
    _Vendor("groq", ("groq", "groqcloud"), ("groq",), ("groq.com",)),
    _Vendor("mistral", ("mistral ai", "mistral", "la plateforme"), ("mistral",),
            ("api.mistral.ai",)),
    _Vendor("codestral", ("codestral",), ("codestral",), ("codestral.mistral.ai",)),
    _Vendor("deepseek", ("deepseek",), ("deepseek",), ("deepseek.com",)),
    _Vendor("google", ("google ai studio", "ai studio", "vertex ai", "vertex", "google",
                       "gemini"), ("google", "gemini", "vertex"),
            ("generativelanguage.googleapis.com", "aiplatform.googleapis.com")),
    _Vendor("openai", ("openai",), ("openai",), ("api.openai.com",)),
    _Vendor("openrouter", ("openrouter",), ("openrouter",), ("openrouter.ai",)),
    _Vendor("anthropic", ("anthropic", "claude"), ("anthropic", "claude"), ("anthropic.com",)),
    _Vendor("together-ai", ("together ai", "together.ai"), ("together", "together-ai"),
            ("together.xyz", "together.ai")),
    _Vendor("fireworks", ("fireworks ai", "fireworks.ai", "fireworks"),
            ("fireworks", "fireworks-ai"), ("fireworks.ai",)),
    _Vendor("cerebras", ("cerebras",), ("cerebras",), ("cerebras.ai",)),
    _Vendor("cohere", ("cohere",), ("cohere",), ("cohere.ai", "cohere.com")),
    _Vendor("xai", ("xai", "x.ai", "grok"), ("xai", "grok"), ("x.ai",)),
    _Vendor("perplexity", ("perplexity",), ("perplexity", "pplx"), ("perplexity.ai",)),
    _Vendor("amazon-bedrock", ("amazon bedrock", "aws bedrock", "bedrock"),
            ("bedrock", "amazon-bedrock", "aws-bedrock"), ("amazonaws.com",)),
    _Vendor("azure-openai", ("azure openai",), ("azure", "azure-openai"),
            ("openai.azure.com",)),
    _Vendor("sambanova", ("sambanova",), ("sambanova",), ("sambanova.ai",)),
    _Vendor("deepinfra", ("deepinfra", "deep infra"), ("deepinfra",), ("deepinfra.com",)),
)
# Codestral is Mistral's: "Mistral AI cuts Codestral" is still the codestral endpoint's price.
_PARENT = {"codestral": "mistral"}

# Model family → the vendor that sells it first-hand; None for open weights that many hosts
# serve, where only a named host can say whose price it is.
_FAMILIES: dict[str, str | None] = {
    "gpt": "openai", "claude": "anthropic", "gemini": "google", "deepseek": "deepseek",
    "mistral": "mistral", "mixtral": "mistral", "ministral": "mistral", "magistral": "mistral",
    "pixtral": "mistral", "devstral": "mistral", "codestral": "codestral", "grok": "xai",
    "sonar": "perplexity", "command": "cohere", "llama": None, "qwen": None, "qwq": None,
    "gemma": None, "phi": None, "kimi": None, "glm": None, "nemotron": None,
}
# Dropped when comparing a loose mention with a bouquet id: "Llama 3.1 8B" is
# llama-3.1-8b-instant, "Mistral Small" is mistral-small-latest.
_FILLER = frozenset({"latest", "versatile", "instant", "instruct", "it"})


@dataclass(frozen=True, slots=True)
class Catalog:
    """What the operator's bouquet calls things: provider ids with their aliases, and model ids
    per provider."""

    vendors: tuple[tuple[str, str], ...] = ()  # vendor slug → the bouquet provider that is it
    own_ids: tuple[str, ...] = ()  # bouquet providers no known vendor describes: found by id
    models: tuple[tuple[str, tuple[str, ...]], ...] = ()  # provider id → its model ids

    @classmethod
    def from_bouquet(cls, bouquet: Bouquet) -> Catalog:
        specs = list(bouquet.providers.values())
        claimed: dict[str, str] = {}
        for vendor in _VENDORS:  # by id, then by API host
            spec = next((s for s in specs if s.id in vendor.ids), None) or next(
                (s for s in specs if _serves(vendor, s.base_url)), None)
            if spec is not None:
                claimed[vendor.slug] = spec.id
        for vendor in _VENDORS:  # by price table (gemini prices as "google") as a last resort
            spec = next((s for s in specs if vendor.slug not in claimed
                         and s.id not in claimed.values() and s.price_id == vendor.slug), None)
            if spec is not None:
                claimed[vendor.slug] = spec.id
        # Local providers ("local", "ollama") are no market: their ids are common words.
        own = tuple(s.id for s in specs if s.id not in claimed.values()
                    and s.kind == "openai" and not s.local)
        models = tuple((s.id, tuple(m.id for m in s.models)) for s in specs)
        return cls(tuple(claimed.items()), own, models)

    @classmethod
    def default(cls) -> Catalog:
        return cls.from_bouquet(parse(default_text(), None))

    def provider(self, vendor: str) -> str:
        return dict(self.vendors).get(vendor, vendor)

    def model_ids(self, provider: str) -> tuple[str, ...]:
        return dict(self.models).get(provider, ())


def _serves(vendor: _Vendor, base_url: str | None) -> bool:
    host = (re.sub(r"^[a-z]+://", "", base_url or "").split("/")[0]).split(":")[0].lower()
    return any(host == h or host.endswith("." + h) for h in vendor.hosts)


# --- text ------------------------------------------------------------------------------

_BLOCK_TAG = re.compile(r"<\s*/?\s*(?:br|p|li|div|h[1-6]|tr|ul|ol|table)\b[^<>]{0,2000}>", re.I)
_TAG = re.compile(r"<[^<>]{0,2000}>")
_BLANKS = re.compile(r"[^\S\n]+")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_FRENCH = re.compile(r"(?<!\w)(?:jetons?|entrées?|sorties?|par million|pour 1|millions? de"
                     r"|désormais|coûte|tarifs?|baisse)(?!\w)|\d,\d{1,2} ?\$", re.I)


def _prepare(title: str, summary: str) -> str:
    raw = f"{title[:_MAX_TITLE]}\n{summary[:_MAX_RAW]}"
    raw = html.unescape(_TAG.sub(" ", _BLOCK_TAG.sub("\n", raw)))[: _MAX_TEXT * 2]
    # NFKC turns no-break and thin spaces (French "0,27 $") into spaces, "＄" into "$".
    return _BLANKS.sub(" ", unicodedata.normalize("NFKC", raw))[:_MAX_TEXT]


@dataclass(frozen=True, slots=True)
class _Bounds:
    sentences: tuple[int, ...]  # offsets just past each sentence's end
    clauses: tuple[int, ...]  # the same, plus each ";"
    size: int

    @classmethod
    def of(cls, text: str) -> _Bounds:
        ends = tuple(m.end() for m in _SENTENCE_END.finditer(text))
        semis = (m.end() for m in re.finditer(";", text))
        return cls(ends, tuple(sorted((*ends, *semis))), len(text))

    def sentence(self, pos: int) -> int:
        return bisect.bisect_right(self.sentences, pos)

    def clause(self, pos: int) -> int:
        return bisect.bisect_right(self.clauses, pos)

    def sentence_span(self, pos: int) -> tuple[int, int]:
        index = self.sentence(pos)
        start = self.sentences[index - 1] if index else 0
        return start, self.sentences[index] if index < len(self.sentences) else self.size


# --- prices ----------------------------------------------------------------------------

# "1,000.50" groups thousands; otherwise one decimal mark, "." or ",".
_NUM = (r"\d{1,3}(?:,\d{3}){1,3}(?:\.\d{1,10})?(?!\d|[.,]\d)"
        r"|\d{1,9}(?:[.,]\d{1,10})?(?!\d|[.,]\d)")  # 10 places: "$0.00000059 per token"
_PRICE = re.compile(
    rf"(?:(?<![a-z])US ?\$|(?<![a-z$])\$|(?<![a-z])USD ?)(?P<pre>{_NUM}|\.\d{{1,10}}(?!\d))"
    rf"|(?<![\w.,])(?P<post>{_NUM}) ?(?:(?P<cents>¢|cents?(?!\w))"
    r"|(?:US ?)?\$(?! ?\d)|USD(?![a-z])(?! ?\d)|dollars?(?!\w))",
    re.I,
)
_REDUNDANT = re.compile(r" ?(?:USD|US ?\$|dollars?)(?!\w)", re.I)  # "$2.50 USD per..."
_UNIT = re.compile(
    r" ?(?:/|(?<!\w)(?:per|par|pour|for|every|each|le|au|a)(?!\w)) ?"
    # "$0.000003 per input token": the role can stand between "per" and the unit.
    r"(?:(?P<urole>input|output|prompt|completion)s? )?(?:(?:1|one|un|a) ?)?"
    r"(?:(?P<mega>millions?(?!\w)|m(?:tok(?:en)?s?)?(?![a-z])|(?:1[ ,.]?)?000[ ,.]?000(?!\d))"
    r"|(?P<kilo>k(?:tok(?:en)?s?)?(?![a-z])|thousand(?!\w)|mille(?!\w)|milliers?(?!\w)"
    r"|(?:1[ ,.]?)?000(?!\d))"
    r"|(?P<one>tokens?(?!\w)|jetons?(?!\w)))",
    re.I,
)
_SCALES = {"mega": 1.0, "kilo": 1_000.0, "one": 1_000_000.0}
_ROLE_WORDS = {"input": "input", "prompt": "input", "output": "output",
               "completion": "output"}
# The word after "per million": "tokens" or nothing is ours, "characters" or "images" is not.
_NOUN = re.compile(r"[ -]?(?:(?:de|d'|of|en|input|output|prompt|completion)[ ']?){0,3}"
                   r"(?P<word>[^\W\d_]{2,20})", re.I)
_NOT_TOKENS = frozenset({
    "character", "char", "caractère", "image", "request", "requête", "search", "recherche",
    "query", "call", "appel", "page", "word", "mot", "second", "seconde", "minute", "hour",
    "heure", "user", "utilisateur", "seat", "siège", "licence", "license", "document",
    "email", "message", "month", "mois", "year", "année", "day", "jour", "week", "semaine",
    "source", "session", "conversation", "audio", "video", "vidéo", "file", "fichier",
    "step", "run", "job", "execution", "instance", "gpu", "node", "generation",
})
# Words after a unit that say nothing of what is priced: looked past, up to _NOUN_WORDS.
_NEXT_WORD = re.compile(r"[ -]?(?:d'|l')?(?P<word>[^\W\d_]{1,20})", re.I)
_NOUN_WORDS = 3
_TOKEN_WORDS = frozenset({"token", "jeton", "tok"})
_OTHER_UNIT = re.compile(
    r" ?(?:(?:/|(?<!\w)(?:per|par|each|every)(?!\w)) ?(?!(?:input|output|prompt)(?!\w))[^\W\d_]"
    r"|an? (?:month|year|hour|day|week|seat|user|image|request|minute|second)s?(?!\w)"
    r"|(?:monthly|hourly|mensuels?)(?!\w))",
    re.I,
)
_MAGNITUDE = re.compile(r" ?(?:[kmb]n?|mm|millions?|billions?|milliards?|trillions?|thousand)"
                        r"(?!\w)", re.I)  # "$6.6 billion" raised, "$2M" funding
# "$0.05/0.08 per million": a second amount with no currency of its own; "$0.59/1M" is a unit.
_PAIR = re.compile(r" ?/ ?(?P<num>\d{1,9}(?:[.,]\d{1,10})?)(?!\d|[.,]\d)"
                   r"(?! ?(?:[kmb](?![a-z])|mtok|millions?|thousand|mille|tokens?|jetons?"
                   r"|\$|usd|¢|cents?))", re.I)
_OLD = re.compile(r"(?<!\w)(?:from|was|were|previously|formerly|instead of|au lieu de|contre"
                  r"|passe de|passant de|passé de)(?: only)? ?$", re.I)


@dataclass(frozen=True, slots=True)
class _Price:
    start: int
    end: int
    tail: int  # past the unit phrase: where "input" / "output" may follow
    usd: float
    scale: float | None  # × usd = $ per million tokens; None until borrowed from a neighbour
    assumed: bool = False  # no unit anywhere in the item: kept only when called input/output
    role: str | None = None  # the role written inside the unit ("per input token")


def _number(raw: str, french: bool) -> float | None:
    commas = raw.count(",")
    if commas and "." in raw:  # 1,234.50
        raw = raw.replace(",", "")
    elif commas == 1 and (french or len(raw.split(",")[1]) <= 2):  # 0,59; French 0,590 too
        raw = raw.replace(",", ".")
    elif commas and not french and all(len(g) == 3 for g in raw.split(",")[1:]):  # 1,000
        raw = raw.replace(",", "")
    elif commas:  # "1,2345" in English: neither a decimal nor a thousands comma
        return None
    return float(raw)


def _prices(text: str, french: bool) -> list[_Price]:
    found: list[_Price] = []
    for match in _PRICE.finditer(text):
        if len(found) >= _MAX_FINDS:
            break
        amount = _number(match.group("pre") or match.group("post"), french)
        if amount is None:
            continue
        if match.group("cents"):
            amount /= 100
        after = match.end()
        if match.group("pre") and (redundant := _REDUNDANT.match(text, after)):
            after = redundant.end()
        found.extend(_priced(text, match.start(), match.end(), after, amount, french))
    return found


def _priced(text: str, start: int, end: int, after: int, amount: float,
            french: bool) -> list[_Price]:
    """The price at start, and the second amount of a "$0.05/0.08" pair if one follows."""
    first = _with_unit(text, start, end, after, amount)
    if first is None or first.scale is not None:
        return [first] if first else []
    pair = _PAIR.match(text, after)
    value = _number(pair.group("num"), french) if pair else None
    if pair is None or value is None or value in (1.0, 1_000.0, 1_000_000.0):
        return [first]
    second = _with_unit(text, pair.start("num"), pair.end(), pair.end(), value)
    return [first, second] if second else [first]


def _with_unit(text: str, start: int, end: int, after: int, amount: float) -> _Price | None:
    """The price with the unit that follows it; None when it prices something else."""
    unit = _UNIT.match(text, after)
    if unit:
        scale = next(name for name in _SCALES if unit.group(name))
        noun = _unit_noun(text, unit.end())
        # "per million" alone is the token convention; "per 1,000" alone is as often
        # requests or searches ("$35 per 1,000 grounded prompts"), so it needs "tokens".
        if noun not in (None, "token") or (scale == "kilo" and noun is None):
            return None
        role = unit.group("urole")
        return _Price(start, end, unit.end(), amount, _SCALES[scale],
                      role=_ROLE_WORDS[role.lower()] if role else None)
    if _OTHER_UNIT.match(text, after) or _MAGNITUDE.match(text, after):
        return None
    return _Price(start, end, after, amount, None)


def _singular(word: str) -> str:
    word = word.lower()
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and word != "mois":
        return word[:-1]
    return word


def _unit_noun(text: str, pos: int) -> str | None:
    """What a unit counts, from the words after it: "token", another thing ("search",
    "image", "month"...), or None when the next few words name neither."""
    for _ in range(_NOUN_WORDS):
        found = _NEXT_WORD.match(text, pos)
        if found is None:
            return None
        word = _singular(found.group("word"))
        if word in _TOKEN_WORDS:
            return "token"
        if word in _NOT_TOKENS:
            return word
        pos = found.end()
    return None


def _current(prices: list[_Price], text: str, bounds: _Bounds) -> list[_Price]:
    """Without the old price of a change ("from $0.60 to $0.30") when the new one is there."""
    old = {p.start for p in prices if _OLD.search(text, max(0, p.start - 24), p.start)}
    kept_in = {bounds.sentence(p.start) for p in prices if p.start not in old}
    return [p for p in prices if p.start not in old or bounds.sentence(p.start) not in kept_in]


def _item_scale(text: str) -> float | None:
    """The unit a table header or a lone phrase ("prices per 1M tokens") gives the item."""
    for unit in _UNIT.finditer(text):
        noun = _NOUN.match(text, unit.end())
        tokens = noun is not None and noun.group("word").lower().rstrip("s") in _TOKEN_WORDS
        if tokens or "tok" in unit.group(0).lower():
            return _SCALES[next(name for name in _SCALES if unit.group(name))]
    return None


def _with_scales(prices: list[_Price], text: str, bounds: _Bounds) -> list[_Price]:
    """A price without its own unit takes a neighbour's: "input $0.27, output $1.10 per
    million" (ahead in its clause), "...$0.08/M; Llama 70B $0.59/$0.79" (behind)."""
    given = [p for p in prices if p.scale is not None]
    fallback = None if given else _item_scale(text)  # only read when no price has a unit
    settled = []
    for price in prices:
        if price.scale is not None:
            settled.append(price)
            continue
        clause, sentence = bounds.clause(price.start), bounds.sentence(price.start)
        ahead = [g for g in given if g.start > price.start and bounds.clause(g.start) == clause]
        behind = [g for g in given
                  if g.start < price.start and bounds.sentence(g.start) == sentence]
        nearest = min(given, key=lambda g: abs(g.start - price.start), default=None)
        source = (ahead[:1] or behind[-1:] or [nearest])[0]
        scale = source.scale if source is not None else fallback
        # No unit at all: per million is the convention, but only "input"/"output" says
        # the amount is a token price and not a subscription.
        settled.append(replace(price, scale=scale or 1.0, assumed=scale is None))
    return settled


# --- input or output -------------------------------------------------------------------

_ROLE = re.compile(
    # "cache miss" is the list price itself: only hits, cached input and the like are special.
    r"(?<!\w)(?:(?P<special>cach(?:e|ed|ing)(?![\s-]miss)|batch|off[\s-]?peak|heures creuses)"
    r"|(?P<both>(?:input|prompt|entrée)s? ?(?:/|and|&|\+|et) ?(?:output|completion|sortie)s?)"
    r"|(?P<input>inputs?|prompts?|entrées?|entrees?)"
    r"|(?P<output>outputs?|completions?|sorties?|generated|générés?))(?!\w)",
    re.I,
)
_AFTER_STOP = re.compile(r"[,;:/|]|(?<!\w)(?:and|et|while|whereas|but|mais|vs|versus|tandis)"
                         r"(?!\w)", re.I)
_BEFORE_STOP = re.compile(r"[,;|]|(?<!\w)(?:and|et|while|whereas|but|mais|vs|versus|tandis)"
                          r"(?!\w)", re.I)
# One price for both directions, said after it: "..., input and output alike", "for both
# prompt and completion", "whether prompt or completion", "pour l'entrée et la sortie".
_BOTH = re.compile(
    r"(?<!\w)(?:inputs?|prompts?|entrées?|entrees?)(?: tokens?| jetons?)?"
    r" ?(?:/|&|\+|and|or|et|ou|comme|as well as|ainsi que) ?(?:(?:for|on|pour|en|the|la|le|les|l')"
    r"[ ']?){0,2}(?:outputs?|completions?|sorties?)(?!\w)", re.I)
_BOTH_WINDOW = 64
_IN_OUT = re.compile(r" ?(?:(?P<input>in)|(?P<output>out)) ?", re.I)  # "$0.59 in / $0.79 out"


def _role_in(window: str, last: bool) -> tuple[str | None, int]:
    hits = list(_ROLE.finditer(window))
    if not hits:
        return None, 0
    if any(h.lastgroup == "special" for h in hits):  # cached, batch, off-peak: not the list
        return "special", hits[-1].end()
    hit = hits[-1] if last else hits[0]
    return hit.lastgroup, hit.end()


def _both(text: str, tail: int, ahead: int, end: int) -> int:
    """How far past tail a "both directions" phrase for this price reaches; 0 if none. When
    another price follows in the sentence, something must part them: in "$3 per million
    input tokens and output tokens cost $15", "input ... and output" is no such phrase."""
    found = _BOTH.search(text, tail, min(ahead, tail + _BOTH_WINDOW))
    if found is None:
        return 0
    if ahead < end and not _BEFORE_STOP.search(text, found.end(), ahead):
        return 0
    return found.end() - tail


def _roles(prices: list[_Price], text: str, bounds: _Bounds) -> list[str | None]:
    """"input", "output", "both" ("input/output: ..."), "special" (skip) or None per price."""
    roles: list[str | None] = []
    used = 0  # words the previous price claimed after itself are not this one's label
    for index, price in enumerate(prices):
        start, end = bounds.sentence_span(price.start)
        ahead = prices[index + 1].start if index + 1 < len(prices) else end
        after = text[price.tail:min(ahead, end, price.tail + _WINDOW)]
        if stop := _AFTER_STOP.search(after):
            after = after[:stop.start()]
        role, claimed = _role_in(after, last=False)
        if role is None and (short := _IN_OUT.fullmatch(after)):
            role, claimed = short.lastgroup, len(after)
        if price.role is not None:
            role = price.role
        elif both := _both(text, price.tail, min(ahead, end), end):
            role, claimed = "both", both
        before = text[max(used, start, price.start - _WINDOW):price.start]
        for stop in _BEFORE_STOP.finditer(before):
            before = before[stop.end():]  # each cut shortens it: the last one wins
        earlier, _ = _role_in(before, last=True)
        if role is None or earlier == "special":
            role = earlier
        roles.append(role)
        used = price.tail + claimed
    return roles


# --- models and providers ---------------------------------------------------------------

_SEP = r"(?:[ _-]|(?=\d))"
_TOKEN = (
    r"(?!(?:19|20)\d\d(?!\d))"  # "Mistral 2025" is a year; "Codestral 2501" a version
    r"(?:\d{1,2}x\d{1,3}b|\d{1,4}(?:\.\d{1,3}){0,2}[a-z]{0,2}|[vr]\d{1,2}(?:\.\d{1,2})?b?"
    r"|mini|nano|small|medium|large|flash|pro|lite|haiku|sonnet|opus|turbo|instant|versatile"
    r"|instruct|coder|reasoner|chat|plus|max|ultra|vision|latest|preview|exp|thinking|oss"
    r"|scout|maverick|nemo|saba|distill(?:[ -](?:llama|qwen))?)"
    r"(?![\w$€%¢+])(?![.,]\d)"
)
_FAMILY = "|".join(sorted(_FAMILIES, key=len, reverse=True))
_MODEL = re.compile(
    rf"(?<![\w.-])(?:o[134](?:{_SEP}{_TOKEN}){{0,3}}"
    rf"|command[ -](?:r7b|r\+|r|a|light)(?:{_SEP}{_TOKEN}){{0,3}}"
    rf"|(?:{_FAMILY}){_SEP}{_TOKEN}(?:{_SEP}{_TOKEN}){{0,5}})(?![\w+])",
    re.I,
)
_MAKER = re.compile(rf"(?P<family>{_FAMILY})|o[134](?![a-z])", re.I)
# "Llama 3.3 70B on Groq": the provider that follows a model this way hosts it.
_HOST_LINK = re.compile(r",? ?(?:is |are |now )?(?:on|via|through|sur|chez|from|hosted on"
                        r"|served by|available on|disponible sur) (?:the )?", re.I)


@dataclass(frozen=True, slots=True)
class _Model:
    start: int
    end: int
    name: str  # the bouquet id when written exactly, else as written, slugged
    exact: bool
    maker: str | None  # vendor slug of the family's first-hand seller
    owners: tuple[str, ...]  # bouquet providers listing this exact id


@dataclass(frozen=True, slots=True)
class _Host:
    start: int
    vendor: str | None  # None: a bouquet provider found by its own id
    provider: str  # the bouquet id, else the vendor slug


def _maker(name: str) -> str | None:
    head = _MAKER.match(name.rsplit("/", 1)[-1])
    if head is None:
        return None
    family = head.group("family")
    return _FAMILIES[family.lower()] if family else "openai"  # o1, o3, o4


def _slug(name: str) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[\s_]+", "-", name.lower()))


def _loose(name: str) -> tuple[str, ...]:
    parts: list[str] = []
    for part in re.split(r"[\s_:-]+", name.lower().rsplit("/", 1)[-1]):
        glued = re.fullmatch(r"([a-z]{2,})(\d.*)", part)  # "llama3.3", "gpt4o"
        parts.extend(glued.groups() if glued else (part,))
    return tuple(p for p in parts if p and p not in _FILLER)


def _bouquet_model(catalog: Catalog, provider: str, name: str) -> str | None:
    wanted = _loose(name)
    return next((m for m in catalog.model_ids(provider) if _loose(m) == wanted), None)


@functools.lru_cache(maxsize=16)
def _id_pattern(models: tuple[tuple[str, tuple[str, ...]], ...]) -> re.Pattern[str] | None:
    # An id with neither digit nor separator ("local") is a word in prose, not a mention.
    ids = {m for _, ms in models for m in ms if re.search(r"[\d/:.-]", m)}
    if not ids:
        return None
    alternation = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
    return re.compile(rf"(?<![\w.-])(?:{alternation})(?![\w/]|[-.:]\w)", re.I)


@functools.lru_cache(maxsize=16)
def _host_pattern(own_ids: tuple[str, ...]) -> re.Pattern[str]:
    names = [n for v in _VENDORS for n in v.names] + list(own_ids)
    alternation = "|".join(r"[\s-]?".join(re.escape(word) for word in n.split())
                           for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![\w.])(?:{alternation})(?!\w)", re.I)


def _models(text: str, catalog: Catalog) -> list[_Model]:
    listed: dict[str, tuple[str, list[str]]] = {}  # lower-case id → (id, providers)
    for provider, ids in catalog.models:
        for model_id in ids:
            listed.setdefault(model_id.lower(), (model_id, []))[1].append(provider)
    spans: list[tuple[int, int, int, str]] = []  # (start, -length, 0 for exact ids, text)
    for rank, pattern in enumerate((_id_pattern(catalog.models), _MODEL)):
        for index, match in enumerate(pattern.finditer(text) if pattern else ()):
            if index >= _MAX_FINDS:
                break
            spans.append((match.start(), -len(match.group(0)), rank, match.group(0)))
    found: list[_Model] = []
    for start, _, rank, written in sorted(spans):  # where spans overlap the longest wins
        if found and start < found[-1].end:
            continue
        model_id, owners = listed.get(written.lower(), (None, [])) if rank == 0 else (None, [])
        found.append(_Model(start, start + len(written), model_id or _slug(written),
                            model_id is not None, _maker(written), tuple(owners)))
    return found


_BY_NAME = {re.sub(r"[\s-]", "", n): v.slug for v in _VENDORS for n in v.names}


def _hosts(text: str, catalog: Catalog, models: list[_Model]) -> list[_Host]:
    found: list[_Host] = []
    for match in _host_pattern(catalog.own_ids).finditer(text):
        if len(found) >= _MAX_FINDS:
            break
        if any(m.start <= match.start() < m.end for m in models):  # "DeepSeek" in DeepSeek-V3
            continue
        written = match.group(0).lower()
        vendor = _BY_NAME.get(re.sub(r"[\s-]", "", written))
        provider = catalog.provider(vendor) if vendor else written
        found.append(_Host(match.start(), vendor, provider))
    return found


def _provider_for(model: _Model | None, price: _Price, hosts: list[_Host], text: str,
                  bounds: _Bounds, catalog: Catalog) -> str | None:
    """The host the item names (Groq serving Llama), else the model's own vendor. Hosts named
    in the price's sentence come first, then in the model's, then anywhere in the item."""
    anchor = model.start if model is not None else price.start
    near = ([h for h in hosts if bounds.sentence(h.start) == bounds.sentence(price.start)]
            or [h for h in hosts if bounds.sentence(h.start) == bounds.sentence(anchor)]
            or hosts)
    if not near:
        if model is None:
            return None
        if len(model.owners) == 1:
            return model.owners[0]
        return catalog.provider(model.maker) if model.maker else None
    if model is not None:
        link = _HOST_LINK.match(text, model.end)
        linked = next((h for h in hosts if link and h.start == link.end()), None)
        if linked is not None:
            return linked.provider
        makers = {v for v in (model.maker, _PARENT.get(model.maker or "")) if v}
        for host in near:
            if host.vendor in makers:
                return catalog.provider(model.maker or "")
            if host.provider in model.owners:
                return host.provider
        for host in near:
            if not model.exact and _bouquet_model(catalog, host.provider, model.name):
                return host.provider
    before = [h for h in near if h.start < anchor]
    return (before[-1] if before else near[0]).provider


def _model_for(price: _Price, models: list[_Model], bounds: _Bounds) -> _Model | None:
    """The nearest model named before the price in its sentence, else after it there, else
    the nearest before it anywhere (a title naming the model the summary prices)."""
    sentence = bounds.sentence(price.start)
    before = [m for m in models if m.end <= price.start]
    same = [m for m in before if bounds.sentence(m.start) == sentence]
    after = [m for m in models
             if m.start >= price.end and bounds.sentence(m.start) == sentence]
    return (same[-1:] or after[:1] or before[-1:] or models[:1] or [None])[0]


def _settle(entries: list[tuple[float, str | None]]) -> tuple[float | None, float | None]:
    # reversed: the first input (and output) the item states wins over later repeats
    given = {role: value for value, role in reversed(entries) if role in ("input", "output")}
    loose = [value for value, role in entries if role not in ("input", "output")]
    if len(entries) == 1 and loose:  # one unqualified price: a blended rate
        return loose[0], loose[0]
    low, high = given.get("input"), given.get("output")
    for value in loose:  # "$0.59/$0.79": input then output
        if low is None:
            low = value
        elif high is None:
            high = value
    return low, high


def extract_prices(title: str, summary: str, catalog: Catalog) -> list[PriceQuote]:
    """Every (provider, model) an item prices, in $ per million tokens; [] when none."""
    text = _prepare(title, summary)
    prices = _prices(text, bool(_FRENCH.search(text)))
    if not prices:
        return []
    bounds = _Bounds.of(text)
    prices = _with_scales(_current(prices, text, bounds), text, bounds)
    models = _models(text, catalog)
    hosts = _hosts(text, catalog, models)
    groups: dict[tuple[str | None, str | None], list[tuple[float, str | None]]] = {}
    for price, role in zip(prices, _roles(prices, text, bounds), strict=True):
        if role == "special" or (price.assumed and role is None):
            continue
        model = _model_for(price, models, bounds)
        provider = _provider_for(model, price, hosts, text, bounds, catalog)
        name = None
        if model is not None:
            name = model.name if model.exact or provider is None else (
                _bouquet_model(catalog, provider, model.name) or model.name)
        per_mtok = round(price.usd * (price.scale or 1.0), 6)
        groups.setdefault((provider, name), []).append(
            (per_mtok, None if role == "both" else role))
    return [PriceQuote(provider, name, *_settle(entries))
            for (provider, name), entries in groups.items()]
