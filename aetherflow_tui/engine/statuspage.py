"""Providers' public status pages (Atlassian Statuspage `summary.json`), read as untrusted data.

A status page is somebody else's server: its body may be huge, slow, malformed or hostile.
`fetch` bounds time and size and turns every network or parse problem into one
`StatusPageError` (fetch.FetchError, the same class) with a one-line reason. `parse`
keeps only the fields the cockpit uses, with every string flattened to one line, control
sequences made visible and length capped; strings stay literal text, never markup.
"""

from __future__ import annotations

import codecs
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .fetch import FetchError, bounded_get
from .text import excerpt

if TYPE_CHECKING:
    import httpx

MAX_COMPONENTS = 200
MAX_INCIDENTS = 50
MAX_TEXT = 200
# The reason line names at most this many components and incidents, then says how many more.
_SHOWN = 3

# Incident and scheduled-maintenance states in which nothing is wrong any more.
_FINISHED = frozenset({"resolved", "postmortem", "completed"})


def is_finished(status: str | None) -> bool:
    """Whether an incident's or a maintenance's status says nothing is wrong any more."""
    return status is not None and status.strip().casefold() in _FINISHED


class StatusLevel(StrEnum):
    OPERATIONAL = "operational"
    DEGRADED = "degraded"
    OUTAGE = "outage"
    UNKNOWN = "unknown"  # a value this module does not know: neither fine nor known broken


# UNKNOWN ranks above OPERATIONAL (it is not known to be fine) but below a known problem,
# which tells the operator more.
_RANK = {
    StatusLevel.OPERATIONAL: 0,
    StatusLevel.UNKNOWN: 1,
    StatusLevel.DEGRADED: 2,
    StatusLevel.OUTAGE: 3,
}

_INDICATOR = {
    "none": StatusLevel.OPERATIONAL,
    "minor": StatusLevel.DEGRADED,
    "maintenance": StatusLevel.DEGRADED,
    "major": StatusLevel.OUTAGE,
    "critical": StatusLevel.OUTAGE,
}

_COMPONENT = {
    "operational": StatusLevel.OPERATIONAL,
    "degraded_performance": StatusLevel.DEGRADED,
    "partial_outage": StatusLevel.DEGRADED,
    "under_maintenance": StatusLevel.DEGRADED,
    "major_outage": StatusLevel.OUTAGE,
}


# A status page could not be read; `reason` says why in one line. One class with fetch's.
StatusPageError = FetchError


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    name: str
    status: str  # Statuspage's word: operational, degraded_performance, partial_outage, ...


@dataclass(frozen=True, slots=True)
class Incident:
    name: str
    impact: str  # none, minor, major, critical (maintenance for scheduled work)
    status: str  # investigating, identified, monitoring (resolved ones are dropped)
    updated_at: str | None
    # Names of the components the incident affects; empty when the page does not say, in
    # which case it is taken to affect them all.
    components: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StatusReport:
    page: str
    indicator: str  # none, minor, major, critical
    description: str  # the page's own headline, e.g. "All Systems Operational"
    components: tuple[ComponentStatus, ...]
    incidents: tuple[Incident, ...]  # unresolved only

    def verdict(self, components: Sequence[str] = ()) -> tuple[StatusLevel, str]:
        """How bad it is for the named components (all of them when none are named), and why.

        Names match case-insensitively. An unresolved incident counts when it affects a
        named component or does not say what it affects.
        """
        if isinstance(components, str):  # a lone name would otherwise iterate as letters
            components = (components,)
        wanted = _unique(excerpt(name) for name in components)
        keys = {name.casefold() for name in wanted}
        matched = [c for c in self.components if c.name.casefold() in keys]
        found = {c.name.casefold() for c in matched}
        missing = [name for name in wanted if name.casefold() not in found]

        if matched:
            level = _worst(_component_level(c.status) for c in matched)
            headline = _component_headline(matched)
            if missing:
                headline += f"; {_no_component(missing)}"
            incidents = [
                i for i in self.incidents
                if not i.components or any(n.casefold() in keys for n in i.components)
            ]
        else:
            level = _worst([_indicator_level(self.indicator)]
                           + [_component_level(c.status) for c in self.components])
            page_says = self.description or f"indicator {self.indicator}"
            broken = _broken(self.components)
            if broken:
                page_says += f" — {broken}"
            headline = f"{_no_component(missing)}; page says {page_says}" if wanted else page_says
            incidents = list(self.incidents)

        incidents = [i for i in incidents if i.status.casefold() not in _FINISHED]
        level = _worst([level] + [_impact_level(i.impact) for i in incidents])
        reason = f"status page: {headline}"
        if incidents:
            noun = "incident" if len(incidents) == 1 else "incidents"
            reason += f"; {noun}: " + _listed(f"{i.name} ({i.impact})" for i in incidents)
        return level, reason


