"""In-process publish/subscribe: the engine publishes, each subscriber reads its own queue.

Publishing never blocks the engine. A subscriber that falls too far behind (a frozen UI)
loses its oldest events and learns how many it missed, rather than growing memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .events import Event


class Subscription:
    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.dropped = 0

    def _offer(self, event: Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        return await self._queue.get()

    def get_nowait(self) -> Event | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        self._bus._subscriptions.discard(self)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            yield await self._queue.get()


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, maxsize: int = 10_000) -> Subscription:
        subscription = Subscription(self, maxsize)
        self._subscriptions.add(subscription)
        return subscription

    def publish(self, event: Event) -> None:
        for subscription in tuple(self._subscriptions):
            subscription._offer(event)
