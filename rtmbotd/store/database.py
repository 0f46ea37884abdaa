"""The durable plugin store: one database of every plugin's keys plus the daemon's outbox.

`Store.open(url)` opens an SQLite file or a PostgreSQL database; `Store.plugin(name)`
hands each plugin a `PluginStore` (see store_plugin.py) that sees only its own keys.
A write is durable when the call returns. Every method is thread-safe.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from sqlalchemy import Connection, Engine, delete, func, literal_column, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from rtmbotd.cluster.timing import NODE_TTL
from rtmbotd.store.engine import Backend, open_backend
from rtmbotd.store.errors import (OutboxTakenError, StoreBusyError, StoreCorruptError, StoreError, StoreFullError,
                                  StoreReadOnlyError, StoreUnavailableError, StoreVersionError,
                                  StoreWriteError)
from rtmbotd.store.plugin import ABSENT, PluginStore, put_row
from rtmbotd.store.schema import MIGRATIONS, Migration, kv, nodes, outbox, outbox_rows
from rtmbotd.store.url import resolve_url
from rtmbotd.store.values import check_key, encode, to_json

__all__ = [
    "ABSENT", "PluginStore", "Store", "StoreBusyError", "StoreCorruptError", "StoreError", "StoreFullError",
    "StoreReadOnlyError", "StoreUnavailableError", "StoreVersionError", "StoreWriteError",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_DELETE_CHUNK = 500      # seqs per DELETE ... IN (...): well under any driver's parameter limit


def _decoded(rows: Iterable[Any]) -> list[tuple[int, dict]]:
    """(seq, record JSON text) rows as (seq, record); a damaged or hand-edited row costs only itself."""
    out = []
    for seq, record in rows:
        try:
            out.append((seq, json.loads(record)))
        except ValueError as exc:
            log.error("store: outbox row %d is not JSON (%s); it stays in rtmbot_outbox_rows, unsent", seq, exc)
    return out


@dataclass
class _Tx:
    """The write transaction open on one thread, joined by every call on that thread."""

    conn: Connection
    locked: set[str] = field(default_factory=set)


class Store:
    """One open database holding every plugin's keys and the daemon's outbox."""

    problem: str | None = None
    """What keeps the store from working, for the status line (see rtmbotd.store.lazy)."""
    recorder: Any = None
    """The daemon's metrics (rtmbotd.metrics.Recorder): told of each outermost operation."""

    def __init__(self, backend: Backend, outbox_owner: str) -> None:
        self._backend = backend
        self.outbox_owner = outbox_owner
        self._plugins: dict[str, PluginStore] = {}
        self._plugins_guard = threading.Lock()
        self._local = threading.local()
        self._closed = False

    @classmethod
    def open(cls, url: str | URL | None, base_path: Path | str | None = None, synchronous: str = "FULL", *,
             env: Mapping[str, str] | None = None, outbox_owner: str | None = None, create: bool = True,
             lock_timeout: float = 120.0, migrations: Sequence[Migration] = MIGRATIONS) -> "Store":
        """Open (creating and upgrading as needed) the store at `url`; raises StoreError.

        `url` None means `rtmbot.sqlite` in $STATE_DIRECTORY, else in `base_path`.
        `outbox_owner` names this daemon's outbox when several share a PostgreSQL store
        (default: the host name there, "local" for SQLite). `migrations` is a test seam.
        """
        resolved = resolve_url(url, base_path, env)
        backend = open_backend(resolved, synchronous, lock_timeout, create, tuple(migrations))
        if outbox_owner is None:
            outbox_owner = "local" if backend.kind == "sqlite" else socket.gethostname()
        store = cls(backend, outbox_owner)
        log.info("store: %s", store.describe())
        return store

    # -- the database as a whole ----------------------------------------------------
    @property
    def engine(self) -> Engine:
        return self._backend.engine

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self._backend.kind

    def describe(self) -> str:
        """What the store is, for logs: URL without password, journal and sync mode."""
        return self._backend.describe()

    def plugin(self, name: str) -> PluginStore:
        """The store of plugin `name` (one object per name, shared by its threads)."""
        with self._plugins_guard:
            ps = self._plugins.get(name)
            if ps is None:
                ps = self._plugins[name] = PluginStore(self, name)
            return ps

    def plugin_names(self) -> list[str]:
        """Every plugin with at least one key, sorted."""
        return self._read("", lambda c: list(c.scalars(select(kv.c.plugin).distinct().order_by(kv.c.plugin))))

    def dump(self, plugin: str | None = None) -> dict[str, dict[str, Any]]:
        """{plugin: {key: value}} for every plugin (or just `plugin`), read atomically."""
        stmt = select(kv.c.plugin, kv.c.key, kv.c.value).order_by(kv.c.plugin, kv.c.key)
        if plugin is not None:
            stmt = stmt.where(kv.c.plugin == plugin)
        out: dict[str, dict[str, Any]] = {}
        for name, key, value in self._read("dump", lambda c: c.execute(stmt).all()):
            out.setdefault(name, {})[key] = json.loads(value)
        return out

    def load(self, data: Mapping[str, Mapping[str, Any]], replace: bool = False,
             refused: list[str] | None = None) -> int:
        """Merge a `dump()`-shaped mapping in one atomic write; `replace` first empties
        the plugins it names. Returns the number of keys written.

        A plugin, key or value that cannot be stored raises TypeError naming it, and
        nothing is written. Given a list as `refused`, each such item is described in it
        and left as it is in the store (`replace` keeps a key whose new value was
        refused), and the rest is written."""
        rows: dict[str, list[tuple[str, str]]] = {}
        kept: dict[str, list[str]] = {}

        def refuse(exc: TypeError) -> None:
            if refused is None:
                raise exc
            refused.append(str(exc))
        for name, keys in data.items():
            try:
                check_key(name, "plugin names")
                if not isinstance(keys, Mapping):
                    raise TypeError(f"load: plugin {name!r}: expected a mapping of key to value, "
                                    f"got {type(keys).__name__}")
            except TypeError as exc:
                refuse(exc)
                continue
            rows[name], kept[name] = [], []
            for key, value in keys.items():
                try:
                    check_key(key, f"plugin {name!r}: keys")
                except TypeError as exc:
                    refuse(exc)
                    continue
                try:
                    rows[name].append((key, to_json(value, f"plugin {name!r} key {key!r}")))
                except TypeError as exc:
                    refuse(exc)
                    kept[name].append(key)

        def write(conn: Connection) -> int:
            for name, pairs in rows.items():
                if replace:
                    conn.execute(delete(kv).where(kv.c.plugin == name, kv.c.key.not_in(kept[name])))
                for key, value in pairs:
                    put_row(conn, name, key, value)
            return sum(len(p) for p in rows.values())
        if not rows:
            return 0
        return self._write("load", ["kv:" + name for name in rows], write)

    def close(self) -> None:
        """Release connections; later calls raise StoreError."""
        self._closed = True
        self._backend.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the daemon's durable outbox: one row per queued message ----------------------
    def _outbox_lock(self) -> str:
        return "\0outbox:" + self.outbox_owner

    def outbox_rows(self, session: str | None = None) -> list[tuple[int, dict]]:
        """Every saved message as (seq, record), in send order. A version-1 outbox (saved
        whole by an older rtmbotd at its stop) is moved into the rows first, ahead of them.

        Cluster (`session` given): read in one transaction holding this node's rtmbot_nodes
        row, which must still name `session` (else OutboxTakenError), so no other node can
        claim the rows while they are read."""
        if session is None:
            legacy = self._read("outbox", lambda c: c.execute(self._legacy_rows()).all())
            if legacy:
                self._write("outbox", self._outbox_lock(), lambda c: self._adopt_legacy(c, legacy))
            rows = self._read("outbox", lambda c: c.execute(self._own_rows()).all())
        else:
            def read(conn: Connection) -> Sequence[Any]:
                self._hold_session(conn, session, exclusive=True)
                legacy = conn.execute(self._legacy_rows()).all()
                if legacy:
                    self._adopt_legacy(conn, legacy)
                return conn.execute(self._own_rows()).all()
            rows = self._write("outbox", self._outbox_lock(), read)
        return _decoded(rows)

    def _legacy_rows(self) -> Any:
        return select(outbox.c.seq, outbox.c.record).where(outbox.c.owner == self.outbox_owner).order_by(outbox.c.seq)

    def _own_rows(self) -> Any:
        return (select(outbox_rows.c.seq, outbox_rows.c.record).where(outbox_rows.c.owner == self.outbox_owner)
                .order_by(outbox_rows.c.seq))

    def _hold_session(self, conn: Connection, session: str, *, exclusive: bool = False) -> None:
        """Cluster: lock this node's rtmbot_nodes row until the commit; OutboxTakenError when
        it no longer names `session` (another node declared this one dead and took its rows)."""
        found = conn.execute(select(nodes.c.session).where(nodes.c.name == self.outbox_owner)
                             .with_for_update(read=not exclusive)).scalar()
        if found != session:
            raise OutboxTakenError(f"{self._backend.where}: the outbox of node {self.outbox_owner!r} belongs to "
                                   f"another process now ({found or 'no node row'}); nothing was written")

    def _adopt_legacy(self, conn: Connection, legacy: Sequence[Any]) -> None:
        first = conn.execute(select(outbox_rows.c.seq).where(outbox_rows.c.owner == self.outbox_owner)
                             .order_by(outbox_rows.c.seq).limit(1)).scalar()
        base = (first if first is not None else 0) - len(legacy)
        conn.execute(outbox_rows.insert(), self._row_values(
            [(base + i, str(json.loads(rec).get("channel", "")), rec) for i, (_, rec) in enumerate(legacy)]))
        conn.execute(delete(outbox).where(outbox.c.owner == self.outbox_owner))
        log.info("store: moved %d message(s) saved by an older rtmbotd into rtmbot_outbox_rows", len(legacy))

    def _row_values(self, rows: Sequence[tuple[int, str, str]]) -> list[dict]:
        now = time.time()
        return [{"owner": self.outbox_owner, "seq": seq, "channel": channel, "record": record, "created_at": now}
                for seq, channel, record in rows]

    def write_outbox(self, puts: Sequence[tuple[int, str, str]], deletes: Iterable[int] = (),
                     session: str | None = None) -> None:
        """One atomic batch: rows (seq, channel, record JSON text) added or replaced, and
        rows `deletes` removed (absent ones are fine). Cluster (`session` given): only
        while this node's rtmbot_nodes row names `session`, else OutboxTakenError."""
        gone = sorted(set(deletes) | {seq for seq, _, _ in puts})
        values = self._row_values(puts)

        def write(conn: Connection) -> None:
            if session is not None:
                self._hold_session(conn, session)
            for i in range(0, len(gone), _DELETE_CHUNK):
                conn.execute(delete(outbox_rows).where(outbox_rows.c.owner == self.outbox_owner,
                                                       outbox_rows.c.seq.in_(gone[i:i + _DELETE_CHUNK])))
            if values:
                conn.execute(outbox_rows.insert(), values)
        if gone:
            self._write("outbox", self._outbox_lock(), write)

    def claim_outbox(self, dead_name: str, me: str, session: str, *, node_ttl: float = NODE_TTL,
                     seqs: Callable[[int], int] | None = None) -> list[tuple[int, dict]]:
        """Cluster: move the outbox of node `dead_name` to node `me` (whose rtmbot_nodes row
        must name `session`) and return the moved messages as (seq, record), in order.

        One transaction: the dead node's row is locked (`FOR UPDATE SKIP LOCKED`) only if
        its heartbeat is older than `node_ttl` by PostgreSQL's clock and it was not claimed
        already; its rows become `me`'s, renumbered from `seqs(n)` when given (the claimer's
        journal hands out seqs that collide with nothing it holds), else kept unless a seq
        is `me`'s already; its session becomes 'claimed by <me>', so the dead process, if it
        was only hung, finds its session replaced and writes nothing more. [] when it is
        alive or was taken already; StoreBusyError, never a wait, while it is inside its
        own outbox write (hung there), its row is locked (another claimer, its restore) or
        `me`'s own heartbeat is older than `node_ttl`: try again later."""
        if self.dialect != "postgresql":
            raise StoreError(f"{self._backend.where}: claiming another node's outbox needs PostgreSQL")

        def claim(conn: Connection) -> list[tuple[int, str, str, float]]:
            if not self._backend.try_lock(conn, "\0outbox:" + dead_name):   # hung inside its own write?
                raise StoreBusyError(f"{self._backend.where}: node {dead_name!r} is writing its outbox; "
                                     "claiming it waits")
            now = literal_column("extract(epoch from clock_timestamp())")
            mine = conn.execute(select(nodes.c.session, nodes.c.heartbeat_at >= now - node_ttl)
                                .where(nodes.c.name == me).with_for_update(read=True)).first()
            if mine is None or mine[0] != session:
                raise OutboxTakenError(f"{self._backend.where}: node {me!r} is not this process any more "
                                       f"({mine[0] if mine else 'no node row'}); it claims nothing")
            if not mine[1]:        # this node may be declared dead itself: not now, but later (not [])
                raise StoreBusyError(f"{self._backend.where}: node {me!r}'s own heartbeat is too old to claim "
                                     f"node {dead_name!r}'s outbox; claiming it waits")
            if conn.execute(select(nodes.c.name).where(nodes.c.name == dead_name)
                            .with_for_update(skip_locked=True)).first() is None:
                raise StoreBusyError(f"{self._backend.where}: node {dead_name!r}'s row is locked (another claimer, "
                                     "or the node reading its outbox at start); claiming it waits")
            dead = conn.execute(select(nodes.c.role).where(
                nodes.c.name == dead_name, nodes.c.heartbeat_at < now - node_ttl,
                nodes.c.session.not_like("claimed by %"))).first()
            if dead is None:
                return []                                  # alive, or taken already
            rows = conn.execute(select(outbox_rows.c.seq, outbox_rows.c.channel, outbox_rows.c.record,
                                       outbox_rows.c.created_at).where(outbox_rows.c.owner == dead_name)
                                .order_by(outbox_rows.c.seq)).all()
            if not rows and dead.role == "stopped":
                return []                                  # stopped cleanly, nothing left: nothing to take
            if seqs is not None and rows:
                first = seqs(len(rows))
                renumbered = [first + i for i in range(len(rows))]
            else:
                renumbered = [r.seq for r in rows]
                if rows and conn.execute(select(outbox_rows.c.seq).where(
                        outbox_rows.c.owner == me, outbox_rows.c.seq.in_(renumbered)).limit(1)).first():
                    top = conn.execute(select(func.max(outbox_rows.c.seq)).where(outbox_rows.c.owner == me)).scalar()
                    renumbered = [max(top, rows[-1].seq) + 1 + i for i in range(len(rows))]
            conn.execute(delete(outbox_rows).where(outbox_rows.c.owner == dead_name))
            if rows:
                conn.execute(outbox_rows.insert(), [
                    {"owner": me, "seq": seq, "channel": r.channel, "record": r.record, "created_at": r.created_at}
                    for seq, r in zip(renumbered, rows)])
            conn.execute(nodes.update().where(nodes.c.name == dead_name).values(session="claimed by " + me))
            return [(seq, r.record) for seq, r in zip(renumbered, rows)]
        moved = self._write("outbox", "\0outbox:" + me, claim)
        if moved:
            log.warning("store: took over %d unsent message(s) of node %s", len(moved), dead_name)
        return _decoded(moved)

    def save_outbox(self, records: list[dict]) -> None:
        """Replace the saved outbox with `records` (in order), atomically."""
        rows = []
        for seq, record in enumerate(records, 1):
            if not isinstance(record, dict):
                raise TypeError(f"outbox record {seq}: must be a dict, not {type(record).__name__}")
            rows.append((seq, str(record.get("channel", "")), encode(f"outbox[{seq}]", record)))

        def write(conn: Connection) -> None:
            conn.execute(delete(outbox).where(outbox.c.owner == self.outbox_owner))
            conn.execute(delete(outbox_rows).where(outbox_rows.c.owner == self.outbox_owner))
            if rows:
                conn.execute(outbox_rows.insert(), self._row_values(rows))
        self._write("outbox", self._outbox_lock(), write)

    def load_outbox(self) -> list[dict]:
        """The saved records, in order ([] when none)."""
        return [record for _, record in self.outbox_rows()]

    def clear_outbox(self) -> None:
        def write(conn: Connection) -> None:
            conn.execute(delete(outbox).where(outbox.c.owner == self.outbox_owner))
            conn.execute(delete(outbox_rows).where(outbox_rows.c.owner == self.outbox_owner))
        self._write("outbox", self._outbox_lock(), write)

    # -- execution: join this thread's transaction or run alone ------------------------
    def _active(self) -> _Tx | None:
        if self._closed:
            raise StoreError(f"{self._backend.where}: the store is closed")
        return getattr(self._local, "tx", None)

    def _failed(self, exc: DBAPIError, who: str) -> StoreError:
        error = self._backend.translate(exc, f"{self._backend.where}: {who}" if who else self._backend.where)
        log.error("store: %s", error)
        return error

    @contextmanager
    def _operation(self, who: str, tx: _Tx | None) -> Iterator[None]:
        """A database error becomes a StoreError; an operation outside a transaction (a
        read, a write, a whole transaction) is timed for the metrics."""
        started, ok = time.monotonic(), True
        try:
            yield
        except DBAPIError as exc:
            ok = False
            raise self._failed(exc, who) from None
        finally:
            if tx is None and self.recorder is not None:
                self.recorder.store_operation(time.monotonic() - started, ok)

    def _read(self, who: str, fn: Callable[[Connection], T]) -> T:
        tx = self._active()
        with self._operation(who, tx):
            return fn(tx.conn) if tx else self._backend.read(fn)

    def _write(self, who: str, locks: str | Sequence[str], fn: Callable[[Connection], T]) -> T:
        tx = self._active()
        with self._operation(who, tx):
            if tx is None:
                return self._backend.write(locks, fn)
            for lock in sorted({locks} if isinstance(locks, str) else set(locks)):
                if lock not in tx.locked:
                    self._backend.lock(tx.conn, lock)
                    tx.locked.add(lock)
            return fn(tx.conn)

    @contextmanager
    def _transaction(self, who: str, lock: str) -> Iterator[None]:
        tx = self._active()
        if tx is not None:                       # nested: a savepoint inside the open one
            try:
                if lock not in tx.locked:
                    self._backend.lock(tx.conn, lock)
                    tx.locked.add(lock)
                savepoint = tx.conn.begin_nested()
            except DBAPIError as exc:
                raise self._failed(exc, who) from None
            try:
                yield
            except BaseException:
                savepoint.rollback()
                raise
            savepoint.commit()
            return
        with self._operation(who, None):
            with self._backend.transaction(lock) as conn:
                self._local.tx = _Tx(conn, {lock})
                try:
                    yield
                finally:
                    self._local.tx = None
