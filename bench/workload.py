"""The traffic a benchmark sends through the fake Slack, and what it reads back.

Every event is a user's DM to the bot (channel D1ALICE) whose text is a unique token; the
`repeat` plugin (and the floor client) answer `from repeat1 "<token>" in channel D1ALICE`,
so each reply is matched to its event by the token it quotes. Times are the fake's own
`time.monotonic()` readings: when it finished writing the event, and when it received the
reply (`received_at`), both in this process.
"""
from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from children import BenchError, Child
from rtmbotd.testing.waiting import wait_until
from report import Latency

CHANNEL = "D1ALICE"
USER = "U1ALICE"
REPLY_TOKEN = re.compile(r'"([a-z]+-\d+)"')
POLL = 0.1          # how often a burst's progress is read (reading copies the journal)


def token_of(message: dict) -> str | None:
    found = REPLY_TOKEN.search(message.get("text") or "")
    return found.group(1) if found else None


def _wait_messages(fake, n: int, child: Child, timeout: float) -> list[dict]:
    """The fake's sent messages once there are `n`, checking the child is still alive."""
    def enough() -> list[dict] | None:
        child.check_alive()
        msgs = fake.sent_messages()
        return msgs if len(msgs) >= n else None

    try:
        return wait_until(enough, timeout, "replies", changes=fake.journal, interval=1.0)
    except TimeoutError:
        raise BenchError(f"{child.name}: no reply within {timeout:g} s "
                         f"({len(fake.sent_messages())} of {n} messages)") from None


def wait_connected(fake, opened_before: int, child: Child, timeout: float = 30.0) -> float:
    """Wait for the child's websocket (the fake has sent it hello); the time it was seen."""
    def connected() -> bool:
        child.check_alive()
        return fake.connections_opened > opened_before

    try:
        wait_until(connected, timeout, "a connection", changes=fake.journal, interval=0.5)
    except TimeoutError:
        raise BenchError(f"{child.name}: no websocket connection within {timeout:g} s") from None
    return time.monotonic()


def first_reply(fake, child: Child, opened_before: int, timeout: float = 30.0) -> float:
    """Monotonic time the fake received the child's first reply; events go out once it is
    connected, again every 2 s until one is answered (a bot may connect before it reads)."""
    fake.clear()
    wait_connected(fake, opened_before, child, timeout)
    sent = {"attempts": 0, "at": float("-inf")}

    def replied() -> tuple[float] | None:
        child.check_alive()
        if time.monotonic() - sent["at"] >= 2.0:
            fake.message(f"first-{sent['attempts']}", channel=CHANNEL, user=USER)
            sent["attempts"] += 1
            sent["at"] = time.monotonic()
        msgs = fake.sent_messages()
        return (msgs[0]["received_at"],) if msgs else None

    try:
        return wait_until(replied, timeout, "a first reply", changes=fake.journal, interval=0.5)[0]
    except TimeoutError:
        raise BenchError(f"{child.name}: connected but answered nothing within "
                         f"{timeout:g} s") from None


def latency_run(fake, child: Child, count: int, warmup: int, timeout: float = 10.0) -> Latency:
    """`warmup` + `count` sequential events (send one, wait for its reply, send the next)."""
    fake.clear()
    samples: list[float] = []
    for i in range(warmup + count):
        token = f"lat-{i}"
        written_at = fake.message(token, channel=CHANNEL, user=USER)
        msgs = _wait_messages(fake, i + 1, child, timeout)
        reply = msgs[i]
        if token_of(reply) != token:
            raise BenchError(f"{child.name}: reply {i} quotes {token_of(reply)!r}, expected {token!r}"
                             f" (text {reply.get('text')!r:.120})")
        if i >= warmup:
            samples.append(reply["received_at"] - written_at)
    return Latency(tuple(samples))


@dataclass(frozen=True)
class Burst:
    """What came back from `count` events pushed back to back."""

    count: int
    pushed: int
    push_s: float            # first push to last push written
    answered: int            # distinct events answered
    duplicates: int          # replies beyond one per event
    first_push_at: float
    last_reply_at: float | None
    waited_s: float          # first push to the end of the wait
    deadline_s: float
    redeliveries: int        # Socket Mode envelopes the fake sent again (ack too late)

    @property
    def missing(self) -> int:
        return self.count - self.answered

    @property
    def replies_per_s(self) -> float:
        if not self.answered or self.last_reply_at is None:
            return 0.0
        return self.answered / (self.last_reply_at - self.first_push_at)


async def _push_all(fake, tokens: list[str], progress: dict) -> None:
    progress["first"] = time.monotonic()
    for token in tokens:
        progress["last"] = await fake.invoke("message", {"text": token, "channel": CHANNEL,
                                                         "user": USER})
        progress["pushed"] += 1


def burst_run(fake, child: Child, count: int, deadline: float, stall: float = 10.0) -> Burst:
    """Push `count` events as fast as the fake writes them, then wait for the replies.

    The wait ends when every event is answered, when nothing new arrived for `stall`
    seconds after the last push, or `deadline` seconds after the first push.
    """
    fake.clear()
    tokens = [f"burst-{i}" for i in range(count)]
    progress = {"pushed": 0, "first": None, "last": None}
    # One coroutine on the fake's own loop writes every event back to back; a control call
    # per event from this thread would pace the burst by the thread hop instead.
    pushing = asyncio.run_coroutine_threadsafe(_push_all(fake, tokens, progress), fake._loop)
    started = time.monotonic()
    seen = {"n": 0, "changed_at": started}

    def over() -> bool:
        now = time.monotonic()
        n = len(fake.sent_messages())
        if n != seen["n"]:
            seen["n"], seen["changed_at"] = n, now
        exited = child.proc is not None and child.proc.poll() is not None
        return exited or (pushing.done() and (n >= count or now - seen["changed_at"] >= stall))

    try:
        wait_until(over, deadline, "the burst's replies", interval=POLL)
    except TimeoutError:
        pass                    # the deadline: what was answered by then is the result
    if not pushing.done():
        pushing.cancel()
    elif pushing.exception() is not None:
        raise BenchError(f"pushing the burst failed: {pushing.exception()!r}")
    ended = time.monotonic()
    msgs = fake.sent_messages()
    wanted = set(tokens)
    answered = {token_of(m) for m in msgs} & wanted
    first = progress["first"] if progress["first"] is not None else started
    last_reply = max((m["received_at"] for m in msgs if token_of(m) in wanted), default=None)
    child.check_alive()
    return Burst(count=count, pushed=progress["pushed"],
                 push_s=(progress["last"] or first) - first, answered=len(answered),
                 duplicates=sum(1 for m in msgs if token_of(m) in wanted) - len(answered),
                 first_push_at=first, last_reply_at=last_reply, waited_s=ended - first,
                 deadline_s=deadline, redeliveries=len(fake.redeliveries()))
