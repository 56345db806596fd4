"""The composition root: builds the engine's parts, wires them, starts and stops them, and
exposes them. It holds no domain logic: each concern lives in its own module.

    context      what every part shares: bouquet, clock, bus, store, prices, health, caps
    calls        the hot path: reserve, call, settle, price, record; today's totals
    credentials  keys: vault state, sandbox test, activation
    controls     emergency stop, throttle, circuit resets, cross-process control rows
    local_stack  local models: throttle, pause, housekeeping
    regulation   response mode, canaries, lights and alerts, the regulator's decisions
    runs         plan runs: start, resume, list, the ones in flight
    market       the veille, the comparison matrix, approved prices, offers
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from .budget import SharedBudget, this_process
from .calls import Calls
from .clock import Clock, SystemClock
from .config import Bouquet
from .context import EngineContext
from .controls import Controls
from .credentials import Credentials
from .keys import KeyVault
from .local_stack import LocalStack
from .market import Market
from .regulation import Regulation
from .runs import Runs
from .store import Store

if TYPE_CHECKING:
    from .approvals import Approval, ApprovalQueue
    from .keys import KeyStatus
    from .modes import ResponseMode
    from .paths import Paths
    from .router import Router
    from .veille.watch import VeilleWatch
    from .vigilance import Vigilance

__all__ = ["Engine", "load_bouquet"]

# How often the budget re-reads today's spend, which other processes may have added to.
BUDGET_SYNC_S = 5.0


def load_bouquet(paths: Paths) -> Bouquet:
    from . import config

    return config.load(paths.config, required=paths.config_explicit)


class Engine:
    def __init__(self, bouquet: Bouquet, home: Path, *, vault: KeyVault | None = None,
                 clock: Clock | None = None) -> None:
        ctx = self.ctx = EngineContext(bouquet, home, vault or KeyVault(),
                                       clock or SystemClock())
        self.local = LocalStack(ctx)
        self.calls = Calls(ctx, lambda: self.credentials.provider_views())
        self.credentials = Credentials(ctx, self.calls)
        self.market = Market(ctx, self.credentials.provider_views)
        self.regulation = Regulation(ctx, self.calls, self.local,
                                     lambda: bool(self.credentials.statuses))
        self.plan_runs = Runs(ctx, self.calls, self.credentials.provider_views)
        self.controls = Controls(ctx, self.plan_runs, self.local, self.regulation, self.calls)
        # The wiring: what one part does when another's state moves.
        self.calls.on_health = self.regulation.health_changed
        self.calls.on_circuit_open = self.regulation.probe_soon
        self.calls.after_calls = self.regulation.update_mode
        self.credentials.after_change = self.regulation.update_mode
        self.credentials.announced = self.market.announced
        self.credentials.activated = self.market.adopt_announcement
        self.market.after_change = self.regulation.update_mode
        self.regulation.apply_control = self.controls.apply_control
        self.regulation.provider_views = self.credentials.provider_views
        self._budget_sync: asyncio.Task[None] | None = None
        # The shared parts, for the CLI, scripts and tests (they never change).
        self.bouquet, self.home, self.vault, self.clock = (ctx.bouquet, ctx.home, ctx.vault,
                                                           ctx.clock)
        self.bus, self.prices, self.energy, self.health = (ctx.bus, ctx.prices, ctx.energy,
                                                           ctx.health)
        self.guard, self.modes, self.concurrency = ctx.guard, ctx.modes, ctx.concurrency
        self.prober = self.regulation.prober
        # The operator's verbs, as the cockpit, the CLI and scripts call them.
        self.ask, self.call, self.settled = self.calls.ask, self.calls.call, self.calls.settled
        self.choose, self.sync_budget = self.calls.choose, self.calls.sync_budget
        self.totals_today, self.spend_view = self.calls.totals_today, self.calls.spend_view
        self.provider_views = self.credentials.provider_views
        self.provider_view = self.credentials.provider_view
        self.key_check = self.credentials.key_check
        self.set_key, self.remove_key = self.credentials.set_key, self.credentials.remove_key
        self.inject_key, self.test_key = self.credentials.inject_key, self.credentials.test_key
        self.local_providers, self.throttle_local = self.local.providers, self.local.throttle
        self.pin_mode = self.regulation.pin_mode
        self.start_vigilance, self.probe = self.regulation.start_vigilance, self.regulation.probe
        self.read_status_pages = self.regulation.read_status_pages
        self.emergency_stop = self.controls.emergency_stop
        self.resume_dispatch = self.controls.resume_dispatch
        self.wait_runs_stopped = self.controls.wait_runs_stopped
        self.emergency_throttle = self.controls.emergency_throttle
        self.reset_circuits = self.controls.reset_circuits
        self.force_optimisation = self.controls.force_optimisation
        self.send_control = self.controls.send_control
        self.start_veille, self.veille_items = self.market.start_veille, self.market.veille_items
        self.comparison_matrix = self.market.comparison_matrix
        self.approve_price = self.market.approve_price
        self.load_plan, self.start_run = self.plan_runs.load_plan, self.plan_runs.start_run
        self.active_runs, self.runs_in_flight = self.plan_runs.active, self.plan_runs.in_flight
        self.runs, self.last_run = self.plan_runs.recent, self.plan_runs.last_run
        self.provider_spec, self.model_spec = ctx.provider_spec, ctx.model_spec
        self.gate, self.set_concurrency = ctx.gate, ctx.set_concurrency
        self.check_dispatch = ctx.dispatch.check
        # What the cockpit reads: view objects, never the live parts behind them.
        self.control_view, self.system_view = self.controls.view, self.regulation.system_view
        self.veille_sources, self.poll_veille = self.market.source_statuses, self.market.poll
        self.warm_prices = self.market.warm_prices

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Engine:
        ctx = self.ctx
        store = ctx.store_or_none = await Store.open(ctx.home / "aetherflow.db")
        store.prepare = self.calls.estimate_energy
        store.on_committed = self.calls.publish_calls
        ctx.shared_or_none = SharedBudget(store, this_process(), ctx.bouquet.budget.daily_usd)
        from .approvals import ACTIVATE_KEY, OPPORTUNITY, PRICE_UPDATE, ApprovalQueue

        approvals = ctx.approvals_or_none = ApprovalQueue(store, ctx.bus, ctx.clock)
        approvals.handle(ACTIVATE_KEY, self.credentials.on_activation_decided)
        approvals.handle(PRICE_UPDATE, self.market.on_price_update_decided)
        approvals.handle(OPPORTUNITY, self.market.on_opportunity_decided)
        for row in await store.price_updates():
            ctx.prices.approve(row["provider"], row["model"], row["input_per_mtok"],
                               row["output_per_mtok"])
        await self.credentials.load()
        await self.regulation.load()
        await self.controls.load()
        await self.calls.sync_budget()
        self._budget_sync = asyncio.create_task(self._keep_budget_synced(),
                                                name="budget-sync")
        return self

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.market.aclose()
        await self.regulation.aclose()
        await self.plan_runs.cancel_all()
        if self._budget_sync is not None:
            self._budget_sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._budget_sync
            self._budget_sync = None
        await self.ctx.pool.aclose()
        store = self.ctx.store_or_none
        if store is not None:
            # Left behind, what this process holds would count as spend once it is gone.
            with contextlib.suppress(Exception):
                await store.flush()
            with contextlib.suppress(Exception):  # even when the flush failed
                await self.ctx.shared.drop()
            await store.close()
            self.ctx.store_or_none = None

    async def __aenter__(self) -> Engine:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _keep_budget_synced(self) -> None:
        """Every few seconds: today's spend, the response mode (a better mode is only taken
        after it has held a while), and idle local models."""
        while True:
            await asyncio.sleep(BUDGET_SYNC_S)
            with contextlib.suppress(Exception):  # a busy database: try again next time
                await self.calls.sync_budget()
            self.regulation.update_mode()
            await self.local.housekeeping()

    # -- what the parts share, and their state, read-only --------------------------------

    @property
    def started(self) -> bool:
        return self.ctx.store_or_none is not None

    @property
    def store(self) -> Store:
        return self.ctx.store

    @property
    def approvals(self) -> ApprovalQueue:
        return self.ctx.approvals

    @property
    def shared(self) -> SharedBudget:
        return self.ctx.shared

    @property
    def router(self) -> Router:
        return self.ctx.router

    @property
    def veille(self) -> VeilleWatch:
        return self.market.veille

    @property
    def vigilance(self) -> Vigilance | None:
        return self.regulation.vigilance

    @property
    def metrics_port(self) -> int | None:
        """Where Prometheus scrapes, when this process serves it."""
        return self.regulation.metrics_port

    @property
    def held(self) -> str | None:
        """Why dispatch is held (an emergency stop), or None."""
        return self.ctx.dispatch.held

    @property
    def manual_cap(self) -> int | None:
        """The operator's emergency throttle, or None."""
        return self.ctx.dispatch.manual_cap

    @property
    def response_mode(self) -> ResponseMode:
        return self.ctx.modes.mode

    @property
    def key_statuses(self) -> dict[str, KeyStatus]:
        return self.credentials.statuses

    def busy(self) -> int:
        """Calls in flight: quitting now would cut them."""
        return self.calls.in_flight

    async def pending_approvals(self) -> list[Approval]:
        return await self.ctx.approvals.pending()  # the queue exists once started

    async def decide_approval(self, approval_id: int, approve: bool) -> Approval:
        return await self.ctx.approvals.decide(approval_id, approve)
