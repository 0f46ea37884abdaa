"""Connections, locking and retries under the store, one class per database kind.

SQLite allows one writer per file: writers in this process queue on a process-wide
lock per file, then take SQLite's own lock with BEGIN IMMEDIATE (other processes
wait on busy_timeout, and lock contention is retried with backoff until
`lock_timeout`). Reads run as single autocommit statements and in WAL mode never
wait for a writer. On PostgreSQL every write transaction first takes a
transaction-scoped advisory lock named after what it writes (a plugin's keys, an
outbox), so read-modify-write is isolated across threads and hosts alike.
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError

from rtmbotd.store.errors import (StoreBusyError, StoreCorruptError, StoreError, StoreUnavailableError,
                                  filesystem_problem, is_transient, translate)
from rtmbotd.store.schema import (MIGRATIONS, Migration, compatible_from, newest, refuse_newer, stored_version,
                                  upgrade)
from rtmbotd.store.url import SYNCHRONOUS_LEVELS, display_url, server_options, sqlite_path

log = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT = 5.0                 # seconds SQLite itself waits for a lock, per attempt
CONNECT_TIMEOUT = 10               # seconds libpq waits for a server (unless STORE_URL sets connect_timeout)
_ADVISORY_NAMESPACE = 0x72746D62   # "rtmb": first half of every advisory lock key
_BEGIN_OPTION = "rtmbotd_begin"

_file_locks: dict[str, threading.Lock] = {}
_file_locks_guard = threading.Lock()


def _file_write_lock(key: str) -> threading.Lock:
    """One lock per database file, shared by every Store on it in this process."""
    with _file_locks_guard:
        return _file_locks.setdefault(key, threading.Lock())


class Backend:
    """Runs reads and write transactions against one database, with retries."""

    kind = "?"

    def __init__(self, url: URL, engine: Engine, lock_timeout: float) -> None:
        self.url = url
        self.engine = engine
        self.lock_timeout = lock_timeout
        self.where = display_url(url)

    # -- what subclasses specialise -------------------------------------------------
    def describe(self) -> str:
        return self.where

    def lock(self, conn: Connection, name: str) -> None:
        """Inside a write transaction: take the lock that serializes writers of `name`."""

    @contextmanager
    def _writer_slot(self, deadline: float) -> Iterator[None]:
        yield

    def _begin_write(self, conn: Connection) -> None:
        conn.begin()

    def check(self) -> None:
        """Open-time checks that the database is usable; raises StoreError."""

    def translate(self, exc: DBAPIError, where: str) -> StoreError:
        """The typed error for a driver exception (see store_errors.translate)."""
        return translate(exc, where)

    # -- shared machinery -------------------------------------------------------------
    def _retrying(self, deadline: float, attempt: Callable[[], T]) -> T:
        delay = 0.002
        while True:
            try:
                return attempt()
            except DBAPIError as exc:
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise
                log.debug("%s: lock contention, retrying in %.3fs: %s", self.where, delay, exc.orig)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.25) * random.uniform(0.8, 1.2)

    def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` on a connection outside any transaction (each statement atomic)."""
        def attempt() -> T:
            with self.engine.connect() as conn:
                conn.execution_options(**{_BEGIN_OPTION: None})
                return fn(conn)
        return self._retrying(time.monotonic() + self.lock_timeout, attempt)

    @contextmanager
    def transaction(self, names: str | Sequence[str]) -> Iterator[Connection]:
        """A write transaction holding the write lock(s) for `names`; commits on success."""
        deadline = time.monotonic() + self.lock_timeout
        with self._writer_slot(deadline):
            conn = self._retrying(deadline, lambda: self._connect_and_begin(names))
            try:
                yield conn
                conn.commit()
            except BaseException:
                try:
                    conn.rollback()
                except DBAPIError as exc:
                    log.warning("%s: rollback failed: %s", self.where, exc.orig)
                raise
            finally:
                conn.close()

    def _connect_and_begin(self, names: str | Sequence[str]) -> Connection:
        conn = self.engine.connect()
        try:
            self._begin_write(conn)
            for name in sorted({names} if isinstance(names, str) else set(names)):   # one order: no deadlocks
                self.lock(conn, name)
        except BaseException:
            conn.close()
            raise
        return conn

    def write(self, names: str | Sequence[str], fn: Callable[[Connection], T]) -> T:
        """Run `fn` in its own write transaction; the whole of it is retried on contention."""
        deadline = time.monotonic() + self.lock_timeout

        def attempt() -> T:
            with self.transaction(names) as conn:
                return fn(conn)
        return self._retrying(deadline, attempt)

    def migrate(self, migrations: tuple[Migration, ...] | list[Migration]) -> int:
        """Upgrade the schema in place; an up-to-date database is only read, not locked."""
        current, floor = self.read(_versions)
        refuse_newer(current, self.where, migrations, floor)
        if current >= newest(migrations):
            return current
        return self.write("\0schema", lambda conn: upgrade(conn, self.where, migrations))

    def close(self) -> None:
        self.engine.dispose()


