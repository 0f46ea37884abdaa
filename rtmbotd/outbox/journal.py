"""The outbox's durable copy: one store row per output that had to wait.

Every output the router takes gets a `seq` (its tag through router and outbox). One
that is not settled (delivered, or dropped for good) within `HOLD` seconds is written
at the next loop turn after that (at once while there is no link to Slack); settling a
written one deletes its row. Both go to
the writer thread in one batch per turn, so a reply delivered at once never touches
the store and the loop never waits for a commit. After a crash the rows are the
outbox: what waited `HOLD` plus one write is never lost, and only what was in flight
(sent, answer or row deletion not yet in) can be sent twice.

Cluster: the rows are in the shared PostgreSQL store under this node's name. A dead
node's rows are claimed (`claim`, on the writer) and routed like restored ones, after
what this node queued already for their channels. A message that has (or may have) a
row is sent only while the node's heartbeat vouches it is alive (`may_send`, before
`node_until`); after another node took the rows (`session_lost`) the committed ones are
dropped here, since the claimer sends them.
"""
from __future__ import annotations

import dataclasses
import logging
import reprlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from rtmbotd.errors import StoreError
from rtmbotd.outbox.queue import Message
from rtmbotd.outbox.writer import DELETE, OutboxWriter
from rtmbotd.router import Output
from rtmbotd.slack.writes import METHODS, POST

log = logging.getLogger(__name__)

HOLD = 0.25       # s an output may wait before it must be in the store (the bound: 1 s)


@dataclass
class _Entry:
    """One tracked output: its record, and its outbox parts once queued (a long text splits)."""

    seq: int
    record: dict
    due: float
    saved: bool = False               # handed to the writer (its row exists or soon will)
    parts: list = field(default_factory=list)    # queued Messages not settled yet


def record_of(out: Output) -> dict:
    record = {"channel": out.target, "text": out.text, "plugin": out.plugin, "extra": out.extra}
    if out.method != POST:        # rows saved before methods existed have none: chat.postMessage
        record["method"] = out.method
    if out.callback is not None:
        record["callback"] = out.callback
    return record


def _restorable(record: object) -> bool:
    """A saved record the router can take: a dict with a target, text or extra fields, and
    a method rtmbotd knows (none: chat.postMessage)."""
    if not isinstance(record, dict):
        return False
    channel, text, extra = record.get("channel"), record.get("text"), record.get("extra")
    callback = record.get("callback")
    return (isinstance(channel, str) and bool(channel.strip()) and (text is None or isinstance(text, str))
            and (extra is None or isinstance(extra, dict)) and bool(text or extra)
            and record.get("method", POST) in METHODS
            and (callback is None or (isinstance(callback, dict) and isinstance(callback.get("callback"), str))))


