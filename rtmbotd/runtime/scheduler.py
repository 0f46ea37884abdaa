"""Timed plugin jobs (the seed's `crontable`): pure, driven by injected clocks.

Intervals run on the monotonic clock. Cron jobs run at wall-clock times in a zone:
each next time is turned into a monotonic deadline for the loop to sleep until, and
checked against the wall clock again when the loop wakes, so a clock set back or a
suspend neither runs a job early nor twice.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timezone, tzinfo
from typing import Any, Callable, Hashable

from rtmbotd.runtime.cron import CronSchedule

log = logging.getLogger(__name__)

CATCH_UP = 60.0     # resume(): a cron time missed by less than this (a failover's gap) runs at once


@dataclass
class Entry:
    key: Hashable
    interval: float | None
    target: Any
    deadline: float                       # monotonic: when the loop should look again
    name: str = ""
    cron: CronSchedule | None = None
    slot: float | None = None             # cron: the wall time of the next run (None: never)
    pending: bool = field(default=False)
    last_run: float | None = None         # wall time its last run started


class Scheduler:
    """Keeps each job's next deadline; the loop asks `due(now)` and `next_deadline()`.

    Like python-rtmbot, an interval job first runs as soon as it is registered, then
    every `interval` seconds; a cron job runs at each of its times after it was
    registered (times that passed before, e.g. while the daemon was down, are not
    replayed). A job whose previous run has not finished is not queued again (runs are
    skipped, not piled up), and deadlines do not drift.

    Every job has a stable `name`, the same on every node running the same plugins:
    the caller's base name (`"<unit>/<function or Job class>"`: one unit's jobs come from
    one thread, in order, where several units' would race) with `#2`, `#3`... for
    repeats in the order they were added.
    """

    def __init__(self, clock: Callable[[], float], wall: Callable[[], float] = time.time,
                 zone: tzinfo = timezone.utc) -> None:
        self._clock = clock
        self._wall = wall
        self._zone = zone
        self._entries: dict[Hashable, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def zone(self) -> tzinfo:
        return self._zone

    def add(self, key: Hashable, schedule: float | CronSchedule, target: Any, *,
            first: float | None = None, name: str | None = None) -> Entry:
        """Schedule `target` every `schedule` seconds or at the times of a CronSchedule."""
        now = self._clock()
        unique = self._unique(name if name is not None else str(key))
        if isinstance(schedule, CronSchedule):
            entry = Entry(key, None, target, now, unique, schedule)
            wall = self._wall()
            self._plan(entry, wall, wall, now)
        else:
            if schedule <= 0:
                raise ValueError(f"interval must be positive, got {schedule!r}")
            entry = Entry(key, float(schedule), target, now if first is None else first, unique)
        self._entries[key] = entry
        return entry

    def _unique(self, base: str) -> str:
        taken = {e.name for e in self._entries.values()}
        if base not in taken:
            return base
        n = 2
        while f"{base}#{n}" in taken:
            n += 1
        return f"{base}#{n}"

    def _plan(self, entry: Entry, after: float, wall: float, now: float) -> None:
        """Set a cron entry's next wall time after `after`, and its monotonic deadline."""
        entry.slot = entry.cron.next_after(after, self._zone)
        if entry.slot is None:
            log.warning("job %s (%s): no next time within 50 years; it will not run again",
                        entry.name, entry.cron)
        self._wake_for(entry, wall, now)

    @staticmethod
    def _wake_for(entry: Entry, wall: float, now: float) -> None:
        entry.deadline = float("inf") if entry.slot is None else now + max(0.0, entry.slot - wall)

    def set_zone(self, zone: tzinfo, now: float | None = None) -> None:
        """Plan every cron job again in `zone` (a reload changed TIMEZONE)."""
        if zone == self._zone:
            return
        now = self._clock() if now is None else now
        self._zone = zone
        wall = self._wall()
        for entry in self._entries.values():
            # A time that has come but not yet run (a resume() catch-up, a wake shared
            # with this reload) runs still; the plan after it is made in the new zone.
            if entry.cron is not None and not (entry.slot is not None and entry.slot <= wall):
                self._plan(entry, wall, wall, now)

    def remove_where(self, predicate: Callable[[Hashable], bool]) -> int:
        doomed = [k for k in self._entries if predicate(k)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def due(self, now: float | None = None) -> list[Entry]:
        """Entries whose time has come; each is marked pending until `done`.

        A cron job is due when the wall clock reached its time (also when the loop woke
        for something else after the clock was set forward); woken before that (the
        clock was set back), it only moves its deadline.
        """
        now = self._clock() if now is None else now
        wall = self._wall()
        ready = []
        for entry in self._entries.values():
            if entry.cron is not None:
                if entry.slot is None or wall < entry.slot:
                    self._wake_for(entry, wall, now)
                    continue
                self._plan(entry, max(wall, entry.slot), wall, now)
            else:
                if entry.deadline > now:
                    continue
                missed = int((now - entry.deadline) // entry.interval)
                entry.deadline += (missed + 1) * entry.interval
            if entry.pending:
                continue
            entry.pending = True
            entry.last_run = wall
            ready.append(entry)
        return ready

    def done(self, key: Hashable) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.pending = False

    def next_deadline(self) -> float | None:
        deadline = min((e.deadline for e in self._entries.values()), default=None)
        return None if deadline == float("inf") else deadline

    def last_runs(self) -> dict[str, float]:
        """Job name -> wall time (time.time) its last run started, for jobs that ran
        (here, or on the node `resume` carried them over from)."""
        return {e.name: e.last_run for e in self._entries.values() if e.last_run is not None}

    def resume(self, runs: dict[str, float], now: float | None = None) -> None:
        """Carry schedules over from another node: `runs` as its `last_runs()` gave them.

        `now` is this scheduler's monotonic clock (default: read it); wall time comes
        from its wall clock. For each job named in `runs`, last started at wall time t:
        an interval job runs next at t + interval, or at once if that has passed (once,
        not once per missed interval); a cron job runs next at its first time after t,
        at once if that time was missed by less than CATCH_UP seconds (the failover's
        gap), else at its first time from now on (older times are not replayed).
        Jobs not named keep their plan.
        """
        now = self._clock() if now is None else now
        wall = self._wall()
        for entry in self._entries.values():
            t = runs.get(entry.name)
            if t is None:
                continue
            entry.last_run = t
            if entry.cron is None:
                entry.deadline = now + max(0.0, t + entry.interval - wall)
                continue
            slot = entry.cron.next_after(max(t, wall - CATCH_UP), self._zone)
            if slot is not None and slot <= wall:
                entry.slot, entry.deadline = slot, now     # missed by less than CATCH_UP
            else:
                self._plan(entry, max(t, wall), wall, now)
