"""Typed store errors, and the mapping from driver exceptions to them.

A plugin sees one of these (never a raw `database is locked`); each message says
which store and what to do about it.
"""
from __future__ import annotations

import os
from pathlib import Path

from rtmbotd.errors import StoreError

__all__ = [
    "StoreError", "StoreBusyError", "StoreCorruptError", "StoreFullError", "StoreReadOnlyError",
    "StoreSchemaWaitError", "StoreUnavailableError", "StoreUnreachableError", "StoreVersionError",
    "StoreWriteError", "filesystem_problem", "is_transient", "translate",
]


class StoreBusyError(StoreError):
    """Another process held the database lock longer than the store's lock timeout."""


class StoreCorruptError(StoreError):
    """The database file is damaged or is not a database at all."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached or read (server down, I/O error, cannot open)."""


class StoreUnreachableError(StoreUnavailableError):
    """The database server cannot be connected to: down, starting up, unknown host,
    refused, timed out, or it refused the login. A later attempt may succeed."""

    def __init__(self, where: str, detail: str, password_involved: bool = False) -> None:
        # password_involved: the server wanted a password; a wrong one needs a restart to fix.
        self.where = where
        self.detail = detail
        self.password_involved = password_involved
        hint = ("; if it is the login, check the user and password in STORE_URL (or ~/.pgpass) and the "
                "server's role" if password_involved else "")
        super().__init__(f"{where}: cannot reach the database ({detail}){hint}")


class StoreSchemaWaitError(StoreUnreachableError):
    """A schema upgrade older nodes cannot live with waits until they stopped (retried
    like an unreachable server: the daemon starts, says so in STATUS, tries again)."""

    def __init__(self, where: str, detail: str) -> None:
        StoreError.__init__(self, f"{where}: {detail}")
        self.where, self.detail, self.password_involved = where, detail, False


class StoreVersionError(StoreError):
    """The database was written by a newer rtmbotd than this one."""


class StoreWriteError(StoreError):
    """A write was refused; nothing of it was stored and earlier data is intact."""


class StoreFullError(StoreWriteError):
    """The disk (or tablespace) holding the store is full."""


class StoreReadOnlyError(StoreWriteError):
    """The database is read-only (read-only mount, permissions, standby server)."""


# SQLite primary result codes (https://sqlite.org/rescode.html).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26

# PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock, lock not available.
_PG_TRANSIENT = {"40001", "40P01", "55P03"}


def _orig(exc: BaseException) -> BaseException:
    """The driver's exception under SQLAlchemy's wrapper."""
    return getattr(exc, "orig", None) or exc


def _sqlite_code(orig: BaseException) -> int | None:
    code = getattr(orig, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _is_a(orig: BaseException, name: str) -> bool:
    """Whether the driver's exception is a PEP 249 `name` (OperationalError, DataError...)."""
    return any(cls.__name__ == name for cls in type(orig).__mro__)


def _password_involved(orig: BaseException) -> bool:
    """psycopg: the server asked for a password and none was given, or one was used on a
    connection that failed (libpq tells no more: the reason is only in its message)."""
    pgconn = getattr(orig, "pgconn", None)
    return bool(pgconn is not None and (getattr(pgconn, "needs_password", False)
                                        or getattr(pgconn, "used_password", False)))


def is_transient(exc: BaseException) -> bool:
    """True for lock contention that a retry after a short wait resolves."""
    orig = _orig(exc)
    if type(orig).__module__.startswith("sqlite3"):
        return _sqlite_code(orig) in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return getattr(orig, "sqlstate", None) in _PG_TRANSIENT


def translate(exc: BaseException, where: str) -> StoreError:
    """A typed StoreError for a driver exception; `where` names the store (and key)."""
    orig = _orig(exc)
    detail = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if type(orig).__module__.startswith("sqlite3"):
        code = _sqlite_code(orig)
        if code == _SQLITE_FULL:
            return StoreFullError(f"{where}: disk full, nothing was written ({detail}); free space on that filesystem")
        if code == _SQLITE_READONLY:
            return StoreReadOnlyError(f"{where}: the database is read-only, nothing was written ({detail}); "
                                      "check the file's owner and mode and that its filesystem is mounted read-write")
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return StoreCorruptError(f"{where}: the database is damaged ({detail})")
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StoreBusyError(f"{where}: the database stayed locked by another connection ({detail})")
        if code in (_SQLITE_IOERR, _SQLITE_CANTOPEN):
            return StoreUnavailableError(f"{where}: {detail}")
        return StoreError(f"{where}: {detail}")
    state = getattr(orig, "sqlstate", None) or ""
    if state.startswith("53"):                          # insufficient resources: disk full, out of memory
        return StoreFullError(f"{where}: the database server is out of space or resources, nothing was written ({detail})")
    if state == "25006":
        return StoreReadOnlyError(f"{where}: the database server is read-only, nothing was written ({detail})")
    if state in ("XX001", "XX002"):
        return StoreCorruptError(f"{where}: the database server reports damaged data ({detail})")
    if state in _PG_TRANSIENT:
        return StoreBusyError(f"{where}: lock contention persisted ({detail})")
    # Connection exceptions (08), the server shutting down or starting up (57P0x), and
    # what the driver raises when it has no server to ask (no SQLSTATE at all).
    if state.startswith(("08", "57P")) or (not state and _is_a(orig, "OperationalError")):
        return StoreUnreachableError(where, detail, password_involved=_password_involved(orig))
    if state.startswith("57") or (not state and _is_a(orig, "InterfaceError")):
        return StoreUnavailableError(f"{where}: {detail}")
    return StoreError(f"{where}: {detail}")


def filesystem_problem(path: Path) -> tuple[type[StoreError], str] | None:
    """Why the SQLite file at `path` cannot be written, if the filesystem says so."""
    folder = path.parent
    try:
        fs = os.statvfs(folder)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return StoreReadOnlyError, f"the filesystem holding {folder} is mounted read-only"
    if fs.f_bfree == 0 or (fs.f_bavail == 0 and os.geteuid() != 0):
        return StoreFullError, f"no space left on the filesystem holding {folder}"
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), folder):
        if candidate.exists() and not os.access(candidate, os.W_OK):
            st = candidate.stat()
            return StoreReadOnlyError, (f"{candidate} is not writable by uid {os.geteuid()} "
                                        f"(owner uid {st.st_uid}, mode {st.st_mode & 0o7777:o})")
    return None
