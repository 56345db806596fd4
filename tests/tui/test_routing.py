"""Engine events reach the pane that owns them through one table, keyed by exact type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from aetherflow_tui.app import CockpitApp
from aetherflow_tui.engine import Engine
from aetherflow_tui.engine.events import (
    AlertRaised,
    ApprovalDecided,
    ApprovalRequested,
    CallRecorded,
    CanaryProbed,
    ConcurrencyChanged,
    DispatchHoldChanged,
    Event,
    KeyCheckUpdated,
    KeyStateChanged,
    ProviderHealthChanged,
    RegulatorDecided,
    ResponseModeChanged,
    RunUpdated,
    StepUpdated,
    SystemSampled,
    VeilleItemClassified,
    VeillePolled,
)
from aetherflow_tui.routing import Routes, handles
from tests.support.cockpit_fixture import fixture_engine
from tests.tui.screen import settle
from tests.tui.test_pilot import SIZE

# Every event type the cockpit shows, and who shows it, in the order they are called.
EXPECTED = {
    CallRecorded: ["CostPane.call_recorded"],
    ProviderHealthChanged: ["ProvidersPane.health_changed"],
    KeyCheckUpdated: ["ProvidersPane.key_checked"],
    KeyStateChanged: ["ProvidersPane.key_changed"],
    RunUpdated: ["StepsPane.run_updated"],
    StepUpdated: ["StepsPane.step_updated"],
    SystemSampled: ["SystemPane.sampled"],
    RegulatorDecided: ["SystemPane.decided"],
    DispatchHoldChanged: ["SystemPane.hold_changed", "CockpitApp.hold_changed"],
    VeilleItemClassified: ["VeillePane.item_classified"],
    VeillePolled: ["VeillePane.poll_ended"],
    ResponseModeChanged: ["CockpitApp.mode_changed"],
    ApprovalRequested: ["CockpitApp.approval_requested"],
    ApprovalDecided: ["CockpitApp.approval_decided"],
    AlertRaised: ["CockpitApp.alert_raised"],
}


@pytest.fixture
def cockpit_engine(tmp_path: Path) -> Engine:
    return fixture_engine(tmp_path)


async def test_the_cockpit_routes_each_event_type_to_its_pane(cockpit_engine):
    app = CockpitApp(cockpit_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = {event_type: [h.__qualname__ for h in handlers]
                 for event_type, handlers in app.routes}
        assert table == EXPECTED
        # Nothing on screen shows these: dropped with one lookup.
        assert ConcurrencyChanged not in app.routes.table
        assert CanaryProbed not in app.routes.table


@dataclass(frozen=True, slots=True)
class Pinged(Event):
    n: int


@dataclass(frozen=True, slots=True)
class LoudPinged(Pinged):
    pass


class Owner:
    def __init__(self, seen: list[str], name: str) -> None:
        self.seen, self.name = seen, name

    @handles(Pinged)
    async def pinged(self, event: Pinged) -> None:
        self.seen.append(f"{self.name} async {event.n}")

    @handles(Pinged, AlertRaised)
    def also(self, event: Event) -> None:
        self.seen.append(f"{self.name} sync {type(event).__name__}")


class Quiet(Owner):
    async def pinged(self, event: Pinged) -> None:  # no @handles: not routed any more
        self.seen.append("never")


async def test_dispatch_is_by_exact_type_in_the_owners_order():
    seen: list[str] = []
    routes = Routes(Owner(seen, "a"), Quiet(seen, "b"), Owner(seen, "c"))
    await routes.dispatch(Pinged(0.0, 1))
    assert seen == ["a async 1", "a sync Pinged", "b sync Pinged", "c async 1",
                    "c sync Pinged"]
    seen.clear()
    await routes.dispatch(LoudPinged(0.0, 2))  # a subclass is a type of its own
    await routes.dispatch(ConcurrencyChanged(0.0, 1, "x"))
    assert seen == []
