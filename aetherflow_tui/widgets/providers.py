"""Provider health: one keyed row per provider, cells repainted only when they change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from ..engine import ProviderView
from ..engine.events import KeyCheckUpdated, KeyStateChanged, ProviderHealthChanged
from ..engine.health import Light, ProbeResult
from ..engine.keycheck import KeyCheckState
from ..engine.keys import KeyState
from ..formatting import latency, per_mtok
from ..palette import LIGHT as LIGHT_STYLE
from ..routing import handles
from .pane import Pane
from .safe import literal

COLUMNS = (("light", ""), ("provider", "provider"), ("key", "key"), ("score", "score"),
           ("canary", "canary"), ("p50", "p50"), ("ok", "ok %"), ("in", "in $/M"),
           ("out", "out $/M"), ("circuit", "circuit"))
# When the table is too narrow for every column (80 columns, or a wide screen's share of
# 120), the prices go first: they are the bouquet's, not the provider's health.
NARROW_COLUMNS = tuple(c for c in COLUMNS if c[0] not in ("in", "out"))


def key_label(view: ProviderView) -> Text:
    """The key as the operator cares about it: is it there, and may it carry traffic."""
    state = view.key.state
    if state is KeyState.NOT_NEEDED:
        return Text("keyless", style="green")
    if state is KeyState.MISSING:
        return Text("no key", style="grey50")
    if state in (KeyState.UNAVAILABLE, KeyState.UNREADABLE):
        return Text(state.value, style="red")
    if view.key.source != "keyring":
        return Text("env", style="green")
    check = view.check.state
    if check is KeyCheckState.AWAITING_APPROVAL:
        return Text("to approve", style="yellow")
    style = {KeyCheckState.ACTIVE: "green", KeyCheckState.FAILED: "red",
             KeyCheckState.REJECTED: "red", KeyCheckState.AWAITING_APPROVAL: "yellow",
             KeyCheckState.TESTING: "yellow"}.get(check, "grey50")
    return Text(check.value, style=style)


def light(view: ProviderView) -> tuple[Light, str]:
    """The status light: health from traffic, but grey when there is no usable key."""
    if not view.usable:
        return Light.GREY, view.key.detail or "no usable key"
    return view.health.light, view.health.reason


def cells(view: ProviderView) -> dict[str, Text]:
    lit, _ = light(view)
    health = view.health
    rates = [m.rates for m in view.models if m.rates]
    cheapest = min(rates, key=lambda r: r.input + r.output) if rates else None
    return {
        "light": Text("●", style=LIGHT_STYLE[lit]),
        "provider": Text(view.id, style="bold"),
        "key": key_label(view),
        "score": Text(f"{health.score:.2f}" if health.score is not None else "—",
                      justify="right"),
        "canary": canary_cell(health.canary),
        "p50": Text(latency(health.latency_p50_s), justify="right"),
        "ok": Text(f"{health.success_pct:.0f}" if health.success_pct is not None else "—",
                   justify="right"),
        "in": Text(per_mtok(cheapest.input) if cheapest else "unpriced", justify="right"),
        "out": Text(per_mtok(cheapest.output) if cheapest else "unpriced", justify="right"),
        "circuit": Text(health.circuit.value,
                        style="red" if health.circuit.value == "open" else ""),
    }


def canary_cell(probe: ProbeResult | None) -> Text:
    if probe is None:
        return Text("—", justify="right")
    took = f" {latency(probe.latency_s)}" if probe.latency_s is not None else ""
    if probe.ok:
        return Text(f"ok{took}", style="green", justify="right")
    return Text(f"FAIL{took}", style="red", justify="right")


def same_look(a: Text, b: Text) -> bool:
    # rich's Text.__eq__ ignores the base style: a light turning from green to red is equal.
    return (a.plain, a.style, a.spans, a.justify) == (b.plain, b.style, b.spans, b.justify)


class ProviderTable(DataTable[Text]):
    """Keyed rows; `show()` repaints only the cells whose text changed. The columns fit
    the table's width: the price columns are left out when every column would not fit."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self._views: dict[str, ProviderView] = {}
        self._shown: dict[str, dict[str, Text]] = {}
        self.filter_text = ""
        self.repaints = 0  # cells updated since start: the benchmark reads it
        self.shown_columns: tuple[tuple[str, str], ...] = COLUMNS

    def on_mount(self) -> None:
        for key, label in self.shown_columns:
            self.add_column(label, key=key)

    @property
    def selected(self) -> ProviderView | None:
        if not self.row_count:
            return None
        row_key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return self._views.get(str(row_key.value))

    def view(self, provider_id: str) -> ProviderView:
        """The view a row was last shown from."""
        return self._views[provider_id]

    def show(self, view: ProviderView) -> None:
        self._views[view.id] = view
        if not self._matches(view):
            if view.id in self._shown:
                self.remove_row(view.id)
                del self._shown[view.id]
            return
        new = cells(view)
        old = self._shown.get(view.id)
        if old is None:
            self.add_row(*(new[key] for key, _ in self.shown_columns), key=view.id)
            self._shown[view.id] = new
            self.fit()
            return
        changed = False
        for key, _ in self.shown_columns:
            if not same_look(old[key], new[key]):
                self.update_cell(view.id, key, new[key], update_width=True)
                self.repaints += 1
                changed = True
        self._shown[view.id] = new
        if changed and self.shown_columns is COLUMNS:
            self.fit()  # a wider cell may no longer leave room for every column

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip().lower()
        self._rebuild(self.shown_columns)

    def on_resize(self) -> None:
        self.fit()

    def fit(self) -> None:
        """Every column if they all fit (a vertical scrollbar's width kept free), else
        the narrow set; rebuilt only when that choice changes."""
        room = self.size.width - self.styles.scrollbar_size_vertical
        if room <= 0:
            return  # not laid out yet: the first resize fits it
        wanted = COLUMNS if self._width_of(COLUMNS) <= room else NARROW_COLUMNS
        if wanted != self.shown_columns:
            self._rebuild(wanted)

    def _width_of(self, columns: tuple[tuple[str, str], ...]) -> int:
        padding = 2 * self.cell_padding
        return sum(max([len(label), *(row[key].cell_len for row in self._shown.values())])
                   + padding for key, label in columns)

    def _rebuild(self, columns: tuple[tuple[str, str], ...]) -> None:
        selected = self.selected
        self.clear(columns=columns != self.shown_columns)
        if columns != self.shown_columns:
            self.shown_columns = columns
            for key, label in columns:
                self.add_column(label, key=key)
        self._shown.clear()
        for view in self._views.values():
            if self._matches(view):
                new = cells(view)
                self.add_row(*(new[key] for key, _ in columns), key=view.id)
                self._shown[view.id] = new
        if selected is not None and selected.id in self._shown:
            self.move_cursor(row=self.get_row_index(selected.id))

    def _matches(self, view: ProviderView) -> bool:
        if not self.filter_text:
            return True
        haystack = " ".join([view.id, *(m.id for m in view.models)]).lower()
        return self.filter_text in haystack


