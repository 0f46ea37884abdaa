"""The app's per-channel rate limit, shared by every node of a cluster (GCRA in rtmbot_rate).

Slack limits the app, not the node: three nodes each pacing themselves at RATE_LIMIT
would send three times too fast. So each send reserves its slot in one schedule per
channel on PostgreSQL's clock, `rtmbot_rate.tat` (the GCRA "theoretical arrival time"),
with one statement (`INSERT ... ON CONFLICT (channel) DO UPDATE ... RETURNING`) that
also says when, by that clock, the slot is; the node sends at that moment on its own
monotonic clock. Reservations run on one thread with its own connection, never on the
loop, and come back to it as `SlotReserved` items.

A channel holds at most one reserved slot, asked for as soon as its head message is
looked at, so a reply pays one round trip (~0.3 ms on a LAN; `prefetch` on an event's
channel overlaps it with the plugin's work). A slot not used within one interval of it
lapses and another is asked for: a stale slot would let a later burst exceed the limit.

PostgreSQL unreachable: each node falls back to its share of the limit, RATE_LIMIT /
live nodes (as last counted while PostgreSQL answered) with a burst of max(1,
RATE_BURST // live nodes), starting empty (the shared burst may be spent), and tries
the database again after FALLBACK_FOR seconds.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from rtmbotd.ratelimit import RateLimiter

log = logging.getLogger(__name__)

FALLBACK_FOR = 5.0            # s on the local share after a failed reservation, before trying again

# One statement: the slot is max(tat, now) - tolerance, and tat moves one interval on.
RESERVE = """
INSERT INTO rtmbot_rate AS r (channel, tat)
VALUES (:channel, extract(epoch from clock_timestamp()) + :interval)
ON CONFLICT (channel) DO UPDATE SET tat = GREATEST(r.tat, extract(epoch from clock_timestamp())) + :interval
RETURNING r.tat, extract(epoch from clock_timestamp())
"""


@dataclass(frozen=True)
class SlotReserved:
    """A reservation's answer: the send may go at `at` (local monotonic), or, `at` None,
    the database failed and the channel uses the local share until `fallback_until`."""

    channel: str
    at: float | None
    fallback_until: float = 0.0


def slot_wait(tat: float, db_now: float, rate: float, burst: int) -> float:
    """Seconds from `db_now` until the slot whose reservation moved the schedule to `tat`."""
    interval = 1.0 / rate
    return max(0.0, tat - interval - (max(1, burst) - 1) * interval - db_now)


class ChannelSlots:
    """One channel's limiter in a cluster (the RateLimiter interface: next_allowed, take)."""

    def __init__(self, shared: "SharedRate", channel: str, now: float, rate: float, burst: int) -> None:
        self._shared = shared
        self.channel = channel
        self.rate, self.burst = float(rate), max(1, int(burst))
        self._slot: float | None = None
        self._asked = False
        self._local: RateLimiter | None = None     # the fallback share, while the database fails
        self._local_members = 0

    def next_allowed(self, now: float) -> float:
        if self.rate <= 0:
            return now
        if self._slot is not None and now > self._slot + 1.0 / self.rate:
            self._slot = None                      # lapsed unused: ask for a fresh one
        if self._slot is not None:
            return self._slot
        if now < self._shared.fallback_until:
            return self._fallback(now).next_allowed(now)
        self.ask()
        return math.inf

    def take(self, now: float) -> None:
        if self.rate <= 0:
            return
        if self._slot is not None:
            self._slot = None
        else:
            self._fallback(now).take(now)

    def ask(self) -> None:
        if not self._asked and self._slot is None and self.rate > 0:
            self._asked = True
            self._shared.ask(self.channel, self.rate, self.burst)

    def granted(self, item: SlotReserved) -> None:
        self._asked = False
        self._slot = item.at

    def _fallback(self, now: float) -> RateLimiter:
        members = self._shared.members
        if self._local is None or members != self._local_members:
            # Empty at first: the shared schedule may have spent the burst a moment ago, and
            # every node falling back with a full bucket would send it again at once.
            self._local = RateLimiter(self.rate / members, max(1, self.burst // members), now, tokens=0.0)
            self._local_members = members
        return self._local


class SharedRate:
    """Every channel's ChannelSlots, and the thread that reserves slots in rtmbot_rate.

    Loop side: `limiter_for` (the Outbox hook), `granted` (the SlotReserved handler),
    `members` (from ClusterState), `prefetch`. `post(item)` must be thread-safe."""

    def __init__(self, url: Any, post: Callable[[SlotReserved], None], *,
                 clock: Callable[[], float] = time.monotonic, engine: Any = None) -> None:
        self._url = url
        self._engine = engine
        self._post = post
        self._clock = clock
        self.members = 1
        self.fallback_until = 0.0
        self._channels: dict[str, ChannelSlots] = {}
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._failing: str | None = None

    # -- the loop's side ------------------------------------------------------------
    def limiter_for(self, channel: str, now: float, rate: float, burst: int) -> ChannelSlots:
        slots = self._channels[channel] = ChannelSlots(self, channel, now, rate, burst)
        return slots

    def set_members(self, count: int) -> None:
        self.members = max(1, int(count))

    def prefetch(self, channel: str | None) -> None:
        """An event came from `channel`: reserve its next slot while the plugins work."""
        slots = self._channels.get(channel) if channel else None
        if slots is not None:
            slots.ask()

    def granted(self, item: SlotReserved) -> None:
        if item.at is None:
            self.fallback_until = max(self.fallback_until, item.fallback_until)
        slots = self._channels.get(item.channel)
        if slots is not None:
            slots.granted(item)

    def ask(self, channel: str, rate: float, burst: int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rtmbotd-cluster-rate", daemon=True)
            self._thread.start()
        self._requests.put((channel, rate, burst))

    def close(self) -> None:
        self._requests.put(None)

    # -- the thread's side ----------------------------------------------------------
    def _run(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                break
            channel, rate, burst = request
            self._post(self.reserve(channel, rate, burst))
        if self._engine is not None:
            self._engine.dispose()

    def reserve(self, channel: str, rate: float, burst: int) -> SlotReserved:
        """One reservation (on the thread): its slot on the local monotonic clock."""
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError
        try:
            engine = self._engine_now()
            with engine.connect() as conn:        # autocommit: one statement, one round trip
                tat, db_now = conn.execute(text(RESERVE), {"channel": channel, "interval": 1.0 / rate}).one()
            answered = self._clock()          # after the answer: the slot is never early
        except (SQLAlchemyError, OSError) as exc:
            if self._failing is None:
                log.error("cluster rate limit: cannot reserve a send slot (%s); each node sends at its "
                          "share of RATE_LIMIT until PostgreSQL answers", exc)
            self._failing = str(exc)
            return SlotReserved(channel, None, self._clock() + FALLBACK_FOR)
        if self._failing is not None:
            log.warning("cluster rate limit: PostgreSQL answers again; sends are scheduled cluster-wide")
            self._failing = None
        return SlotReserved(channel, answered + slot_wait(float(tat), float(db_now), rate, burst))

    def _engine_now(self) -> Any:
        if self._engine is None:
            from sqlalchemy.engine import make_url
            from rtmbotd.cluster.coordinator import make_engine   # one connection, short timeouts, keepalives
            self._engine = make_engine(make_url(self._url))
        return self._engine

