"""The daemon's single inbox: everything the loop reacts to arrives here, in order."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class Inbox:
    """An unbounded FIFO for one asyncio consumer; `get` waits at most until a deadline.

    Lighter than `asyncio.wait_for(queue.get(), t)`: no task per wait, one timer.
    Producers on the loop call `put`; other threads call `put_threadsafe`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future | None = None

    def __len__(self) -> int:
        return len(self._items)

    def get_nowait(self) -> Any:
        return self._items.popleft()

    def put(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def put_threadsafe(self, item: Any) -> None:
        """From any thread; silently dropped once the loop is closed (shutdown)."""
        try:
            self._loop.call_soon_threadsafe(self.put, item)
        except RuntimeError:
            pass

    async def get(self, timeout: float | None) -> Any | None:
        """The next item, or None when `timeout` seconds pass first (None = wait forever)."""
        if self._items:
            return self._items.popleft()
        if timeout is not None and timeout <= 0:
            return None
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = None
        if timeout is not None:
            timer = self._loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return self._items.popleft() if self._items else None


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