class SQLiteBackend(Backend):
    kind = "sqlite"

    def __init__(self, url: URL, synchronous: str, lock_timeout: float) -> None:
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT, "check_same_thread": False},
                               pool_size=8, max_overflow=-1, pool_timeout=lock_timeout)
        super().__init__(url, engine, lock_timeout)
        self.synchronous = synchronous
        self.path = sqlite_path(url)
        self._lock = _file_write_lock(os.path.realpath(self.path) if self.path else self.where)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, record):  # noqa: ANN001 - SQLAlchemy hook signature
            dbapi_conn.isolation_level = None   # we issue BEGIN ourselves, see _on_begin
            dbapi_conn.execute(f"PRAGMA synchronous={synchronous}")

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # noqa: ANN001
            # Default BEGIN (deferred) for plugins using store.engine directly; the store
            # itself asks for BEGIN IMMEDIATE when writing and for none when reading.
            statement = conn.get_execution_options().get(_BEGIN_OPTION, "BEGIN")
            if statement:
                conn.exec_driver_sql(statement)

    def describe(self) -> str:
        return f"{self.where} (WAL, synchronous={self.synchronous})"

    @contextmanager
    def _writer_slot(self, deadline: float) -> Iterator[None]:
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise StoreBusyError(f"{self.where}: another thread of this process held the write lock "
                                 f"for more than {self.lock_timeout:.0f}s")
        try:
            yield
        finally:
            self._lock.release()

    def _begin_write(self, conn: Connection) -> None:
        conn.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        conn.begin()

    def translate(self, exc: DBAPIError, where: str) -> StoreError:
        # SQLite reports a read-only or full filesystem variously (READONLY, CANTOPEN,
        # IOERR); the filesystem itself says which it is.
        error = translate(exc, where)
        if self.path is None or isinstance(error, (StoreCorruptError, StoreBusyError)):
            return error
        found = filesystem_problem(self.path)
        if found is None:
            return error
        kind, why = found
        return kind(f"{where}: {why}; nothing was written ({getattr(exc, 'orig', exc)})")

    def check(self) -> None:
        hint = ""
        if self.path is not None:
            hint = (f" Stop rtmbotd, move {self.path} and any {self.path.name}-wal/-shm beside it out of the way, "
                    f"then restore a backup (or salvage with: sqlite3 {self.path} .recover | sqlite3 new.sqlite); "
                    "without a file rtmbotd starts an empty store.")

        def attempt() -> tuple[str, list[str]]:
            with self.engine.connect() as conn:
                conn.execution_options(**{_BEGIN_OPTION: None})
                mode = conn.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()
                rows = conn.exec_driver_sql("PRAGMA quick_check(20)")
                problems = [line for row in rows for line in str(row[0]).splitlines()
                            if line.strip() and not line.startswith("***")]
                return str(mode).lower(), problems
        try:
            mode, problems = self._retrying(time.monotonic() + self.lock_timeout, attempt)
        except DBAPIError as exc:
            error = self.translate(exc, self.where)
            if isinstance(error, StoreCorruptError):
                raise StoreCorruptError(f"{error}.{hint}") from None
            raise error from None
        if problems != ["ok"]:
            shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
            raise StoreCorruptError(f"{self.where}: the database is damaged (quick_check: {shown}).{hint}")
        if mode != "wal":
            raise StoreError(f"{self.where}: cannot use WAL journal mode (got {mode!r}); "
                             "is the file on a network filesystem? Put it on a local disk.")


