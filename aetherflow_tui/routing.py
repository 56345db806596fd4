"""Engine events to the panes that own them: one table, built once, dispatched by type.

A pane (or the app, for what is global: notifications, approvals, the header) declares
what it shows with `@handles(EventType, ...)` on a method that takes that event. When the
cockpit mounts, `Routes` reads those declarations once into `{event type: handlers}`; an
event then costs one dict lookup on its exact type, with no isinstance chain, and an event
no one declared (ConcurrencyChanged, CanaryProbed) is dropped at the same cost. Handlers
of one type run in the order their owners were given; an async one is awaited before the
next, so events are shown in the order the engine published them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from functools import cache
from typing import Any, TypeVar

from .engine.events import Event

Handler = Callable[[Any], Awaitable[None] | None]
F = TypeVar("F", bound=Callable[..., Any])
_ROUTED = "_routed_events"


def handles(*event_types: type[Event]) -> Callable[[F], F]:
    """Mark a method as the handler of these event types (each an exact type)."""
    def mark(method: F) -> F:
        setattr(method, _ROUTED, (*getattr(method, _ROUTED, ()), *event_types))
        return method

    return mark


@cache
def declared(cls: type) -> tuple[tuple[type[Event], str], ...]:
    """(event type, method name) of every handler a class declares, its bases' included;
    an override without @handles hides its base's declaration, as for any method."""
    seen: set[str] = set()
    found = []
    for klass in cls.__mro__:
        for name, member in vars(klass).items():
            if name in seen:
                continue
            seen.add(name)
            found += [(event_type, name) for event_type in getattr(member, _ROUTED, ())]
    return tuple(found)


class Routes:
    def __init__(self, *owners: object) -> None:
        table: dict[type[Event], list[Handler]] = {}
        for owner in owners:
            for event_type, name in declared(type(owner)):
                table.setdefault(event_type, []).append(getattr(owner, name))
        self.table: dict[type[Event], tuple[Handler, ...]] = {
            event_type: tuple(handlers) for event_type, handlers in table.items()}

    async def dispatch(self, event: Event) -> None:
        for handler in self.table.get(type(event), ()):
            pending = handler(event)
            if pending is not None:
                await pending

    def __iter__(self) -> Iterator[tuple[type[Event], tuple[Handler, ...]]]:
        return iter(self.table.items())
