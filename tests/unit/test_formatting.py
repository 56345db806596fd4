"""The age the cockpit and the CLI both show: one formatter, one set of thresholds."""

from __future__ import annotations

import pytest

from aetherflow_tui.formatting import age, ago


@pytest.mark.parametrize(("seconds", "shown"), [
    (-3, "0 s"), (14, "14 s"), (89, "89 s"), (90, "2 min"), (4000, "67 min"),
    (5399, "90 min"), (5400, "1.5 h"), (9000, "2.5 h"), (2 * 86400 - 1, "48.0 h"),
    (2 * 86400, "2 d"), (7 * 86400, "7 d"),
])
def test_age(seconds, shown):
    assert age(seconds) == shown
    assert ago(seconds) == f"{shown} ago"