def _key(name: str) -> int:
    """The advisory lock key (second half) for `name`: int4 is signed."""
    key = zlib.crc32(name.encode("utf-8"))
    return key - (1 << 32) if key >= (1 << 31) else key


class PostgresBackend(Backend):
    kind = "postgresql"

    def __init__(self, url: URL, synchronous: str, lock_timeout: float) -> None:
        # Server settings travel in libpq's `options`, merged with any the URL gives.
        settings = [f"-c lock_timeout={int(lock_timeout * 1000)}"]
        if synchronous == "OFF":
            settings.append("-c synchronous_commit=off")
        bare, options = server_options(url, *settings)
        connect_args: dict[str, object] = {"options": options}
        if "connect_timeout" not in url.query:
            # libpq waits forever by default: a host that drops packets would hang the start.
            connect_args["connect_timeout"] = CONNECT_TIMEOUT
        engine = create_engine(bare, connect_args=connect_args,
                               pool_size=5, max_overflow=20, pool_timeout=lock_timeout, pool_pre_ping=True)
        super().__init__(url, engine, lock_timeout)
        self.synchronous = synchronous
        self._version = ""

    def describe(self) -> str:
        return f"{self.where} ({self._version})" if self._version else self.where

    def lock(self, conn: Connection, name: str) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": _ADVISORY_NAMESPACE, "key": _key(name)})

    def try_lock(self, conn: Connection, name: str) -> bool:
        """`lock` without waiting: False when another transaction holds it (cluster: a node
        hung inside its own outbox write must not stall the node claiming its rows)."""
        return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:ns, :key)"),
                                 {"ns": _ADVISORY_NAMESPACE, "key": _key(name)}).scalar())

    def check(self) -> None:
        try:
            version = self.read(lambda conn: conn.exec_driver_sql("SHOW server_version").scalar())
        except DBAPIError as exc:
            raise translate(exc, self.where) from None
        self._version = f"PostgreSQL {str(version).split()[0]}"


def _versions(conn: Connection) -> tuple[int, int]:
    """The stored schema version and the oldest version that can still use the database."""
    current = stored_version(conn)
    return current, compatible_from(conn, current)


def open_backend(url: URL, synchronous: str = "FULL", lock_timeout: float = 120.0, create: bool = True,
                 migrations: tuple[Migration, ...] | list[Migration] = MIGRATIONS) -> Backend:
    """Connect, check and migrate the database at `url`; raises StoreError."""
    synchronous = str(synchronous).upper()
    if synchronous not in SYNCHRONOUS_LEVELS:
        raise StoreError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, got {synchronous!r}")
    backend_name = url.get_backend_name()
    created: Path | None = None
    if backend_name == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            if not path.parent.is_dir():
                raise StoreUnavailableError(f"{display_url(url)}: directory {path.parent} does not exist")
            if not path.exists():
                if not create:
                    raise StoreUnavailableError(f"{display_url(url)}: no store at {path}")
                created = path
        backend: Backend = SQLiteBackend(url, synchronous, lock_timeout)
    elif backend_name == "postgresql":
        try:
            backend = PostgresBackend(url, synchronous, lock_timeout)
        except (ImportError, ArgumentError) as exc:      # ArgumentError: NoSuchModuleError
            raise StoreError(f"{display_url(url)}: cannot load the database driver {url.drivername!r} ({exc}); "
                             "use postgresql:// with psycopg installed (pip install rtmbotd[postgresql])") from None
    else:
        raise StoreError(f"{display_url(url)}: unsupported database {backend_name!r}; use sqlite or postgresql")
    try:
        backend.check()
        if created is not None:
            _give_to_directory_owner(created)
        try:
            backend.migrate(migrations)
        except DBAPIError as exc:
            raise backend.translate(exc, backend.where) from None
    except BaseException:
        backend.close()
        raise
    return backend


def _give_to_directory_owner(path: Path) -> None:
    """A store file root creates (e.g. `rtmbotd store load` before the first start)
    belongs to whoever owns its directory, so the service user can still write it.
    SQLite does the same for its -wal and -shm files."""
    if os.geteuid() != 0:
        return
    st = path.parent.stat()
    if st.st_uid != 0:
        try:
            os.chown(path, st.st_uid, st.st_gid)
        except OSError as exc:
            log.warning("%s: cannot hand the new store to uid %d: %s", path, st.st_uid, exc)
