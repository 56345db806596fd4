"""Cost and energy today: spend against the budget, per provider, and the last hour."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import DataTable, Label, Sparkline, Static

from ..engine import SpendView
from ..engine.events import CallRecorded
from ..formatting import significant, usd
from ..routing import handles
from .pane import Pane

PROVIDER_COLUMNS = (("provider", "provider"), ("usd", "$ today"), ("share", "share"),
                    ("calls", "calls"), ("wh", "Wh"), ("co2", "gCO2e"))


def summary(view: SpendView) -> Text:
    spent, budget = view.spent_usd, view.budget_usd
    share = spent / budget if budget else 0.0
    style = "red" if share >= 1 else "dark_orange" if share >= 0.8 else "green"
    text = Text.assemble(("spend ", "bold"), (f"{usd(spent)}", style),
                         f" of {usd(budget)} today ({share:.0%})")
    if view.unpriced_calls:
        text.append(f"  {view.unpriced_calls} unpriced call(s)", style="bold red")
    measured = view.measured_wh
    estimated = view.wh - measured
    text.append("\n")
    text.append("energy ", style="bold")
    text.append(f"{significant(estimated)} Wh estimated")
    text.append(f" · {significant(measured)} Wh measured" if measured else " · none measured")
    text.append(f" · {significant(view.gco2e)} gCO2e")
    return text


class CostPane(Pane):
    def __init__(self, **kwargs: object) -> None:
        super().__init__("Cost and energy", 3, **kwargs)
        self._shown: dict[str, dict[str, str]] = {}
        self.repaints = 0
        # Read again on the cockpit's next tick: a call was recorded, or the minute moved.
        self.stale = True
        self.minute = -1  # the minute of the clock it was last read at

    @handles(CallRecorded)
    def call_recorded(self, event: CallRecorded) -> None:
        self.stale = True

    def due(self, minute: int) -> bool:
        return self.stale or minute != self.minute

    def compose(self) -> ComposeResult:
        yield Static(id="spend-summary")
        with Horizontal(classes="sparks"):
            yield Label("$ /min, last hour", classes="spark-label")
            yield Sparkline([], id="usd-spark", summary_function=max)
        with Horizontal(classes="sparks"):
            yield Label("Wh /min, last hour", classes="spark-label")
            yield Sparkline([], id="wh-spark", summary_function=max)
        yield DataTable(id="spend-table", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#spend-table", DataTable)
        for key, label in PROVIDER_COLUMNS:
            table.add_column(label, key=key)

    def show(self, view: SpendView) -> None:
        self.query_one("#spend-summary", Static).update(summary(view))
        self.query_one("#usd-spark", Sparkline).data = [m[0] for m in view.minutes]
        self.query_one("#wh-spark", Sparkline).data = [m[1] for m in view.minutes]
        table = self.query_one("#spend-table", DataTable)
        spent = view.spent_usd
        for totals in sorted(view.totals, key=lambda t: -t.usd):
            row = {
                "provider": totals.provider,
                "usd": usd(totals.usd),
                "share": f"{totals.usd / spent:.0%}" if spent else "—",
                "calls": str(totals.calls),
                "wh": significant(totals.wh),
                "co2": significant(totals.gco2e),
            }
            old = self._shown.get(totals.provider)
            if old is None:
                table.add_row(*(Text(row[k]) for k, _ in PROVIDER_COLUMNS),
                              key=totals.provider)
            else:
                for key, value in row.items():
                    if old[key] != value:
                        table.update_cell(totals.provider, key, Text(value), update_width=True)
                        self.repaints += 1
            self._shown[totals.provider] = row
        if not view.totals and not table.row_count:
            self.query_one("#spend-summary", Static).update(
                summary(view).append("\nno calls today yet", style="dim"))
