"""How many calls may be in flight: a global cap the regulator can move, and per-provider
gates (concurrency, requests per minute, tokens per minute)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from aiolimiter import AsyncLimiter

from .config import ProviderSpec


class ConcurrencyCap:
    """A semaphore whose size can change while calls hold it.

    Lowering the limit never interrupts a call: holders finish, and new ones wait until
    the count is under the new limit.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def set_limit(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._wake()

    async def acquire(self) -> None:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted a slot, then cancelled: hand it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(future)
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            future = self._waiters.popleft()
            if not future.done():
                self.in_use += 1  # the slot is the waiter's from now on
                future.set_result(None)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()


class ProviderGate:
    """A provider's own limits: concurrent calls, and its rpm/tpm quotas when declared."""

    def __init__(self, spec: ProviderSpec) -> None:
        self.concurrency = ConcurrencyCap(spec.max_concurrency)
        self.rpm = AsyncLimiter(spec.rpm, 60) if spec.rpm else None
        self.tpm = AsyncLimiter(spec.tpm, 60) if spec.tpm else None

    @contextlib.asynccontextmanager
    async def slot(self, tokens: int) -> AsyncIterator[None]:
        if self.rpm is not None:
            await self.rpm.acquire()
        if self.tpm is not None:
            # A call bigger than the whole minute's quota takes all of it, not forever.
            await self.tpm.acquire(min(tokens, self.tpm.max_rate))
        await self.concurrency.acquire()
        try:
            yield
        finally:
            self.concurrency.release()
