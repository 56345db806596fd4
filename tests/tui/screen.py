"""What the operator sees: the screen as text, read back from Textual's own SVG export."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable

from textual.app import App
from textual.pilot import Pilot
from textual.widgets import DataTable

# Textual's SVG places each run of text at x = column * 12.2 (0.61 em of a 20 px font),
# clipped to its line; spaces between runs are not written out.
CHAR_WIDTH = 12.2
_RUN = re.compile(r'<text [^>]*?x="([\d.]+)"[^>]*?clip-path="url\(#[\w-]+?-line-(\d+)\)"[^>]*>'
                  r"([^<]*)</text>")


def svg_text(svg: str) -> str:
    """The terminal's lines, as a person reads them off the screenshot."""
    lines: dict[int, dict[int, str]] = {}
    for x, line, run in _RUN.findall(svg):
        row = lines.setdefault(int(line), {})
        column = round(float(x) / CHAR_WIDTH)
        # Textual writes spaces as no-break spaces (&#160;); read them back as spaces.
        for offset, char in enumerate(html.unescape(run).replace("\xa0", " ")):
            row[column + offset] = char
    out = []
    for number in range(max(lines, default=-1) + 1):
        row = lines.get(number, {})
        out.append("".join(row.get(c, " ") for c in range(max(row, default=-1) + 1)).rstrip())
    return "\n".join(out)


def screen_text(app: App) -> str:
    return svg_text(app.export_screenshot())


async def settle(pilot: Pilot) -> None:
    """Every worker done, then every message that produced handled, then every table's
    column widths measured."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await _tables_measured(pilot)


async def _tables_measured(pilot: Pilot, timeout: float = 5.0) -> None:
    # A DataTable measures new rows and changed cells on its next Idle event, not when they
    # are added: a screenshot taken before it shows every column squeezed to its header's
    # width. On a busy machine that Idle can come after pause() returns (Textual 8's
    # DataTable keeps the pending work in these two attributes; there is no public flag).
    deadline = time.monotonic() + timeout
    while any(table._require_update_dimensions or table._updated_cells
              for screen in pilot.app.screen_stack for table in screen.query(DataTable)):
        if time.monotonic() > deadline:
            raise AssertionError("a table did not measure its columns")
        await pilot.pause(0.01)
    await pilot.pause()


async def until(pilot: Pilot, condition: Callable[[], object], timeout: float = 10.0,
                what: str = "") -> None:
    """Wait on a condition that engine events make true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.02)
