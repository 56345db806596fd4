"""benchmarks/cockpit.py ends by itself: its waits are bounded, and it counts what the
engine publishes on its own (an event it did not count made it wait forever)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from aetherflow_tui.engine import Engine, config
from aetherflow_tui.engine.events import ProviderHealthChanged
from aetherflow_tui.engine.modes import ResponseMode
from benchmarks.cockpit import Publisher, Stalled, deadline, tally, until


async def test_the_publisher_counts_the_engines_own_events_beside_its_own(tmp_path: Path):
    engine = Engine(config.load(None), tmp_path / "home")
    seen = engine.bus.subscribe()  # what the app's subscription would get
    bus = Publisher(engine)
    try:
        bus.publish(ProviderHealthChanged(0.0, engine.health.health("groq")))
        engine.pin_mode(ResponseMode.SURVIVAL)  # the engine's own: the app sees it too
        bus.publish(ProviderHealthChanged(0.0, engine.health.health("groq")))
        assert await until(lambda: bus.others == ["ResponseModeChanged"], 5.0), bus.others
        got = [type(seen.get_nowait()).__name__ for _ in range(3)]
        assert got == ["ProviderHealthChanged", "ResponseModeChanged", "ProviderHealthChanged"]
        assert bus.published == 2  # so the app must handle 2 + 1
        assert tally(bus.others) == "ResponseModeChanged x1"
    finally:
        bus.close()


def test_a_wait_on_an_idle_event_loop_ends_with_what_never_happened():
    started = time.monotonic()
    with pytest.raises(Stalled, match=r"^the never-set event did not finish within 1 s$"), \
            deadline("the never-set event", 1.0):
        asyncio.run(asyncio.Event().wait())
    assert time.monotonic() - started < 10
