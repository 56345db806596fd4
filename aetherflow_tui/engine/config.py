"""The bouquet config: TOML in, typed settings out, errors that point at file:line.

The file, once it exists, is the whole bouquet. Without one, the embedded default bouquet
(the same text `aetherflow config init` writes) is used, so both paths share one parser.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import gguf
from .errors import ConfigError
from .paths import FileRefused, read_bounded

ROLES = frozenset(
    {
        "fast", "cheap", "code", "fim", "reasoning", "quality", "prototyping",
        "logic", "qa", "chat", "survival",
    }
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ZONE = re.compile(r"^[A-Z]{3}$")
_PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# The default bouquet is 12 KB; 1 MB holds three thousand providers. Loading is linear
# (tomllib ~0.6 s a MB), so the cap keeps even a mistaken file to a second or two.
MAX_CONFIG_BYTES = 1024 * 1024


class _FieldProblem(ValueError):
    """A provider-level check whose culprit is a field below it: `at` is its loc suffix."""

    def __init__(self, message: str, *at: str | int) -> None:
        super().__init__(message)
        self.at = at


class _Strict(BaseModel):
    # TOML has inf and nan: a price of inf turns a cost into NaN, which the store cannot
    # hold. Every number is finite; a limit is lifted by raising it, never by inf.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSpec(_Strict):
    id: str = Field(min_length=1)
    roles: tuple[str, ...] = ()
    price_in: float | None = Field(default=None, ge=0)
    price_out: float | None = Field(default=None, ge=0)
    price_cached_in: float | None = Field(default=None, ge=0)
    params_b: float | None = Field(default=None, gt=0)
    context: int | None = Field(default=None, gt=0)
    path: str | None = None  # llama_cpp: a .gguf file, or "embedded" for the built-in model
    # llama_cpp: how messages become a prompt when the GGUF carries no chat template: a
    # llama-cpp-python format name (gemma, chatml, llama-3, mistral-instruct...) or a Jinja
    # template of your own. The GGUF's own template wins when neither is set.
    chat_format: str | None = None
    chat_template: str | None = None

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, roles: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ValueError(
                f"unknown role {unknown[0]!r}; use one of: {', '.join(sorted(ROLES))}"
            )
        return roles

    @model_validator(mode="after")
    def _prices_together(self) -> ModelSpec:
        # Half an override would silently mix the operator's price with the table's.
        if (self.price_in is None) != (self.price_out is None):
            missing = "price_out" if self.price_out is None else "price_in"
            raise _FieldProblem(f"model {self.id!r} sets one price: add {missing} too "
                                "(price_in and price_out go together)", missing)
        if self.chat_format is not None and self.chat_template is not None:
            raise _FieldProblem(f"model {self.id!r} sets both chat_format and chat_template: "
                                "keep one", "chat_template")
        return self


class ProviderSpec(_Strict):
    id: str
    kind: Literal["openai", "llama_cpp"]
    base_url: str | None = None
    key: str = "keyring"
    zone: str = "WOR"
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)  # with no byte from the provider
    deadline_s: float = Field(default=300.0, gt=0)  # a whole call, however it streams
    max_answer_bytes: int = Field(default=8 << 20, ge=1024)  # one answer as sent
    console_url: str | None = None
    price_id: str | None = None
    energy_id: str | None = None
    enabled: bool = True
    free_tier: bool = False  # calls within the provider's free allowance cost nothing
    # Runs on this machine or this network (llama_cpp always; set it on an Ollama or
    # llama.cpp server): the response modes treat it as local, and it works offline.
    local: bool = False
    json_mode: bool = True  # accepts response_format = {"type": "json_object"}
    max_concurrency: int = Field(default=32, ge=1, le=10_000)
    # Vigilance: the canary probes this provider (on canary_model, default its cheapest),
    # and its public status page (a Statuspage-style summary.json) is read when declared;
    # status_components narrows it to the components that matter (default: all of them).
    canary: bool = True
    canary_model: str | None = None
    status_page: str | None = None
    status_components: tuple[str, ...] = ()
    # llama_cpp only: CPU threads per generation (default: the machine's cores), layers
    # offloaded to the GPU (-1: all; ignored by a CPU-only build), how long an idle model
    # stays loaded, and the free memory below which idle models are unloaded.
    threads: int | None = Field(default=None, ge=1, le=256)
    gpu_layers: int = Field(default=-1, ge=-1)
    keep_warm_s: float = Field(default=900.0, ge=0)
    min_free_mb: int = Field(default=1024, ge=0)
    models: tuple[ModelSpec, ...] = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _provider_id(cls, value: str) -> str:
        if not _PROVIDER_ID.match(value):
            raise ValueError(
                f"provider id {value!r} must be lower-case letters, digits, '-' or '_'"
            )
        return value

    @field_validator("base_url", "console_url", "status_page")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL with a host")
        return value.rstrip("/")

    @field_validator("key")
    @classmethod
    def _key_source(cls, value: str) -> str:
        if value in ("keyring", "none"):
            return value
        if value.startswith("env:") and _ENV_NAME.match(value[4:]):
            return value
        raise ValueError(f'key must be "keyring", "none" or "env:NAME", not {value!r}')

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not _ZONE.match(value):
            raise ValueError(
                f"zone {value!r} must be an ISO 3166-1 alpha-3 code such as FRA, or WOR"
            )
        return value

    @model_validator(mode="after")
    def _kind_needs(self) -> ProviderSpec:
        if self.kind == "openai" and self.base_url is None:
            raise ValueError('a kind = "openai" provider needs base_url')
        for index, model in enumerate(self.models):
            if self.kind == "llama_cpp" and not model.path:
                raise _FieldProblem(f"llama_cpp model {model.id!r} needs path (a .gguf file, "
                                    'or "embedded")', "models", index)
            if self.kind == "llama_cpp" and model.path != gguf.EMBEDDED:
                try:
                    gguf.check_gguf(Path(model.path or ""))
                except gguf.ModelFileError as exc:
                    raise _FieldProblem(f"{exc}; {exc.fix}", "models", index, "path") from None
            if any(earlier.id == model.id for earlier in self.models[:index]):
                raise _FieldProblem(f"model {model.id!r} is declared twice",
                                    "models", index, "id")
        if self.canary_model is not None and self.model(self.canary_model) is None:
            raise _FieldProblem(f"canary_model {self.canary_model!r} is not one of this "
                                "provider's models", "canary_model")
        return self

    @property
    def key_env(self) -> str | None:
        return self.key[4:] if self.key.startswith("env:") else None


    def model(self, model_id: str) -> ModelSpec | None:
        return next((m for m in self.models if m.id == model_id), None)


class BudgetSpec(_Strict):
    daily_usd: float = Field(default=5.0, ge=0)
    max_usd_per_1k_tokens: float = Field(default=0.02, gt=0)
    max_usd_per_request: float = Field(default=0.10, gt=0)


STEP_TYPES = ("analysis", "refactoring", "code_generation", "prototyping", "review",
              "test_generation", "documentation")
Preference = Literal["cheapest", "fastest", "balanced"]


def _refuse_unknown_step_types(types: Iterable[str]) -> None:
    unknown = [t for t in types if t not in STEP_TYPES]
    if unknown:
        raise ValueError(f"unknown step type {unknown[0]!r}; use one of: "
                         + ", ".join(STEP_TYPES))


class RuleSpec(_Strict):
    """Where one step type goes: models with one of `roles`, ranked by `prefer`.

    Heavy work (complexity above heavy_complexity, or estimated_tokens above heavy_tokens)
    asks for heavy_roles instead, when set.
    """

    roles: tuple[str, ...] = ()
    prefer: Preference = "balanced"
    free_first: bool = False
    heavy_roles: tuple[str, ...] = ()
    heavy_complexity: float = Field(default=0.7, ge=0, le=1)
    heavy_tokens: int = Field(default=4000, ge=1)

    @field_validator("roles", "heavy_roles")
    @classmethod
    def _known_roles(cls, roles: tuple[str, ...]) -> tuple[str, ...]:
        return ModelSpec._known_roles(roles)


# The seed's rules; [routing.rules.TYPE] in the config replaces one type's rule.
DEFAULT_RULES: dict[str, RuleSpec] = {
    "analysis": RuleSpec(roles=("cheap",), prefer="cheapest", free_first=True),
    "refactoring": RuleSpec(roles=("code",)),
    "code_generation": RuleSpec(roles=("fast", "code"), heavy_roles=("quality",)),
    "prototyping": RuleSpec(roles=("fast", "prototyping"), prefer="fastest"),
    "review": RuleSpec(roles=("quality", "reasoning", "qa")),
    "test_generation": RuleSpec(roles=("code", "qa")),
    "documentation": RuleSpec(roles=("cheap", "chat"), prefer="cheapest", free_first=True),
}


class WeightsSpec(_Strict):
    """How much each measure counts when a rule prefers "balanced" (they need not sum to 1)."""

    price: float = Field(default=0.4, ge=0)
    latency: float = Field(default=0.3, ge=0)
    success: float = Field(default=0.2, ge=0)
    energy: float = Field(default=0.1, ge=0)


class RoutingSpec(_Strict):
    mode: Literal["fast", "build", "double-check"] = "build"
    max_concurrency: int = Field(default=64, ge=1, le=100_000)  # calls in flight, all runs
    retries: int = Field(default=2, ge=0, le=10)  # per candidate, for transient failures
    max_retry_wait_s: float = Field(default=20.0, ge=0)  # longer Retry-After: next candidate
    backoff_s: float = Field(default=0.5, ge=0, le=60)  # first retry's wait, doubling after
    weights: WeightsSpec = WeightsSpec()
    rules: dict[str, RuleSpec] = Field(default_factory=dict)

    @field_validator("rules")
    @classmethod
    def _known_types(cls, rules: dict[str, RuleSpec]) -> dict[str, RuleSpec]:
        _refuse_unknown_step_types(rules)
        return rules

    def rule(self, step_type: str) -> RuleSpec:
        return self.rules.get(step_type) or DEFAULT_RULES[step_type]


ResponseModeName = Literal["bouquet", "hybrid", "survival"]


class ModesSpec(_Strict):
    """When the engine leaves the API bouquet for the local models, and back.

    HYBRID when today's spend passes hybrid_budget_pct of the daily budget, when no API
    model for logic or QA (reasoning, logic, qa, quality roles) is up, or when the cheapest
    API model costs more than hybrid_above_usd_per_mtok. SURVIVAL when no API provider is
    up or the spend passes survival_budget_pct. A better mode must hold for recover_s
    before the engine goes back to it.
    """

    pin: Literal["auto", "bouquet", "hybrid", "survival"] = "auto"
    hybrid_budget_pct: float = Field(default=80.0, ge=0, le=100)
    survival_budget_pct: float = Field(default=98.0, ge=0, le=100)
    hybrid_above_usd_per_mtok: float | None = Field(default=None, gt=0)
    recover_s: float = Field(default=30.0, ge=0)
    # The logic and QA steps HYBRID gives the local models; the rest stays on cheap APIs.
    local_types: tuple[str, ...] = ("analysis", "review", "test_generation")

    @field_validator("local_types")
    @classmethod
    def _known_step_types(cls, types: tuple[str, ...]) -> tuple[str, ...]:
        _refuse_unknown_step_types(types)
        return types

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> ModesSpec:
        if self.survival_budget_pct < self.hybrid_budget_pct:
            raise _FieldProblem(
                f"survival_budget_pct ({self.survival_budget_pct:g}) is below "
                f"hybrid_budget_pct ({self.hybrid_budget_pct:g}): SURVIVAL must come after "
                "HYBRID; raise survival_budget_pct or lower hybrid_budget_pct",
                "survival_budget_pct")
        return self


class CanarySpec(_Strict):
    """The micro-request every provider with a key gets, to know it is up before work does."""

    enabled: bool = True
    interval_s: float = Field(default=300.0, ge=1)
    unhealthy_interval_s: float = Field(default=30.0, ge=0.1)  # while orange or red
    # Room for a reasoning model to think before it answers; a plain model uses ~3 tokens.
    max_tokens: int = Field(default=256, ge=1, le=8192)
    daily_usd: float = Field(default=0.05, ge=0)  # canary spend cap, all providers, per day

    @model_validator(mode="after")
    def _faster_when_unhealthy(self) -> CanarySpec:
        if self.unhealthy_interval_s > self.interval_s:
            raise _FieldProblem(
                f"canary.unhealthy_interval_s ({self.unhealthy_interval_s:g}) is above "
                f"canary.interval_s ({self.interval_s:g}): a sick provider is probed more "
                "often, not less; lower unhealthy_interval_s", "unhealthy_interval_s")
        return self


class HealthSpec(_Strict):
    """How probes and real traffic turn into green, orange and red (Gatus-style thresholds)."""

    failure_threshold: int = Field(default=3, ge=1, le=100)  # failures in a row: red
    success_threshold: int = Field(default=2, ge=1, le=100)  # passes in a row: green again
    # Real requests failing in a row with an outage error (unreachable, timeout, 5xx)
    # before the provider gets no more traffic until a probe passes.
    passive_failures: int = Field(default=1, ge=1, le=100)
    slow_s: float = Field(default=5.0, gt=0)  # a canary slower than this: orange
    status_interval_s: float = Field(default=120.0, ge=1)  # status pages polled this often


# Regulator metrics: a reading above a state's threshold calls for at least that state.
# Battery is the other way round: below the threshold, while running on battery.
REGULATOR_METRICS = ("cpu_pct", "memory_pct", "swap_pct", "loop_lag_ms", "error_rate_pct",
                     "temperature_c", "battery_pct")
REGULATOR_LEVELS = ("stressed", "degraded", "critical")
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "stressed": {"cpu_pct": 75, "memory_pct": 85, "swap_pct": 50, "loop_lag_ms": 100,
                 "error_rate_pct": 10, "temperature_c": 80, "battery_pct": 30},
    "degraded": {"cpu_pct": 90, "memory_pct": 92, "swap_pct": 75, "loop_lag_ms": 300,
                 "error_rate_pct": 25, "temperature_c": 90, "battery_pct": 15},
    "critical": {"cpu_pct": 98, "memory_pct": 97, "swap_pct": 90, "loop_lag_ms": 1000,
                 "error_rate_pct": 50, "temperature_c": 97, "battery_pct": 5},
}


class LevelSpec(_Strict):
    """One state's thresholds; an unset one keeps its default."""

    cpu_pct: float | None = Field(default=None, ge=0, le=100)
    memory_pct: float | None = Field(default=None, ge=0, le=100)
    swap_pct: float | None = Field(default=None, ge=0, le=100)
    loop_lag_ms: float | None = Field(default=None, gt=0)
    error_rate_pct: float | None = Field(default=None, ge=0, le=100)
    temperature_c: float | None = Field(default=None, gt=0)
    battery_pct: float | None = Field(default=None, ge=0, le=100)


