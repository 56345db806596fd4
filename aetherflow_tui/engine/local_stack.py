"""The local models (llama.cpp): built on demand, throttled and paused by the regulator,
unloaded by housekeeping."""

from __future__ import annotations

import contextlib

from .context import EngineContext
from .providers.local import LocalProvider


class LocalStack:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx
        self.paused = False
        self.spare = False  # the regulator asks the response mode to spare local models

    def built(self) -> list[LocalProvider]:
        """The local providers already built (a model may be loaded)."""
        return [p for p in self._ctx.pool.built() if isinstance(p, LocalProvider)]

    async def providers(self) -> list[LocalProvider]:
        """The llama_cpp providers, built (not loaded) on demand."""
        built = [await self._ctx.pool.get(spec) for spec in self._ctx.bouquet.providers.values()
                 if spec.enabled and spec.kind == "llama_cpp"]
        return [p for p in built if isinstance(p, LocalProvider)]

    async def throttle(self, *, threads: int | None = None, duty: float | None = None) -> None:
        """Threads and duty cycle, at once for generations in progress (they read it
        between two tokens)."""
        for provider in await self.providers():
            provider.set_throttle(threads=threads, duty=duty)

    def throttle_built(self, *, threads: int | None, duty: float) -> None:
        for provider in self.built():
            provider.set_throttle(threads=threads, duty=duty)

    def pause(self, paused: bool) -> None:
        """Hold (or release) local generations that have not started yet."""
        self.paused = paused
        for provider in self.built():
            provider.paused.clear() if paused else provider.paused.set()

    async def housekeeping(self) -> None:
        """Unload idle models, or any when memory runs short."""
        import psutil

        available_mb = psutil.virtual_memory().available / 2**20
        for provider in self.built():
            with contextlib.suppress(Exception):
                await provider.housekeeping(available_mb)
