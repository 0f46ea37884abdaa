"""Slack delivers an event more than once; plugins must see it once.

Socket Mode retries an event that was not acked in time (or whenever Slack chooses) in
a new envelope, with a new `envelope_id`, the same payload `event_id` and
`retry_attempt` >= 1, possibly on another connection; during a `disconnect` hand-over
two links may also carry the same envelope. Both ids are remembered, in bounded memory.
"""
from __future__ import annotations

from rtmbotd.slack.protocol import Event

SEEN_IDS = 4096   # of each kind: retries come within minutes, far fewer events than this


class SeenEvents:
    """The last `limit` envelope ids and event ids, oldest forgotten first."""

    def __init__(self, limit: int = SEEN_IDS) -> None:
        self.limit = limit
        self._envelopes: dict[str, None] = {}
        self._events: dict[str, None] = {}

    def first_time(self, event: Event) -> bool:
        """True the first time `event` arrives (an event without ids always); remembers it."""
        seen = (event.envelope_id in self._envelopes) or (event.event_id in self._events)
        self._remember(self._envelopes, event.envelope_id)
        self._remember(self._events, event.event_id)
        return not seen

    def _remember(self, ids: dict[str, None], key: str | None) -> None:
        if key is None or key in ids:
            return
        ids[key] = None
        if len(ids) > self.limit:
            del ids[next(iter(ids))]

    def __len__(self) -> int:
        return len(self._envelopes) + len(self._events)
