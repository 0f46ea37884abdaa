"""The outbox journal's one writer thread: store writes happen here, never on the loop.

The loop hands over batches of row changes (`submit`); the thread writes whatever has
accumulated in one transaction, so a busy loop turn costs one commit (one fsync) and an
idle one none. While the store fails (server down, disk full) the changes stay in
memory, newer ones replacing older ones for the same row, and are retried with backoff.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable

from rtmbotd.store.values import to_json      # SQLAlchemy-free

log = logging.getLogger(__name__)

RETRY_BASE, RETRY_CAP = 0.5, 30.0
DELETE = None          # a row change that removes the row


class OutboxWriter:
    """Writes {seq: record | DELETE} changes to `store.write_outbox` on its own thread."""

    def __init__(self, store: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock
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
                while not self._pending and not self._read and not self._closing:
                    self._cond.wait()
                if not self._pending and not self._read:
                    return
                read, batch, new = self._read, {}, set()
                if read is None:
                    batch, self._pending = self._pending, {}
                    new = {seq for seq, change in batch.items() if change is not DELETE} - self._stored
                    self._stored |= new             # may exist once this write starts
                self._busy = True
            try:
                ok = self._read_rows(read) if read is not None else self._write(batch)
            finally:
                with self._cond:
                    self._busy = False
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
            rows = self._store.outbox_rows()
        except Exception as exc:  # noqa: BLE001 - StoreError or a driver bug: retry
            self._failing = str(exc)
            return False
        log.warning("outbox: the saved outbox could be read at last: %d message(s)", len(rows))
        self._failing = None
        with self._cond:
            self._read = None
        done(rows)
        return True

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
            self._store.write_outbox(puts, deletes)
            with self._cond:
                self._stored.difference_update(deletes)
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
