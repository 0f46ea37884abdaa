"""The daemon's single inbox: everything the loop reacts to arrives here, in order."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable


class Inbox:
    """An unbounded FIFO with one consumer, run on the event loop as soon as items arrive.

    `put` (on the loop) appends the item and, unless the consumer is already running,
    runs it at once: a frame from the socket or a plugin's report is handled in the
    loop iteration it arrived in, not after waking a task. An item put while the
    consumer runs (by a handler) is handled by that same run, after those before it.
    `wake_at` runs the consumer at a deadline, with one timer re-armed only when the
    deadline changes. Other threads use `put_threadsafe`. Nothing is consumed before
    `start()`: items put while the owner sets up wait for it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, consume: Callable[[], None]) -> None:
        self._loop = loop
        self._consume = consume
        self._items: deque[Any] = deque()
        self._running = True             # until start()
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._armed: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def get_nowait(self) -> Any:
        return self._items.popleft()

    def put(self, item: Any) -> None:
        self._items.append(item)
        self.kick()

    def put_threadsafe(self, item: Any) -> None:
        """From any thread; silently dropped once the loop is closed (shutdown)."""
        try:
            self._loop.call_soon_threadsafe(self.put, item)
        except RuntimeError:
            pass

    def start(self) -> None:
        """Begin consuming: runs the consumer once for what arrived so far."""
        self._running = False
        self.kick()

    def kick(self) -> None:
        """Run the consumer now, unless it is running already (then it sees new items)."""
        if self._running or self._closed:
            return
        self._running = True
        try:
            self._consume()
        finally:
            self._running = False

    def wake_at(self, deadline: float | None, now: float) -> None:
        """Run the consumer at `deadline` (same clock as `now`); None: only on new items."""
        if deadline == self._armed and (deadline is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed = deadline
        if deadline is not None and not self._closed:
            self._timer = self._loop.call_later(max(0.0, deadline - now), self._fire)

    def _fire(self) -> None:
        self._timer = self._armed = None
        self.kick()

    def close(self) -> None:
        """No more consuming; queued items stay unhandled."""
        self._closed = True
        self.wake_at(None, 0.0)
