"""What the local stack may ask of a local-model provider, beside the Provider protocol."""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

from .base import Provider


@runtime_checkable
class LocalProvider(Provider, Protocol):
    """A provider that runs on this machine (llama.cpp): the regulator throttles and pauses
    it, and housekeeping unloads it when memory runs short or it sits idle."""

    paused: asyncio.Event  # set: generations may start; cleared: new ones wait

    def set_throttle(self, *, threads: int | None = None, duty: float | None = None) -> None:
        ...

    async def housekeeping(self, available_mb: float) -> list[str]:
        ...