class RegulatorSpec(_Strict):
    """System consciousness: when the machine counts as STRESSED, DEGRADED or CRITICAL."""

    interval_s: float = Field(default=1.0, ge=0.05, le=60)
    window: int = Field(default=5, ge=1, le=600)  # samples averaged before judging
    hold_s: float = Field(default=15.0, ge=0)  # a better state must hold this long
    # A state is left only once its metric is this far (%) below the threshold.
    deadband_pct: float = Field(default=10.0, ge=0, le=90)
    stressed: LevelSpec = LevelSpec()
    degraded: LevelSpec = LevelSpec()
    critical: LevelSpec = LevelSpec()

    def threshold(self, level: str, metric: str) -> float:
        value = getattr(getattr(self, level), metric)
        return DEFAULT_THRESHOLDS[level][metric] if value is None else value

    @model_validator(mode="after")
    def _levels_in_order(self) -> RegulatorSpec:
        for metric in REGULATOR_METRICS:
            falling = metric == "battery_pct"  # the lower the battery, the worse
            for low, high in itertools.pairwise(REGULATOR_LEVELS):
                a, b = self.threshold(low, metric), self.threshold(high, metric)
                if (a <= b) if falling else (a >= b):
                    word = "above" if falling else "below"
                    # Point at the one the operator wrote (the other is a default).
                    at = high if getattr(getattr(self, low), metric) is None else low
                    raise _FieldProblem(
                        f"regulator.{low}.{metric} ({a:g}) is not {word} "
                        f"regulator.{high}.{metric} ({b:g}): {low.upper()} must come "
                        f"before {high.upper()}; fix one of the two", at, metric)
        return self