class Journal:
    """Loop-side bookkeeping of the durable outbox; store I/O runs on an OutboxWriter."""

    def __init__(self, store: Any, *, writer: OutboxWriter | None = None,
                 wall: Callable[[], float] = time.time, owner: str | None = None,
                 session: str | None = None) -> None:
        self.store = store
        self._next = int(wall() * 1_000_000)        # µs since the epoch: later runs sort after
        self._next_guard = threading.Lock()         # the writer takes seqs for claimed rows too
        self.session = session                      # cluster: this process's session (None: one host)
        self.writer = writer or OutboxWriter(store, owner=owner, session=session, seqs=self.reserve)
        self._entries: dict[int, _Entry] = {}
        self._due: deque[_Entry] = deque()          # unsaved entries, oldest first
        self._changes: dict[int, dict | None] = {}  # this turn's row changes
        self.node_until = float("inf") if session is None else float("-inf")   # cluster: see may_send
        self._suspect: set[int] = set()             # saved before a session_lost; until `taken` says

    def reserve(self, n: int) -> int:
        """The first of `n` fresh seqs (any thread)."""
        with self._next_guard:
            first, self._next = self._next, self._next + n
            return first

    # -- start --------------------------------------------------------------------------
    def restore(self, later: Callable[[list[tuple[int, dict]]], None]) -> list[Output]:
        """The rows an earlier run left, as outputs to route first. When the store cannot be
        read now, the writer reads them before writing anything and calls `later(rows)`
        from its thread; hand those to `adopt` on the loop."""
        try:
            rows = self.store.outbox_rows(self.session) if self.session is not None else self.store.outbox_rows()
        except StoreError as exc:
            log.error("cannot read the saved outbox (%s); new messages are kept in memory, and the saved "
                      "ones are sent once the store can be read", exc)
            self.writer.read_first(later)
            return []
        return self.adopt(rows)

    def adopt(self, rows: list[tuple[int, dict]], whose: str = "the last run") -> list[Output]:
        outputs = []
        self.writer.exists(seq for seq, _ in rows)
        for seq, record in rows:
            if not _restorable(record):
                log.error("outbox: saved message %d is not a message rtmbotd can send (%s); it stays in the "
                          "store, unsent", seq, reprlib.repr(record))
                continue
            self._entries[seq] = _Entry(seq, record, 0.0, saved=True)
            outputs.append(Output(record.get("channel", ""), record.get("text"), dict(record.get("extra") or {}),
                                  record.get("plugin", "?"), seq, record.get("method", POST),
                                  record.get("callback")))
            with self._next_guard:
                self._next = max(self._next, seq + 1)
        if rows:
            log.info("%d message(s) saved by %s will be sent %s", len(rows), whose,
                     "first" if whose == "the last run" else "after those queued here")
        return outputs

    # -- the life of an output ----------------------------------------------------------
    def track(self, out: Output, now: float, *, stuck: bool = False) -> Output:
        """`out` with its journal seq as tag; it is written if still unsettled after HOLD,
        or at this turn's end when it is `stuck` (no link to Slack: it cannot go out soon)."""
        seq = self.reserve(1)
        entry = _Entry(seq, record_of(out), now if stuck else now + HOLD)
        self._entries[seq] = entry
        self._due.append(entry)
        return dataclasses.replace(out, tag=seq)

    def enqueued(self, msg: Message) -> None:
        """The outbox queued a part of a tracked output (Outbox.on_enqueued)."""
        entry = self._entries.get(msg.tag)
        if entry is not None:
            entry.parts.append(msg)

    def settled(self, msg: Message) -> None:
        """A part was delivered or dropped for good (Outbox.on_settled)."""
        entry = self._entries.get(msg.tag)
        if entry is None:
            return
        entry.parts = [m for m in entry.parts if m.seq != msg.seq]
        if not entry.parts:
            self._forget(entry)
            return
        # The rest of a split text: a crash now must not send the delivered parts again.
        rest = entry.parts
        entry.record = {**entry.record, "channel": msg.channel, "text": "\n".join(m.text or "" for m in rest),
                        "extra": dict(rest[0].extra)}
        entry.record.pop("callback", None)      # the first part, which the callback hears of, is delivered
        if entry.saved:
            self._changes[entry.seq] = entry.record

    def dropped(self, out: Output) -> None:
        """The router gave up on an output (unknown target, no DM)."""
        entry = self._entries.get(out.tag)
        if entry is not None:
            self._forget(entry)

    def _forget(self, entry: _Entry) -> None:
        del self._entries[entry.seq]
        if entry.saved:
            self._changes[entry.seq] = DELETE

    # -- cluster: the fence, and rows other nodes take or leave -------------------------
    def may_send(self, msg: Message, now: float) -> bool:
        """Outbox.fence: a message with (perhaps) a row goes out only while this node's
        heartbeat vouches nobody declared it dead and took the row (now < node_until).
        One whose write has not succeeded (PostgreSQL down) has no row: it goes."""
        if msg.tag in self._suspect:
            return False
        entry = self._entries.get(msg.tag)
        return entry is None or not entry.saved or now < self.node_until or not self.writer.may_exist(msg.tag)

    def holds(self, seq: int) -> bool:
        """Output `seq` is still unsettled here."""
        return seq in self._entries

    def drop(self, seqs: Iterable[int]) -> list[Message]:
        """Cluster: outputs given up here (a job's whose lease is gone): their queued parts,
        for the outbox to drop; their rows are deleted."""
        parts: list[Message] = []
        for seq in seqs:
            entry = self._entries.get(seq)
            if entry is not None:
                parts.extend(entry.parts)
                self._forget(entry)
        return parts

    def hold_saved(self) -> None:
        """Hold every message that may have a row until `taken` says whose it is."""
        self._suspect |= {seq for seq, entry in self._entries.items() if entry.saved}

    def session_lost(self, session: str, done: Callable[[set[int]], None]) -> None:
        """Another node declared this one dead (it was hung) and took its committed rows.
        Until the writer says which (`done(seqs)` from its thread: hand them to `taken`),
        nothing that may have a row is sent; this process goes on as `session`."""
        self.session = session
        self.hold_saved()
        self.writer.session_lost(session, done)

    def taken(self, seqs: set[int]) -> list[Message]:
        """The rows another node took: their queued parts, for the outbox to drop."""
        dropped: list[Message] = []
        for seq in seqs:
            entry = self._entries.pop(seq, None)
            if entry is not None:
                dropped.extend(entry.parts)
        self._changes = {seq: change for seq, change in self._changes.items() if seq not in seqs}
        self._suspect.clear()
        if seqs:
            log.warning("outbox: %d saved message(s) are another node's to send now; %d queued part(s) dropped "
                        "here", len(seqs), len(dropped))
        return dropped

    # -- per loop turn ------------------------------------------------------------------
    def flush(self, now: float) -> None:
        """Hand this turn's changes, and every output that waited HOLD, to the writer."""
        due = self._due
        while due and due[0].due <= now:
            entry = due.popleft()
            if entry.seq in self._entries:
                entry.saved = True
                self._changes[entry.seq] = entry.record
        if self._changes:
            changes, self._changes = self._changes, {}
            self.writer.submit(changes)

    def next_deadline(self) -> float | None:
        due = self._due
        while due and due[0].seq not in self._entries:
            due.popleft()
        return due[0].due if due else None

    # -- stop -----------------------------------------------------------------------------
    def close(self, timeout: float) -> int:
        """Write every unsettled output and end the writer; returns how many are kept."""
        self.flush(float("inf"))
        kept = len(self._entries)
        if not self.writer.close(timeout):
            kept = 0
        try:
            self.store.close()
        except StoreError as exc:
            log.error("store: %s", exc)
        return kept