def parse(body: bytes, *, source: str) -> StatusReport:
    """A Statuspage `summary.json` body as a report; StatusPageError if it is not one."""
    data = _load(body, source)
    if not isinstance(data, dict):
        raise StatusPageError(f"not a JSON object but {_kind(data)}", source)
    status = data.get("status")
    if not isinstance(status, dict):
        raise StatusPageError("no 'status' object", source)
    indicator = _string(status, "indicator", "status", source)
    if indicator is None:
        raise StatusPageError("no 'status.indicator'", source)
    description = _string(status, "description", "status", source) or ""

    page = data.get("page")
    page_name = None
    if page is not None:
        if not isinstance(page, dict):
            raise StatusPageError(f"'page' is {_kind(page)}, not an object", source)
        page_name = _string(page, "name", "page", source)

    components = tuple(
        ComponentStatus(name=excerpt(_required(c, "name", where, source), MAX_TEXT),
                        status=excerpt(_required(c, "status", where, source), MAX_TEXT))
        for where, c in _objects(data, "components", source)[:MAX_COMPONENTS]
    )
    # Resolved incidents are dropped before the cap, so they cannot crowd out live ones.
    incidents = tuple(itertools.islice(
        (_incident(i, where, source) for where, i in _objects(data, "incidents", source)
         if _required(i, "status", where, source).casefold() not in _FINISHED),
        MAX_INCIDENTS,
    ))
    return StatusReport(
        page=excerpt(page_name or source, MAX_TEXT),
        indicator=excerpt(indicator, MAX_TEXT),
        description=excerpt(description, MAX_TEXT),
        components=components,
        incidents=incidents,
    )


async def fetch(client: httpx.AsyncClient, url: str, *, timeout_s: float = 10.0,
                max_bytes: int = 2_000_000) -> StatusReport:
    """GET and parse a `summary.json`; every network or parse problem is a StatusPageError."""
    fetched = await bounded_get(client, url, timeout_s=timeout_s, max_bytes=max_bytes,
                                accept="application/json")
    return parse(fetched.body, source=url)


def _load(body: bytes, source: str) -> Any:
    bom = len(codecs.BOM_UTF8) if body.startswith(codecs.BOM_UTF8) else 0
    try:
        text = body[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StatusPageError(f"not UTF-8 at byte {bom + exc.start}", source) from None
    if not text.strip():
        raise StatusPageError("empty body", source)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = bom + len(text[: exc.pos].encode("utf-8"))
        raise StatusPageError(f"not JSON at byte {at} ({exc.msg})", source) from None
    except RecursionError:
        raise StatusPageError("JSON nested too deeply", source) from None
    except ValueError:  # an integer with thousands of digits
        raise StatusPageError("not JSON (a number too long to read)", source) from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _string(obj: dict[str, Any], key: str, where: str, source: str) -> str | None:
    """obj[key] if it is a string, None if absent or null; StatusPageError otherwise."""
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise StatusPageError(f"'{where}.{key}' is {_kind(value)}, not a string", source)


def _required(obj: dict[str, Any], key: str, where: str, source: str) -> str:
    value = _string(obj, key, where, source)
    if value is None:
        raise StatusPageError(f"no '{where}.{key}'", source)
    return value


def _objects(obj: dict[str, Any], key: str, source: str) -> list[tuple[str, dict[str, Any]]]:
    """The objects in list obj[key], each with its path for error messages; [] if absent."""
    items = obj.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise StatusPageError(f"'{key}' is {_kind(items)}, not a list", source)
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise StatusPageError(f"'{key}[{n}]' is {_kind(item)}, not an object", source)
    return [(f"{key}[{n}]", item) for n, item in enumerate(items)]


def _incident(obj: dict[str, Any], where: str, source: str) -> Incident:
    affected = _objects(obj, "components", source)
    return Incident(
        name=excerpt(_required(obj, "name", where, source), MAX_TEXT),
        impact=excerpt(_required(obj, "impact", where, source), MAX_TEXT),
        status=excerpt(_required(obj, "status", where, source), MAX_TEXT),
        updated_at=_optional_text(_string(obj, "updated_at", where, source)),
        components=tuple(
            excerpt(_required(c, "name", f"{where}.{path}", source), MAX_TEXT)
            for path, c in affected[:MAX_COMPONENTS]
        ),
    )


def _optional_text(value: str | None) -> str | None:
    return None if value is None else excerpt(value, MAX_TEXT)


def _worst(levels: Iterable[StatusLevel]) -> StatusLevel:
    return max(levels, key=_RANK.__getitem__, default=StatusLevel.OPERATIONAL)


def _indicator_level(indicator: str) -> StatusLevel:
    return _INDICATOR.get(indicator.casefold(), StatusLevel.UNKNOWN)


def _component_level(status: str) -> StatusLevel:
    return _COMPONENT.get(status.casefold(), StatusLevel.UNKNOWN)


def _impact_level(impact: str) -> StatusLevel:
    # An incident saying "none" is news, not a problem: it does not lower or raise the level.
    if impact.casefold() == "none":
        return StatusLevel.OPERATIONAL
    return _indicator_level(impact)


def _component_headline(matched: list[ComponentStatus]) -> str:
    worst = max(matched, key=lambda c: _RANK[_component_level(c.status)])
    if _component_level(worst.status) is StatusLevel.OPERATIONAL:
        return _listed(_unique(c.name for c in matched)) + " operational"
    return f"{worst.status.replace('_', ' ').capitalize()} — {_broken(matched)}"


def _broken(components: Iterable[ComponentStatus]) -> str:
    """The components that are not operational, as "API (partial_outage), ..."."""
    return _listed(f"{c.name} ({c.status})" for c in components
                   if _component_level(c.status) is not StatusLevel.OPERATIONAL)


def _no_component(names: list[str]) -> str:
    return "no component named " + " or ".join(f"'{name}'" for name in names)


def _listed(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_SHOWN])
    return shown if len(items) <= _SHOWN else f"{shown} and {len(items) - _SHOWN} more"


def _unique(items: Iterable[str]) -> list[str]:
    """Items in order, without case-insensitive repeats."""
    seen: set[str] = set()
    kept = []
    for item in items:
        if item.casefold() not in seen:
            seen.add(item.casefold())
            kept.append(item)
    return kept
