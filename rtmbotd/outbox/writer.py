"""The outbox journal's one writer thread: store writes happen here, never on the loop.

The loop hands over batches of row changes (`submit`); the thread writes whatever has
accumulated in one transaction, so a busy loop turn costs one commit (one fsync) and an
idle one none. While the store fails (server down, disk full) the changes stay in
memory, newer ones replacing older ones for the same row, and are retried with backoff.

Cluster: every write and read holds this node's rtmbot_nodes row under its `session`;
the thread also claims dead nodes' rows (`claim`) and, after another node took this
one's rows (`session_lost`), tells which seqs were committed (the claimer sends those).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable

from rtmbotd.store.errors import OutboxTakenError, StoreBusyError   # SQLAlchemy-free, as values
from rtmbotd.store.values import to_json

log = logging.getLogger(__name__)

RETRY_BASE, RETRY_CAP = 0.5, 30.0
DELETE = None          # a row change that removes the row


class OutboxWriter:
    """Writes {seq: record | DELETE} changes to `store.write_outbox` on its own thread."""

    def __init__(self, store: Any, *, clock: Callable[[], float] = time.monotonic, owner: str | None = None,
                 session: str | None = None, seqs: Callable[[int], int] | None = None) -> None:
        self._store = store
        self._clock = clock
        self._owner = owner          # cluster: this node's name, claiming others' rows
        self._session = session      # cluster: every write checks this node's row names it
        self._seqs = seqs            # cluster: hands out `n` fresh seqs for claimed rows
        self._claims: list[tuple[str, Callable[[str, list[tuple[int, dict]]], None]]] = []
        # A claim that must wait (the dead node hung inside its own write, a driver error)
        # is tried again from `_claim_at` on, with its own backoff: our own rows never wait on it.
        self._claim_at = 0.0
        self._claim_delay = RETRY_BASE
        self._takeover: tuple[str, Callable[[set[int]], None]] | None = None
        self._taken = False          # a write found this node's rows claimed: wait for session_lost
        self._pending: dict[int, dict | None] = {}
        # Rows that may exist: committed puts, rows read at start, puts being written. A
        # deletion of any other row cancels its pending put instead: while the store is
        # down, a message delivered meanwhile leaves nothing behind in memory.
        self._stored: set[int] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._close_by = float("inf")
        self._busy = False
        self._tried_at_close = False
        self._read: Callable[[list[tuple[int, dict]]], None] | None = None
        self._failing: str | None = None

    def submit(self, changes: dict[int, dict | None]) -> None:
        """Queue row changes (a later change to a row replaces an earlier one); never blocks on I/O."""
        if not changes:
            return
        with self._cond:
            for seq, change in changes.items():
                if change is DELETE and seq not in self._stored:
                    self._pending.pop(seq, None)     # never written: nothing to delete
                else:
                    self._pending[seq] = change
            if self._pending:
                self._wake()

    def exists(self, seqs: Iterable[int]) -> None:
        """Rows that are in the store already (read at start): their deletions must be written."""
        with self._cond:
            self._stored.update(seqs)

    def may_exist(self, seq: int) -> bool:
        """Cluster fence: row `seq` is committed, being written or was read at start."""
        with self._cond:
            return seq in self._stored

    @property
    def waiting(self) -> int:
        """Row changes not written yet."""
        with self._cond:
            return len(self._pending)

    def read_first(self, done: Callable[[list[tuple[int, dict]]], None]) -> None:
        """Read the saved rows before any write (retrying while the store fails); `done(rows)`
        runs on the writer's thread. For a store that could not be read at start."""
        with self._cond:
            self._read = done
            self._wake()

    def session_kw(self) -> dict:
        return {} if self._session is None else {"session": self._session}

    def claim(self, dead_name: str, done: Callable[[str, list[tuple[int, dict]]], None]) -> None:
        """Cluster: take node `dead_name`'s rows (retried while the store fails); `done(name,
        rows)` runs on the writer's thread with the moved messages, now this node's."""
        with self._cond:
            if all(name != dead_name for name, _ in self._claims):
                self._claims.append((dead_name, done))
                self._claim_at = 0.0                 # a new one is tried at once
            self._wake()

    def session_lost(self, session: str, done: Callable[[set[int]], None]) -> None:
        """Cluster: another node took this one's committed rows. Between two writes, the
        thread forgets them (their changes too), writes the rest under the new `session`,
        and calls `done(taken_seqs)` on its thread."""
        with self._cond:
            self._takeover = (session, done)
            self._wake()

    def _has_work(self) -> bool:
        return bool(self._takeover or self._read or (not self._taken and (self._pending or self._claim_due())))

    def _claim_due(self) -> bool:
        return bool(self._claims) and self._clock() >= self._claim_at

    def _idle_wait(self) -> float | None:
        """How long the idle thread may sleep: until a waiting claim is due, else until woken."""
        if self._claims and not self._taken:
            return max(0.0, self._claim_at - self._clock())
        return None

    def _take_over(self) -> tuple[Callable[[set[int]], None], set[int]]:
        """With the lock held, no write running: what was committed is the claimer's now."""
        (self._session, done), self._takeover = self._takeover, None
        taken, self._stored = self._stored, set()
        for seq in taken:
            self._pending.pop(seq, None)     # a deletion or new version of a row that is not ours
        self._taken = False
        return done, taken

    def _wake(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rtmbotd-outbox-writer", daemon=True)
            self._thread.start()
        self._cond.notify()

    @property
    def idle(self) -> bool:
        """Nothing waits to be written and no write is running."""
        with self._cond:
            return not self._pending and not self._busy

    def _run(self) -> None:
        delay = RETRY_BASE
        while True:
            with self._cond:
                while not self._has_work() and not self._closing:
                    self._cond.wait(self._idle_wait())
                if not self._has_work():
                    return
                if self._takeover is not None:
                    done, taken = self._take_over()
                    self._cond.release()
                    try:
                        done(taken)
                    finally:
                        self._cond.acquire()
                    continue
                read, batch, new = self._read, {}, set()
                # Our own rows first: a claim may have to wait a long time (see _claim_at).
                claim = self._claims[0] if read is None and not self._pending and self._claim_due() else None
                if read is None and claim is None:
                    batch, self._pending = self._pending, {}
                    new = {seq for seq, change in batch.items() if change is not DELETE} - self._stored
                    self._stored |= new             # may exist once this write starts
                self._busy = True
            try:
                if read is not None:
                    ok = self._read_rows(read)
                elif claim is not None:
                    ok = self._claim(*claim)
                else:
                    ok = self._write(batch)
            finally:
                with self._cond:
                    self._busy = False
            if ok is None:
                continue                             # a claim that waits: retried on its own clock
            if ok:
                delay = RETRY_BASE
                continue
            with self._cond:
                self._stored -= new                  # the batch is one transaction: none of it is in
                for seq, change in batch.items():
                    newer = self._pending.get(seq, change)     # a change queued since is newer: it wins
                    if newer is DELETE and seq not in self._stored:
                        self._pending.pop(seq, None)
                    else:
                        self._pending[seq] = newer
                if self._taken:
                    continue                         # no retry: it waits for session_lost
                retry_at = self._clock() + delay
                while self._clock() < retry_at:
                    if self._clock() >= self._close_by:
                        return                       # the stop's deadline: close() reports what is left
                    if self._closing and not self._tried_at_close:
                        self._tried_at_close = True  # the stop tries once at once, not after a long backoff
                        break
                    self._cond.wait(min(retry_at, self._close_by) - self._clock())
            delay = min(RETRY_CAP, delay * 2)

    def _read_rows(self, done: Callable[[list[tuple[int, dict]]], None]) -> bool:
        try:
            rows = self._store.outbox_rows(**self.session_kw())
        except Exception as exc:  # noqa: BLE001 - StoreError or a driver bug: retry
            self._failing = str(exc)
            return False
        log.warning("outbox: the saved outbox could be read at last: %d message(s)", len(rows))
        self._failing = None
        with self._cond:
            self._read = None
        done(rows)
        return True

    def _claim(self, dead_name: str, done: Callable[[str, list[tuple[int, dict]]], None]) -> bool | None:
        """True: claimed; False: fenced (OutboxTakenError); None: try again later (`_claim_at`)."""
        try:
            rows = self._store.claim_outbox(dead_name, self._owner, self._session, seqs=self._seqs)
        except OutboxTakenError as exc:
            self._fenced(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - StoreBusyError, StoreError or a driver bug: retry
            if isinstance(exc, StoreBusyError):
                log.info("outbox: %s", exc)
            else:
                log.error("outbox: cannot take over node %s's messages yet (%s); retrying", dead_name, exc)
            with self._cond:
                self._claims = [c for c in self._claims if c[0] != dead_name] + [(dead_name, done)]   # others first
                self._claim_at = self._clock() + self._claim_delay
                self._claim_delay = min(RETRY_CAP, self._claim_delay * 2)
            return None
        with self._cond:
            self._claims = [c for c in self._claims if c[0] != dead_name]
            self._stored.update(seq for seq, _ in rows)
            self._claim_delay = RETRY_BASE
        done(dead_name, rows)
        return True

    def _fenced(self, exc: Exception) -> None:
        if not self._taken:
            log.error("outbox: %s; sending saved messages waits until this node has joined again", exc)
        self._taken = True

    def _write(self, batch: dict[int, dict | None]) -> bool:
        puts: list[tuple[int, str, str]] = []
        deletes: list[int] = []
        for seq, record in batch.items():
            if record is DELETE:
                deletes.append(seq)
                continue
            try:
                puts.append((seq, str(record.get("channel", "")), to_json(record, "the message")))
            except TypeError as exc:
                log.error("outbox: message %d from plugin %s to %s cannot be kept in the store (%s); "
                          "it stays queued in memory only", seq, record.get("plugin", "?"),
                          record.get("channel", "?"), exc)
                deletes.append(seq)              # an older, storable version of it must not come back
        try:
            self._store.write_outbox(puts, deletes, **self.session_kw())
            with self._cond:
                self._stored.difference_update(deletes)
        except OutboxTakenError as exc:
            self._fenced(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - StoreError or a driver bug: keep the changes, retry
            if self._failing is None:
                log.error("outbox: cannot write %d queued change(s) to the store (%s); they are kept in "
                          "memory and written when the store works again", len(batch), exc)
            self._failing = str(exc)
            return False
        if self._failing is not None:
            log.warning("outbox: the store works again; queued messages are saved")
            self._failing = None
        return True

    def close(self, timeout: float) -> bool:
        """Write what is queued (retrying up to `timeout` s) and end the thread; False if some is left."""
        with self._cond:
            self._closing = True
            self._close_by = self._clock() + timeout
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout + 1.0)
        with self._cond:
            left, running = len(self._pending), self._busy
            self._pending.clear()
        if left or running:
            log.error("outbox: %d queued change(s) not written before the stop%s", left,
                      " (a store write is still running)" if running else "")
        return not (left or running)
