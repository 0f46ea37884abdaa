"""Timed plugin jobs (the seed's `crontable`): pure, driven by an injected clock."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable


@dataclass
class Entry:
    key: Hashable
    interval: float
    target: Any
    deadline: float
    pending: bool = field(default=False)


class Scheduler:
    """Keeps each job's next deadline; the loop asks `due(now)` and `next_deadline()`.

    Like python-rtmbot, a job first runs as soon as it is registered, then every
    `interval` seconds. A job whose previous run has not finished is not queued again
    (runs are skipped, not piled up), and deadlines do not drift.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._entries: dict[Hashable, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: Hashable, interval: float, target: Any, *, first: float | None = None) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        now = self._clock()
        self._entries[key] = Entry(key, float(interval), target, now if first is None else first)

    def remove_where(self, predicate: Callable[[Hashable], bool]) -> int:
        doomed = [k for k in self._entries if predicate(k)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def due(self, now: float | None = None) -> list[Entry]:
        """Entries whose deadline has passed; each is marked pending until `done`."""
        now = self._clock() if now is None else now
        ready = []
        for entry in self._entries.values():
            if entry.deadline > now:
                continue
            missed = int((now - entry.deadline) // entry.interval)
            entry.deadline += (missed + 1) * entry.interval
            if entry.pending:
                continue
            entry.pending = True
            ready.append(entry)
        return ready

    def done(self, key: Hashable) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.pending = False

    def next_deadline(self) -> float | None:
        return min((e.deadline for e in self._entries.values()), default=None)
