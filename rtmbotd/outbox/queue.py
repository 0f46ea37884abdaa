"""The one outbox every plugin output goes through: ordered, rate limited, fair.

Pure bookkeeping: the daemon asks `ready(now, ...)` for what to send, reports each
result back, and sleeps until `next_deadline(now)`.

Cluster hooks (None on one host, which pays nothing for them): `limiter_for` makes each
channel's limiter (rtmbotd.cluster.ratelimit: slots reserved in the shared schedule; a
limiter may answer `math.inf` while a reservation is on its way, and its answer wakes the
loop), and `fence(msg, now)` holds back a message that must not go out yet.
"""
from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from rtmbotd.ratelimit import RateLimiter
from rtmbotd.slack.writes import POST

TEXT_LIMIT = 4000
SOCKET_WINDOW = 16          # RTM messages in flight per channel (TCP keeps them ordered)
RETRY_BASE, RETRY_CAP = 1.0, 30.0
# Sends are paced 10% under the configured rate: Slack counts arrivals, and network
# jitter can bring two paced sends closer together than they left.
RATE_MARGIN = 0.9


@dataclass(frozen=True)
class Message:
    """One write to Slack: `method` (chat.postMessage unless an output named another, see
    slack/writes.py) with `extra`, its arguments besides channel and text."""

    seq: int
    channel: str
    text: str | None
    plugin: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    tag: Any = field(default=None, compare=False)
    queued_at: float = field(default=0.0, compare=False)    # the loop's clock: outbox wait metric
    method: str = POST
    callback: dict | None = None      # {"callback": name, "output": item}: the plugin hears the result

    @property
    def plain(self) -> bool:
        """True when the RTM socket can carry it (a plain message, optionally in a thread,
        whose result no callback waits for: RTM's reply has no `ts` worth giving)."""
        return (self.method == POST and self.callback is None and bool(self.text)
                and set(self.extra) <= {"thread_ts"})

    def as_record(self) -> dict:
        record = {"channel": self.channel, "text": self.text, "plugin": self.plugin, "extra": dict(self.extra)}
        if self.method != POST:      # a record without "method" is chat.postMessage, as rtmbotd saved them before
            record["method"] = self.method
        if self.callback is not None:
            record["callback"] = self.callback
        return record


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Split `text` into chunks of at most `limit` characters, at line ends where possible."""
    if len(text) <= limit:
        return [text]
    chunks: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > limit:
            cut = line.rfind(" ", 0, limit)
            cut = cut + 1 if cut > limit // 2 else limit
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:cut])
            line = line[cut:]
        if len(current) + len(line) > limit:
            chunks.append(current)
            current = ""
        current += line
    if current:
        chunks.append(current)
    return [c.rstrip("\n") or c for c in chunks]


def _waits_on_result(chan: "_Channel", via_socket: bool) -> bool:
    """Order within a channel: a Web API send waits for everything before it."""
    if not chan.inflight:
        return False
    if not via_socket or len(chan.inflight) >= SOCKET_WINDOW:
        return True
    return any(not s for _, s in chan.inflight.values())


@dataclass
class _Channel:
    limiter: RateLimiter
    pending: deque = field(default_factory=deque)
    inflight: dict = field(default_factory=dict)   # seq -> (Message, via_socket)
    paused_until: float = 0.0
    failures: int = 0


class Outbox:
    """Per-channel FIFO queues with token buckets, served round-robin."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._seq = itertools.count(1)
        self._channels: dict[str, _Channel] = {}
        self._turns: deque[str] = deque()        # channels with pending messages, in turn order
        self.web_paused_until = 0.0
        self.on_settled: Callable[[Message], None] | None = None   # delivered or dropped
        self.on_enqueued: Callable[[Message], None] | None = None
        self.limiter_for: Callable[[str, float, float, int], Any] | None = None   # (channel, now, rate, burst)
        self.fence: Callable[[Message, float], bool] | None = None

    def configure(self, rate: float, burst: int, now: float) -> None:
        """Apply new limits (on reload) without losing queued messages."""
        if (rate, burst) == (self.rate, self.burst):
            return
        self.rate, self.burst = rate, burst
        for channel, chan in self._channels.items():
            chan.limiter = self._limiter(channel, now)

    def _limiter(self, channel: str, now: float) -> Any:
        if self.limiter_for is not None:
            return self.limiter_for(channel, now, self.rate * RATE_MARGIN, self.burst)
        return RateLimiter(self.rate * RATE_MARGIN, self.burst, now)

    def __len__(self) -> int:
        return sum(len(c.pending) + len(c.inflight) for c in self._channels.values())

    def _channel(self, channel: str, now: float) -> _Channel:
        chan = self._channels.get(channel)
        if chan is None:
            chan = self._channels[channel] = _Channel(self._limiter(channel, now))
        return chan

    def enqueue(self, channel: str, text: str | None, plugin: str, now: float,
                extra: Mapping[str, Any] | None = None, tag: Any = None, method: str = POST,
                callback: dict | None = None) -> list[Message]:
        """Queue a write (a chat.postMessage split when its text is too long); returns what was
        queued. Every write to a channel shares its queue and rate limit, so order is kept."""
        extra = dict(extra or {})
        parts = split_text(text) if text and method == POST and not extra.get("blocks") else [text]
        chan = self._channel(channel, now)
        messages = []
        for i, part in enumerate(parts):
            # Blocks and attachments ride on the first part only.
            msg_extra = extra if i == 0 else {k: v for k, v in extra.items() if k == "thread_ts"}
            # A callback hears of the first part: its ts is the message's.
            msg = Message(next(self._seq), channel, part, plugin, msg_extra, tag, queued_at=now, method=method,
                          callback=callback if i == 0 else None)
            chan.pending.append(msg)
            messages.append(msg)
            if self.on_enqueued is not None:
                self.on_enqueued(msg)
        if channel not in self._turns:
            self._turns.append(channel)
        return messages

    def snapshot(self) -> list[dict]:
        """Every undelivered message (in flight first, then queued) in send order."""
        out: list[Message] = []
        for chan in self._channels.values():
            out.extend(m for m, _ in chan.inflight.values())
            out.extend(chan.pending)
        return [m.as_record() for m in sorted(out, key=lambda m: m.seq)]

    def _can_send(self, chan: _Channel, msg: Message, socket: bool, web: bool, now: float) -> bool | None:
        """None: blocked; else True to send over the socket, False via the Web API."""
        via_socket = socket and msg.plain
        if not via_socket and not web:
            return None
        if chan.paused_until > now or (not via_socket and self.web_paused_until > now):
            return None
        if _waits_on_result(chan, via_socket):
            return None
        if self.fence is not None and not self.fence(msg, now):
            return None
        if chan.limiter.next_allowed(now) > now:
            return None
        return via_socket

    def ready(self, now: float, *, socket: bool, web: bool) -> list[tuple[Message, bool]]:
        """Messages to send now, as (message, via_socket), fair across channels."""
        out: list[tuple[Message, bool]] = []
        progress = True
        while progress and self._turns:
            progress = False
            for _ in range(len(self._turns)):
                channel = self._turns[0]
                self._turns.rotate(-1)
                chan = self._channels[channel]
                if not chan.pending:
                    continue
                via = self._can_send(chan, chan.pending[0], socket, web, now)
                if via is None:
                    continue
                msg = chan.pending.popleft()
                chan.limiter.take(now)
                chan.inflight[msg.seq] = (msg, via)
                out.append((msg, via))
                progress = True
            self._turns = deque(c for c in self._turns if self._channels[c].pending)
        return out

    def delivered(self, msg: Message) -> None:
        chan = self._channels.get(msg.channel)
        if chan is not None and chan.inflight.pop(msg.seq, None) is not None:
            chan.failures = 0
            if self.on_settled is not None:
                self.on_settled(msg)

    dropped = delivered   # a permanent failure leaves the queue the same way

    def retry(self, msg: Message, now: float, *, after: float | None = None, web_wide: bool = False) -> float:
        """Put `msg` back at the head of its channel; returns the wait before the retry."""
        chan = self._channels.get(msg.channel)
        if chan is None or chan.inflight.pop(msg.seq, None) is None:
            return 0.0
        chan.failures += 1
        wait = after if after is not None else min(RETRY_CAP, RETRY_BASE * 2 ** (chan.failures - 1))
        if web_wide:
            self.web_paused_until = max(self.web_paused_until, now + wait)
        else:
            chan.paused_until = max(chan.paused_until, now + wait)
        self._put_back(chan, [msg])
        return wait

    def unsend(self, msg: Message) -> None:
        """A message whose link died before Slack acknowledged it goes back, in order."""
        chan = self._channels.get(msg.channel)
        if chan is not None and chan.inflight.pop(msg.seq, None) is not None:
            self._put_back(chan, [msg])

    def discard(self, msgs: list[Message]) -> None:
        """Cluster: forget queued messages another node sends now (in flight ones finish)."""
        gone = {m.seq for m in msgs}
        for channel in {m.channel for m in msgs}:
            chan = self._channels.get(channel)
            if chan is not None:
                chan.pending = deque(m for m in chan.pending if m.seq not in gone)

    def _put_back(self, chan: _Channel, msgs: list[Message]) -> None:
        msgs = sorted(msgs, key=lambda m: m.seq)
        if not chan.pending or msgs[-1].seq < chan.pending[0].seq:
            chan.pending.extendleft(reversed(msgs))      # the usual case: back at the head, O(len(msgs))
        else:
            chan.pending = deque(sorted(list(chan.pending) + msgs, key=lambda m: m.seq))
        if msgs and msgs[0].channel not in self._turns:
            self._turns.appendleft(msgs[0].channel)

    def next_deadline(self, now: float, *, socket: bool, web: bool) -> float | None:
        """When `ready` could next return something, or None (nothing waits on time)."""
        best: float | None = None
        for channel in self._turns:
            chan = self._channels[channel]
            if not chan.pending:
                continue
            msg = chan.pending[0]
            via_socket = socket and msg.plain
            if not via_socket and not web:
                continue
            if _waits_on_result(chan, via_socket):
                continue   # a result will wake the loop, not the clock
            if self.fence is not None and not self.fence(msg, now):
                continue   # the cluster's next word (a heartbeat, a takeover) wakes the loop
            at = max(chan.limiter.next_allowed(now), chan.paused_until,
                      self.web_paused_until if not via_socket else 0.0)
            if at == math.inf:
                continue   # a slot reservation on its way wakes the loop
            best = at if best is None else min(best, at)
        return best
