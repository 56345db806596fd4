"""What every part of the engine shares: the bouquet, the clock, the bus, the store, the
price table, health, the budget and the caps. The narrow context a collaborator gets
instead of the whole Engine (the composition root in engine.py builds it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .budget import BudgetGuard
from .bus import EventBus
from .clock import Clock
from .config import Bouquet, ModelSpec, ProviderSpec
from .errors import DispatchHeld, UsageError
from .events import AlertRaised, ConcurrencyChanged
from .gates import ConcurrencyCap, ProviderGate
from .health import HealthBook
from .keys import KeyVault
from .ledger import EnergyEstimator, PriceTable
from .modes import ModeController
from .providers import build_provider
from .store import INSERT_ALERT

if TYPE_CHECKING:
    from .approvals import ApprovalQueue
    from .budget import SharedBudget
    from .providers.base import Provider
    from .router import Router
    from .store import Store


def nothing(*_: object) -> None:
    """The default of a hook the Engine wires later (engine.py): do nothing."""


class Dispatch:
    """The emergency stop and the operator's throttle: read by every call before it leaves."""

    def __init__(self, regulated_cap: int) -> None:
        self.held: str | None = None  # why dispatch is held (emergency stop), or None
        self.manual_cap: int | None = None  # the operator's emergency throttle
        self.regulated_cap = regulated_cap  # the regulator's latest cap

    def check(self) -> None:
        """DispatchHeld (exit 3) while an emergency stop holds dispatch."""
        if self.held is not None:
            raise DispatchHeld(f"dispatch is held: {self.held}",
                               fix="resume with `aetherflow resume` or R in the cockpit")


class ProviderPool:
    """One built provider (HTTP session, local model) per provider id, built on first use."""

    def __init__(self, vault: KeyVault, home: Path) -> None:
        self._vault = vault
        self._home = home
        self._built: dict[str, Provider] = {}
        self._lock = asyncio.Lock()

    def built(self) -> list[Provider]:
        return list(self._built.values())

    async def get(self, spec: ProviderSpec) -> Provider:
        return self._built.get(spec.id) or await self._build(spec)

    async def _build(self, spec: ProviderSpec) -> Provider:
        async with self._lock:
            provider = self._built.get(spec.id)
            if provider is None:
                key = await asyncio.to_thread(self._vault.get, spec)
                if key is None and spec.key != "none":
                    status = await asyncio.to_thread(self._vault.status, spec)
                    raise UsageError(f"no key for {spec.id}", fix=status.detail)
                provider = build_provider(spec, key, models_dir=self._home / "models")
                self._built[spec.id] = provider
            return provider

    async def drop(self, provider_id: str) -> None:
        """A key changed: the next call builds the provider again with the new one."""
        provider = self._built.pop(provider_id, None)
        if provider is not None:
            await provider.aclose()

    async def aclose(self) -> None:
        for provider in self._built.values():
            with contextlib.suppress(Exception):  # closing the rest matters more
                await provider.aclose()
        self._built.clear()


class EngineContext:
    def __init__(self, bouquet: Bouquet, home: Path, vault: KeyVault, clock: Clock) -> None:
        self.bouquet = bouquet
        self.home = home
        self.vault = vault
        self.clock = clock
        self.bus = EventBus()
        self.prices = PriceTable(clock.now)
        self.energy = EnergyEstimator()
        self.health = HealthBook(clock, bouquet.health)
        self.guard = BudgetGuard(bouquet.budget)
        self.concurrency = ConcurrencyCap(bouquet.routing.max_concurrency)
        self.modes = ModeController(bouquet.modes, clock.now())
        self.dispatch = Dispatch(bouquet.routing.max_concurrency)
        self.pool = ProviderPool(vault, home)
        self.store_or_none: Store | None = None  # set while the engine is started
        self.approvals_or_none: ApprovalQueue | None = None
        self.shared_or_none: SharedBudget | None = None
        # Which providers automatic routing may use: the keys' subsystem answers it.
        self.routable_now: Callable[[], set[str]] = set
        self._router: Router | None = None
        self._gates: dict[str, ProviderGate] = {}

    @property
    def store(self) -> Store:
        if self.store_or_none is None:
            raise RuntimeError("the engine is not started")
        return self.store_or_none

    @property
    def approvals(self) -> ApprovalQueue:
        if self.approvals_or_none is None:
            raise RuntimeError("the engine is not started")
        return self.approvals_or_none

    @property
    def shared(self) -> SharedBudget:
        """What this process holds of the day in the store, for every process to see."""
        if self.shared_or_none is None:
            raise RuntimeError("the engine is not started")
        return self.shared_or_none

    @property
    def router(self) -> Router:
        # Built on first use: its tables cost more than the cockpit's first frame can wait.
        if self._router is None:
            from .router import Router

            self._router = Router(self.bouquet, self.prices, self.health, self.guard)
            self._router.routable = self.routable_now()
        return self._router

    @property
    def router_built(self) -> bool:
        return self._router is not None

    def gate(self, spec: ProviderSpec) -> ProviderGate:
        gate = self._gates.get(spec.id)
        if gate is None:
            gate = self._gates[spec.id] = ProviderGate(spec)
        return gate

    def provider_spec(self, provider_id: str) -> ProviderSpec:
        spec = self.bouquet.providers.get(provider_id)
        if spec is None:
            known = ", ".join(sorted(self.bouquet.providers))
            raise UsageError(f"unknown provider {provider_id!r}",
                             fix=f"use one of: {known} (see `aetherflow providers`)")
        return spec

    @staticmethod
    def model_spec(provider: ProviderSpec, model_id: str) -> ModelSpec:
        """The declared model, or an ad-hoc one: OpenAI-compatible hosts serve many more."""
        return provider.model(model_id) or ModelSpec(id=model_id)

    def set_concurrency(self, limit: int, reason: str) -> None:
        """The global cap on calls in flight; the regulator moves it under load."""
        self.concurrency.set_limit(limit)
        self.bus.publish(ConcurrencyChanged(self.clock.now(), self.concurrency.limit, reason))

    def raise_alert(self, severity: str, title: str, message: str, source: str) -> None:
        now = self.clock.now()
        if self.store_or_none is not None:
            self.store_or_none.enqueue(INSERT_ALERT, (now, severity, title, message, source))
        self.bus.publish(AlertRaised(now, severity, title, message, source))
