"""Keys: their state in the vault, the sandbox test of a new one, and its activation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .approvals import ACTIVATE_KEY, Approval
from .config import ModelSpec, ProviderSpec
from .context import EngineContext, nothing
from .errors import OperatorError, UsageError
from .events import KeyCheckUpdated, KeyStateChanged
from .keycheck import SANDBOX_MAX_TOKENS, SANDBOX_PROMPT, KeyCheck, KeyCheckState, judge
from .keys import KeyStatus, check_key_text
from .providers.base import ChatRequest
from .views import ModelView, ProviderView, routable

if TYPE_CHECKING:
    from .calls import Calls


class Credentials:
    def __init__(self, ctx: EngineContext, calls: Calls) -> None:
        self._ctx = ctx
        self._calls = calls
        self.statuses: dict[str, KeyStatus] = {}  # the key states last read from the vault
        self._checks: dict[str, KeyCheck] = {}
        # Set by the Engine: the response mode re-reads its signals when keys change, and
        # a veille offer the operator approved is adopted once its key is active.
        self.after_change: Callable[[], None] = nothing
        self.announced: Callable[[str], Awaitable[dict[str, Any] | None]] = _none
        self.activated: Callable[[str], Awaitable[None]] = _none
        ctx.routable_now = self.routable_ids

    async def load(self) -> None:
        """The last sandbox verdict of each provider, from the store."""
        for provider, row in (await self._ctx.store.latest_key_checks()).items():
            self._checks[provider] = KeyCheck(provider, KeyCheckState(row.state), row.reason,
                                              row.ts, row.latency_s, row.usd, row.billed_usd)

    def routable_ids(self) -> set[str]:
        return {pid for pid, status in self.statuses.items()
                if routable(status, self.key_check(pid))}

    async def provider_views(self) -> list[ProviderView]:
        specs = list(self._ctx.bouquet.providers.values())
        statuses = await asyncio.to_thread(lambda: [self._ctx.vault.status(s) for s in specs])
        self.statuses.update({spec.id: st for spec, st in zip(specs, statuses, strict=True)})
        self._refresh_routable()
        self.after_change()
        return [self._view(spec, status) for spec, status in zip(specs, statuses, strict=True)]

    async def provider_view(self, provider_id: str) -> ProviderView:
        """One provider, with the key status last read (keychain reads block and may prompt)."""
        spec = self._ctx.provider_spec(provider_id)
        status = self.statuses.get(provider_id)
        if status is None:
            status = self.statuses[provider_id] = await asyncio.to_thread(
                self._ctx.vault.status, spec)
        return self._view(spec, status)

    def _view(self, spec: ProviderSpec, status: KeyStatus) -> ProviderView:
        rates = self._ctx.prices.rates
        models = tuple(ModelView(m.id, m.roles, rates(spec, m)) for m in spec.models)
        return ProviderView(spec.id, spec.kind, spec.base_url, spec.zone, spec.rpm, spec.tpm,
                            status, spec.console_url, models, self.key_check(spec.id),
                            self._ctx.health.health(spec.id))

    def _refresh_routable(self) -> None:
        if self._ctx.router_built:
            self._ctx.router.routable = self.routable_ids()

    def key_check(self, provider_id: str) -> KeyCheck:
        return self._checks.get(provider_id) or KeyCheck(
            provider_id, KeyCheckState.UNTESTED, "not tested yet", 0.0)

    async def set_key(self, provider_id: str, text: str) -> KeyStatus:
        spec = self._ctx.provider_spec(provider_id)
        if spec.key != "keyring":
            raise UsageError(f"{provider_id} reads its key from {spec.key!r}, not the keychain",
                             fix='set key = "keyring" for it in the config to store one')
        secret = check_key_text(provider_id, text)
        await asyncio.to_thread(self._ctx.vault.store, provider_id, secret)
        await self._record_check(KeyCheck(provider_id, KeyCheckState.UNTESTED,
                                          "new key, not tested yet", self._ctx.clock.now()))
        return await self._key_changed(spec)

    async def remove_key(self, provider_id: str) -> bool:
        spec = self._ctx.provider_spec(provider_id)
        removed = await asyncio.to_thread(self._ctx.vault.delete, provider_id)
        await self._record_check(KeyCheck(provider_id, KeyCheckState.UNTESTED, "key removed",
                                          self._ctx.clock.now()))
        await self._key_changed(spec)
        return removed

    async def inject_key(self, provider_id: str, text: str) -> KeyCheck:
        """Store a key, then test it at once; a pass asks the operator to activate it."""
        await self.set_key(provider_id, text)
        return await self.test_key(provider_id)

    async def test_key(self, provider_id: str, *, activate: bool = False) -> KeyCheck:
        """The sandbox test: one real minimal call. `activate` skips the approval (CLI).

        After an approved veille opportunity, the call goes to the announced model and
        what the provider bills is checked against the announced price.
        """
        spec = self._ctx.provider_spec(provider_id)
        await self._record_check(KeyCheck(provider_id, KeyCheckState.TESTING,
                                          "sandbox call in flight", self._ctx.clock.now()),
                                 persist=False)
        announced = await self.announced(provider_id)
        model = self._sandbox_model(spec, announced)
        request = ChatRequest.ask(model.id, SANDBOX_PROMPT, max_tokens=SANDBOX_MAX_TOKENS,
                                  stream=False)
        try:
            outcome = await self._calls.settled(await self._calls.call(
                spec, request, purpose="sandbox"))
        except OperatorError as exc:
            outcome = None
            passed, reason = False, str(exc)
        else:
            passed, reason = judge(
                outcome.result, outcome.error, outcome.record.cost,
                None if announced is None
                else (announced["input_per_mtok"], announced["output_per_mtok"]))
        result = outcome.result if outcome else None
        if not passed:
            state = KeyCheckState.FAILED
        elif activate:
            state = KeyCheckState.ACTIVE
        else:
            state = KeyCheckState.AWAITING_APPROVAL
        check = KeyCheck(provider_id, state, reason, self._ctx.clock.now(),
                         result.duration_s if result else None,
                         outcome.record.cost.usd if outcome else None,
                         result.billed_usd if result else None)
        await self._record_check(check)
        if state is KeyCheckState.AWAITING_APPROVAL:
            await self._ctx.approvals.request(
                ACTIVATE_KEY,
                summary=f"Activate the new key for {provider_id}",
                evidence=f"sandbox test on {model.id}: {reason}",
                proposed_action=f"route real traffic to {provider_id}"
                                + (f" at the announced price for {model.id}"
                                   if announced is not None else ""),
                payload={"provider": provider_id},
            )
        elif state is KeyCheckState.ACTIVE:
            await self.activated(provider_id)
        return check

    def _sandbox_model(self, spec: ProviderSpec, announced: dict[str, Any] | None = None
                       ) -> ModelSpec:
        if announced is not None and (model := spec.model(announced["model"])) is not None:
            return model

        def price(model: ModelSpec) -> float:
            rates = self._ctx.prices.rates(spec, model)
            return rates.input + rates.output if rates else float("inf")

        return min(spec.models, key=price)

    async def on_activation_decided(self, approval: Approval, approved: bool) -> None:
        provider = str(approval.payload.get("provider"))
        current = self.key_check(provider)
        if current.state is not KeyCheckState.AWAITING_APPROVAL:
            return  # the key changed since: this decision is about a key that is gone
        state = KeyCheckState.ACTIVE if approved else KeyCheckState.REJECTED
        reason = "activated by the operator" if approved else "activation declined"
        await self._record_check(KeyCheck(provider, state, f"{reason}; {current.reason}",
                                          self._ctx.clock.now(), current.latency_s, current.usd,
                                          current.billed_usd))
        if approved:
            await self.activated(provider)

    async def _record_check(self, check: KeyCheck, *, persist: bool = True) -> None:
        self._checks[check.provider] = check
        if persist:
            await self._ctx.store.add_key_check(check.ts, check.provider,
                                           check.state is KeyCheckState.ACTIVE
                                           or check.state is KeyCheckState.AWAITING_APPROVAL,
                                           check.state.value, check.reason, check.latency_s,
                                           check.usd, check.billed_usd)
        self._refresh_routable()
        self._ctx.bus.publish(KeyCheckUpdated(self._ctx.clock.now(), check))

    async def _key_changed(self, spec: ProviderSpec) -> KeyStatus:
        status = await asyncio.to_thread(self._ctx.vault.status, spec)
        self.statuses[spec.id] = status
        self._refresh_routable()
        await self._ctx.pool.drop(spec.id)
        self._ctx.health.key_changed(spec.id)
        self._ctx.bus.publish(KeyStateChanged(self._ctx.clock.now(), spec.id, status))
        return status


async def _none(_: str) -> Any:
    return None