def detail(view: ProviderView) -> Text:
    """Why the selected row looks the way it does: the light's reason, the last canary,
    the status page, the last error."""
    lit, reason = light(view)
    health = view.health
    text = Text.assemble((f"{view.id}: ", "bold"))
    text.append_text(literal(reason, limit=160, style=LIGHT_STYLE[lit]))
    canary = health.canary
    # Each reason once: the light's may already be the canary's or the status page's.
    if canary is not None and canary.reason not in reason:
        text.append(" · canary: ", style="dim")
        text.append_text(literal(canary.reason, limit=120,
                                 style="" if canary.ok else "red"))
    if health.status is not None and health.status.reason not in reason:
        text.append(" · ", style="dim")  # the reason starts "status page: "
        text.append_text(literal(health.status.reason, limit=160))
    if health.last_error and (canary is None or health.last_error != canary.reason):
        text.append(" · last error: ", style="dim")
        text.append_text(literal(health.last_error, limit=160))
    text.truncate(400)
    return text


class ProvidersPane(Pane):
    """providers: the bouquet's ids; view: one provider's view as the engine has it now."""

    def __init__(self, providers: Collection[str],
                 view: Callable[[str], Awaitable[ProviderView]], **kwargs: object) -> None:
        super().__init__("Providers", 1, **kwargs)
        self._providers = providers
        self._view = view

    def compose(self) -> ComposeResult:
        yield ProviderTable(id="provider-table")
        yield Static(id="provider-detail")

    def on_data_table_row_highlighted(self) -> None:
        self.refresh_detail()

    def refresh_detail(self) -> None:
        view = self.table.selected
        self.query_one("#provider-detail", Static).update(detail(view) if view else "")

    def show_all(self, views: list[ProviderView]) -> None:
        with self.app.batch_update():
            for view in views:
                self.table.show(view)
            self.refresh_detail()

    # -- events in: each repaints its provider's row, from the engine's view of it now -------

    @handles(ProviderHealthChanged)
    async def health_changed(self, event: ProviderHealthChanged) -> None:
        await self.show_provider(event.health.provider)

    @handles(KeyCheckUpdated)
    async def key_checked(self, event: KeyCheckUpdated) -> None:
        await self.show_provider(event.check.provider)

    @handles(KeyStateChanged)
    async def key_changed(self, event: KeyStateChanged) -> None:
        await self.show_provider(event.provider)

    async def show_provider(self, provider_id: str) -> None:
        if provider_id in self._providers:
            self.table.show(await self._view(provider_id))
            selected = self.table.selected
            if selected is not None and selected.id == provider_id:
                self.refresh_detail()

    @property
    def table(self) -> ProviderTable:
        return self.query_one(ProviderTable)
