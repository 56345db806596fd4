"""The market: the veille's watch of feeds and status pages, the comparison matrix, prices
the operator approved, and the offers that lead to a new key."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .approvals import Approval
from .context import EngineContext, nothing
from .veille.source_status import SourceStatus
from .views import ProviderView

if TYPE_CHECKING:
    from .veille.item import VeilleItem
    from .veille.matrix import MatrixRow
    from .veille.watch import PollSummary, VeilleWatch

# An approved veille offer, per provider, until its key passes the sandbox and is activated.
ANNOUNCED = "announced:"


class Market:
    def __init__(self, ctx: EngineContext,
                 provider_views: Callable[[], Awaitable[list[ProviderView]]]) -> None:
        self._ctx = ctx
        self._provider_views = provider_views
        self._veille: VeilleWatch | None = None
        # Set by the Engine: the cheapest API price is one of the response mode's signals.
        self.after_change: Callable[[], None] = nothing

    @property
    def veille(self) -> VeilleWatch:
        if self._veille is None:
            from .veille.watch import VeilleWatch

            self._veille = VeilleWatch(self._ctx)
        return self._veille

    async def start_veille(self) -> None:
        """Watch the market every [veille] interval_s until stop() (the cockpit)."""
        if self._ctx.bouquet.veille.enabled:
            await self._provider_views()  # what is routable: the bar an offer must clear
            self.veille.start()

    async def poll(self) -> PollSummary:
        """Read every source now (the cockpit's u), beside the watch's own timer."""
        return await self.veille.poll()

    async def source_statuses(self) -> tuple[SourceStatus, ...]:
        """Each source's last poll (never polled: outcome "never")."""
        return tuple(await self.veille.statuses())

    def warm_prices(self) -> None:
        """Price every model of the bouquet once: the first read imports genai-prices'
        table (~150 ms), which the cockpit does on a thread after its first frame."""
        for spec in self._ctx.bouquet.providers.values():
            for model in spec.models:
                self._ctx.prices.rates(spec, model)

    async def veille_items(self, *, limit: int = 200, label: str | None = None
                           ) -> list[VeilleItem]:
        from .veille.item import VeilleItem

        return [VeilleItem.from_row(row)
                for row in await self._ctx.store.veille_items(limit=limit, label=label)]

    async def comparison_matrix(self) -> list[MatrixRow]:
        from .veille import matrix

        await self._provider_views()  # routable needs the keys' states
        return await asyncio.to_thread(matrix.build, self._ctx)

    async def approve_price(self, provider: str, model: str, input_per_mtok: float,
                            output_per_mtok: float, item_id: int | None) -> None:
        """The comparison matrix takes a price: routing and costs use it from now on."""
        await self._ctx.store.set_price_update(provider, model, input_per_mtok, output_per_mtok,
                                          item_id, self._ctx.clock.now())
        self._ctx.prices.approve(provider, model, input_per_mtok, output_per_mtok)
        self._ctx.router.reprice(self._ctx.prices)
        self.after_change()  # the cheapest API price is one of the mode's signals

    async def on_price_update_decided(self, approval: Approval, approved: bool) -> None:
        if approved:
            p = approval.payload
            await self.approve_price(p["provider"], p["model"], p["input_per_mtok"],
                                     p["output_per_mtok"], p.get("item_id"))

    async def on_opportunity_decided(self, approval: Approval, approved: bool) -> None:
        p = approval.payload
        if approved and p.get("report", {}).get("funnel"):
            # The sandbox test of the key to come checks the bill against this.
            await self._ctx.store.set_setting(
                ANNOUNCED + p["provider"],
                {key: p.get(key) for key in ("model", "input_per_mtok", "output_per_mtok",
                                             "item_id")},
                self._ctx.clock.now())

    async def announced(self, provider: str) -> dict[str, Any] | None:
        """The offer the operator approved for this provider, until its key is active."""
        return await self._ctx.store.setting(ANNOUNCED + provider)

    async def adopt_announcement(self, provider: str) -> None:
        """The funnel's end: the announced price, verified by the sandbox, is the price."""
        announced = await self._ctx.store.setting(ANNOUNCED + provider)
        if announced is None:
            return
        await self._ctx.store.set_setting(ANNOUNCED + provider, None, self._ctx.clock.now())
        if self._ctx.provider_spec(provider).model(announced["model"]) is not None:
            await self.approve_price(provider, announced["model"],
                                     announced["input_per_mtok"],
                                     announced["output_per_mtok"], announced.get("item_id"))

    async def aclose(self) -> None:
        if self._veille is not None:
            await self._veille.aclose()
            self._veille = None
