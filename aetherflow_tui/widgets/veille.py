"""Pane 4, Veille: the market watch's items, newest first, and one item in full.

Titles, summaries, links and source names come from feeds: untrusted. The engine has
neutralised them (escapes visible, length capped); here they are shown as rich Text,
never parsed as markup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from ..engine.events import VeilleItemClassified, VeillePolled
from ..formatting import age, ago, per_mtok, percent
from ..palette import VEILLE_BADGE as BADGE
from ..routing import handles
from .pane import Pane
from .safe import literal

if TYPE_CHECKING:  # the veille's modules load after the first frame, with the watch
    from ..engine.veille.item import VeilleItem
    from ..engine.veille.source_status import SourceStatus

COLUMNS = (("age", "age"), ("label", "label"), ("conf", "conf"), ("source", "source"),
           ("title", "title"))
SHOWN = 300  # rows kept on screen; `aetherflow veille items` reaches further back
IDLE = "no items yet · u polls the feeds now"


def badge(label: str) -> Text:
    word, style = BADGE.get(label, (label, ""))
    return Text(f" {word} ", style=style)


def quote_lines(item: VeilleItem) -> Text:
    text = Text()
    for q in item.prices:
        text.append("  ")
        text.append_text(literal(f"{q.provider or '?'}/{q.model or '?'}", 60, style="bold"))
        # A price the item did not give is not "unpriced": it is simply not said.
        text.append(f"  in {per_mtok(q.input_per_mtok, '—')}  "
                    f"out {per_mtok(q.output_per_mtok, '—')} $/Mtok\n")
    return text or Text("  no price found in the text\n", style="dim")


class VeilleTable(DataTable[Text]):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", **kwargs)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)


class VeillePane(Pane):
    BINDINGS = [
        Binding("enter", "open_item", "Open", id="veille.open",
                tooltip="The selected item in full, with the prices read from it"),
        Binding("f", "cycle_filter", "Filter label", id="veille.filter",
                tooltip="Show one label: all → price_change → outage → new_offer → "
                        "geopolitical_risk → noise → all"),
        Binding("u", "poll", "Poll now", id="veille.poll",
                tooltip="Read every feed and status page now"),
    ]

    def __init__(self, now: Callable[[], float], **kwargs: object) -> None:
        """now: the engine's clock, for the items' ages."""
        super().__init__("Veille", 4, **kwargs)
        self.items: dict[int, VeilleItem] = {}
        self.label: str | None = None  # the filter; None shows every label
        self.sources: tuple[SourceStatus, ...] = ()
        self._now = 0.0
        self._clock = now
        self._new: list[VeilleItem] = []  # classified, shown together when their poll ends

    def compose(self) -> ComposeResult:
        yield Static(Text(IDLE, style="dim"), id="veille-status")
        yield VeilleTable(id="veille-table")

    @property
    def table(self) -> VeilleTable:
        return self.query_one(VeilleTable)

    def add(self, items: list[VeilleItem], now: float) -> None:
        for item in items:
            self.items[item.id] = item
        if len(self.items) > SHOWN:
            keep = sorted(self.items.values(), key=lambda i: (i.when, i.id))[-SHOWN:]
            self.items = {i.id: i for i in keep}
        self._now = now
        self._render_rows()

    def polled(self, sources: tuple[SourceStatus, ...], now: float) -> None:
        self.sources = sources
        self._now = now
        self._render_status()

    @handles(VeilleItemClassified)
    def item_classified(self, event: VeilleItemClassified) -> None:
        self._new.append(event.item)

    @handles(VeillePolled)
    def poll_ended(self, event: VeillePolled) -> None:
        with self.app.batch_update():
            self.add(self._new, self._clock())
            self.polled(event.sources, self._clock())
        self._new = []

    def tick(self, now: float) -> None:
        """Ages move on: repaint them once a minute."""
        if int(now // 60) != int(self._now // 60):
            self._now = now
            self._render_rows()

    def _render_rows(self) -> None:
        table = self.table
        selected = self.selected
        table.clear()
        shown = sorted((i for i in self.items.values()
                        if self.label is None or i.label == self.label),
                       key=lambda i: (i.when, i.id), reverse=True)
        for item in shown:
            table.add_row(Text(age(self._now - item.when), justify="right"), badge(item.label),
                          Text(percent(item.confidence * 100), justify="right"),
                          literal(item.source, 18), literal(item.title, 200),
                          key=str(item.id))
        if selected is not None and str(selected.id) in table.rows:
            table.move_cursor(row=table.get_row_index(str(selected.id)))
        self._render_status()

    def _render_status(self) -> None:
        shown = sum(1 for i in self.items.values()
                    if self.label is None or i.label == self.label)
        # Most telling first: narrow, this line is all the pane shows.
        text = Text(f"{shown} item(s)" if self.items else IDLE, style="" if self.items
                    else "dim")
        failing = [s for s in self.sources if s.outcome == "error"]
        if failing:
            text.append(f" · {len(failing)} failing: ", style="bold red")
            text.append_text(literal(", ".join(s.name for s in failing), 60, style="red"))
        if self.sources:
            text.append(f" · {len(self.sources)} source(s)", style="dim")
        text.append(f" · filter: {self.label or 'all'} (f)", style="dim")
        self.query_one("#veille-status", Static).update(text)
        self.border_subtitle = self.label or ""

    @property
    def selected(self) -> VeilleItem | None:
        table = self.table
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.items.get(int(key)) if key is not None else None

    def action_cycle_filter(self) -> None:
        from ..engine.veille.classifier import LABELS

        order = [None, *LABELS]
        self.label = order[(order.index(self.label) + 1) % len(order)]
        self._render_rows()

    def action_open_item(self) -> None:
        item = self.selected
        if item is None:
            self.app.notify("no item selected", severity="warning")
            return
        self.app.push_screen(VeilleItemScreen(item, self._now))

    def on_data_table_row_selected(self) -> None:
        self.action_open_item()

    async def action_poll(self) -> None:
        await self.app.run_action("poll_veille")


class VeilleItemScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss_screen", "Back", id="veille_item.back",
                tooltip="Back to the cockpit"),
    ]

    def __init__(self, item: VeilleItem, now: float) -> None:
        super().__init__()
        self.item = item
        self.now = now

    def compose(self) -> ComposeResult:
        item = self.item
        with Vertical(id="veille-dialog", classes="dialog"):
            yield Label(literal(item.title, 200), classes="dialog-title")
            with VerticalScroll(id="veille-body"):
                yield Static(self._facts(), id="veille-facts")
                yield Static(literal(item.summary, 1000), id="veille-summary")
            yield Static(Text("esc back", style="dim"), classes="dialog-keys")

    def _facts(self) -> Text:
        item = self.item
        text = Text()
        text.append_text(badge(item.label))
        text.append(f" {percent(item.confidence * 100)} confident · ")
        text.append_text(literal(item.source, 40))
        text.append(f" · {ago(self.now - item.when)}\n")
        if item.link:
            text.append("link  ", style="bold")
            text.append_text(literal(item.link, 200))
            text.append("\n")
        text.append("prices read from the text ($ per million tokens):\n", style="bold")
        text.append_text(quote_lines(item))
        return text

    def action_dismiss_screen(self) -> None:
        self.dismiss(None)