class FeedSpec(_Strict):
    """One veille source: a feed or a status page, on the web or in a local file."""

    name: str = Field(min_length=1, max_length=60)
    url: str | None = None
    path: str | None = None  # a local file, read at each poll (offline use)
    kind: Literal["feed", "status"] = "feed"  # RSS/Atom, or a Statuspage summary.json
    provider: str | None = None  # the provider it speaks about, when it is one provider's

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{value!r} is not an http(s) URL with a host")
        return value

    @model_validator(mode="after")
    def _one_location(self) -> FeedSpec:
        if (self.url is None) == (self.path is None):
            raise _FieldProblem(f"veille source {self.name!r} needs exactly one of url and "
                                "path", "url")
        return self

    @property
    def location(self) -> str:
        return self.url or str(Path(self.path or "").expanduser())


class VeilleSpec(_Strict):
    """The market watch: what is read, how often, and when an item becomes a proposal."""

    enabled: bool = True  # the cockpit polls; `aetherflow veille poll` works either way
    interval_s: float = Field(default=900.0, ge=10)
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Real feeds weigh well under 1 MB; a hostile multi-megabyte body only costs parse time.
    max_bytes: int = Field(default=2_000_000, ge=10_000)
    # The built-in feeds, and the status pages of the bouquet's providers (status_page).
    default_sources: bool = True
    # Below this confidence an item is shown but proposes nothing.
    min_confidence: float = Field(default=0.6, ge=0, le=1)
    # An offer must beat what the bouquet costs now by this much to be an opportunity.
    min_saving_pct: float = Field(default=10.0, ge=0, le=100)
    sources: tuple[FeedSpec, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> VeilleSpec:
        for index, source in enumerate(self.sources):
            if any(earlier.name == source.name for earlier in self.sources[:index]):
                raise _FieldProblem(f"veille source {source.name!r} is declared twice",
                                    "sources", index, "name")
        return self


class CockpitSpec(_Strict):
    # binding id -> keys, e.g. inject_key = "ctrl+k"; ids are listed in the cockpit's help.
    keymap: dict[str, str] = Field(default_factory=dict)


class _BouquetFile(_Strict):
    budget: BudgetSpec = BudgetSpec()
    routing: RoutingSpec = RoutingSpec()
    modes: ModesSpec = ModesSpec()
    canary: CanarySpec = CanarySpec()
    health: HealthSpec = HealthSpec()
    regulator: RegulatorSpec = RegulatorSpec()
    veille: VeilleSpec = VeilleSpec()
    providers: dict[str, ProviderSpec] = Field(min_length=1)
    cockpit: CockpitSpec = CockpitSpec()

    @model_validator(mode="before")
    @classmethod
    def _provider_ids_from_keys(cls, data: Any) -> Any:
        providers = data.get("providers") if isinstance(data, dict) else None
        if isinstance(providers, dict):
            for pid, table in providers.items():
                if isinstance(table, dict):
                    table.setdefault("id", pid)
                    if table.get("kind") == "llama_cpp":
                        table.setdefault("key", "none")  # a file on disk takes no key
                        table.setdefault("local", True)
        return data


@dataclass(frozen=True, slots=True)
class Bouquet:
    """What the engine runs on: limits, providers, and where the config came from."""

    budget: BudgetSpec
    providers: dict[str, ProviderSpec]
    source: Path | None  # None: the embedded default
    keymap: dict[str, str] = field(default_factory=dict)
    routing: RoutingSpec = field(default_factory=RoutingSpec)
    modes: ModesSpec = field(default_factory=ModesSpec)
    canary: CanarySpec = field(default_factory=CanarySpec)
    health: HealthSpec = field(default_factory=HealthSpec)
    regulator: RegulatorSpec = field(default_factory=RegulatorSpec)
    veille: VeilleSpec = field(default_factory=VeilleSpec)

    @property
    def source_label(self) -> str:
        return str(self.source) if self.source else "embedded default"


def default_text() -> str:
    return resources.files(__package__).joinpath("default_bouquet.toml").read_text("utf-8")


def parse(text: str, source: Path | None) -> Bouquet:
    """Parse bouquet TOML; any problem raises ConfigError naming file:line."""
    label = str(source) if source else "embedded default"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _decode_error_line(exc)
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(f"malformed TOML: {reason}", path=label, line=line) from None
    except RecursionError:  # tomllib recurses once per level of nested arrays and tables
        raise ConfigError("malformed TOML: arrays or inline tables nested too deeply",
                          path=label, fix="a bouquet nests a few levels, not hundreds"
                          ) from None
    try:
        model = _BouquetFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"]) + getattr(first.get("ctx", {}).get("error"), "at", ())
        message = _describe(first)
        raise ConfigError(message, path=label, line=locate(text, loc)) from None
    return Bouquet(budget=model.budget, providers=dict(model.providers), source=source,
                   keymap=dict(model.cockpit.keymap), routing=model.routing,
                   modes=model.modes, canary=model.canary, health=model.health,
                   regulator=model.regulator, veille=model.veille)


def load(path: Path | None, *, required: bool = False) -> Bouquet:
    """Load the config at path, or the embedded default if path is None or absent.

    required: the operator named the path, so an absent file is an error.
    """
    if path is None:
        return parse(default_text(), None)
    try:
        text = read_bounded(path, MAX_CONFIG_BYTES).decode("utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError("config file not found", path=str(path),
                              fix=f"create it with `aetherflow config init --config {path}`"
                              ) from None
        return parse(default_text(), None)
    except FileRefused as exc:
        raise ConfigError(f"the config is {exc}", path=str(path),
                          fix="point --config or AETHERFLOW_CONFIG at a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror or exc}", path=str(path)
                          ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read config: {exc}", path=str(path)) from None
    return parse(text, path)


def _decode_error_line(exc: tomllib.TOMLDecodeError) -> int | None:
    match = re.search(r"at line (\d+)", str(exc))
    return int(match.group(1)) if match else None


def _describe(error: dict[str, Any]) -> str:
    # repr() keeps a key with a line break in it from breaking the one-line message
    loc = ".".join(str(p) if str(p).isprintable() else repr(str(p)) for p in error["loc"])
    kind = error["type"]
    if kind == "missing":
        return f"{loc} is required"
    if kind == "extra_forbidden":
        return f"unknown setting {loc}"
    msg = error["msg"].removeprefix("Value error, ")
    if kind == "finite_number":
        return (f"{loc}: must be a finite number, not {error['input']!r} (no setting takes "
                "inf or nan: to lift a limit, write a large number)")
    if kind == "literal_error" and error["loc"][-1] == "kind":
        return f"{loc}: unknown provider kind {error['input']!r}; use \"openai\" or \"llama_cpp\""
    return f"{loc}: {msg}"


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")


def locate(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best line for a validation error at loc, e.g. ('providers', 'groq', 'models', 1, 'id').

    tomllib keeps no positions, so we re-scan the text, tracking the current table path
    (array-of-tables entries get their index), and return the line of the deepest part of
    loc we can find: the key itself, else its table header.
    """
    parts = [str(p) for p in loc]
    best: tuple[int, int] | None = None  # (matched depth, line)
    table: list[str] = []
    array_counts: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            names = [n.strip().strip("\"'") for n in header.group(2).split(".")]
            if header.group(1) == "[[":
                key = tuple(names)
                index = array_counts.get(key, -1) + 1
                array_counts[key] = index
                table = [*names, str(index)]
            else:
                table = names
            depth = _common(table, parts)
            if depth == len(table) and (best is None or depth > best[0]):
                best = (depth, number)
            continue
        key = _KEY.match(line)
        if key and not line.lstrip().startswith("#"):
            path = [*table, key.group(1).strip("\"'")]
            depth = _common(path, parts)
            if depth == len(path) and (best is None or depth > best[0]):
                best = (depth, number)
    return best[1] if best else None


def _common(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
