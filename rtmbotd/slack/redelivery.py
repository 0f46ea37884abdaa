"""Slack delivers an event more than once; plugins must see it once.

Socket Mode retries an event that was not acked in time (or whenever Slack chooses) in
a new envelope, with a new `envelope_id`, the same payload `event_id` and
`retry_attempt` >= 1, possibly on another connection; during a `disconnect` hand-over
two links may also carry the same envelope. Both ids are remembered for a retention
window on the monotonic clock (Slack retries at once, after about 1 minute and after
about 5), with a hard cap on memory.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Callable

from rtmbotd.slack.protocol import Event

log = logging.getLogger(__name__)

RETENTION = 600.0     # s since an id was last seen: comfortably over Slack's ~5 min retry
SEEN_IDS = 100_000    # of each kind (200,000 ids): 10 min at ~160 events/s, 10x a busy workspace


class SeenEvents:
    """Envelope ids and event ids seen within `retention` seconds (a sighting refreshes
    an id), at most `limit` of each kind: beyond it the oldest go first, logged once."""

    def __init__(self, retention: float = RETENTION, limit: int = SEEN_IDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.retention = retention
        self.limit = limit
        self._clock = clock
        # id -> when last seen, oldest first (OrderedDict: O(1) at both ends, unlike dict's front)
        self._envelopes: OrderedDict[str, float] = OrderedDict()
        self._events: OrderedDict[str, float] = OrderedDict()
        self._overflow_logged = False

    def first_time(self, event: Event, now: float | None = None) -> bool:
        """True the first time `event` arrives (an event without ids always); remembers it."""
        now = self._clock() if now is None else now
        seen = self.known(event, now)
        self._remember(self._envelopes, event.envelope_id, now)
        self._remember(self._events, event.event_id, now)
        return not seen

    def known(self, event: Event, now: float | None = None) -> bool:
        """True when either id of `event` was seen within the window; remembers nothing."""
        now = self._clock() if now is None else now
        self._forget_before(now - self.retention)
        return (event.envelope_id in self._envelopes) or (event.event_id in self._events)

    def _forget_before(self, cutoff: float) -> None:
        for ids in (self._envelopes, self._events):
            while ids and next(iter(ids.values())) <= cutoff:
                ids.popitem(last=False)

    def _remember(self, ids: OrderedDict[str, float], key: str | None, now: float) -> None:
        if key is None:
            return
        ids[key] = now
        ids.move_to_end(key)
        if len(ids) > self.limit:
            ids.popitem(last=False)
            if not self._overflow_logged:
                self._overflow_logged = True
                log.warning("more than %d event ids within %.0f s: forgetting the oldest early; "
                            "a late Slack retry of those may reach the plugins again", self.limit, self.retention)

    def __len__(self) -> int:
        return len(self._envelopes) + len(self._events)
