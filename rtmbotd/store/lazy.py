"""The daemon's store: opened at start only when there is something in it, and
waited for when its database server cannot be reached yet.

SQLAlchemy and an open database cost about 12 MiB resident. With STORE_URL unset the
store is an SQLite file; when that file does not exist yet, nothing was saved by an
earlier run (no plugin keys, no outbox), so the daemon starts without opening it and
opens it on first need: a plugin touching its `store`, or messages to keep at the stop.
The file's directory is checked at start (rtmbotd.store.errors.filesystem_problem, the
check the store uses to explain a failed write); when it could not hold the file, the
store is opened at once so that the start fails with the store's own error.

An existing file, and any STORE_URL, are opened at start: an unusable store (damaged,
newer schema, no permission) stops the start with a clear error, and last run's
undelivered messages are read. A database server that cannot be reached (down, still
starting up after a reboot, unknown host, login refused: StoreUnreachableError) is a
temporary condition instead: the daemon starts with a `RetryingStore` that connects in
the background with backoff, raises StoreUnavailableError meanwhile and says why in
`problem`, which the status line shows.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from rtmbotd.errors import StoreError
from rtmbotd.slack.backoff import Backoff

log = logging.getLogger(__name__)


def open_daemon_store(url: str | None, base_path: Path | str | None, synchronous: str = "FULL",
                      env: Mapping[str, str] | None = None, backoff: Backoff | None = None,
                      recorder: Any = None, outbox_owner: str | None = None) -> Any:
    """A `Store`; a `DeferredStore` for a default SQLite store not created yet; a
    `RetryingStore` when the database server cannot be reached now (raises StoreError
    for a store that cannot work, such as a malformed STORE_URL). The real `Store`,
    whenever it opens, reports its operations to `recorder` (the daemon's metrics)."""
    from rtmbotd.store.errors import StoreUnreachableError
    env = os.environ if env is None else env
    path = _deferrable_path(url, base_path, env)

    def opener() -> Any:
        store = _open(url, base_path, synchronous, env, outbox_owner)
        store.recorder = recorder
        return store
    if path is not None:
        log.info("store: %s does not exist yet; it is created when first needed", path)
        return DeferredStore(opener, path)
    try:
        return opener()
    except StoreUnreachableError as exc:
        log.warning("store: %s; starting without it, retrying in the background", exc)
        return RetryingStore(opener, exc, backoff)


def _open(url: str | None, base_path: Path | str | None, synchronous: str, env: Mapping[str, str],
          outbox_owner: str | None = None) -> Any:
    from rtmbotd.store.database import Store
    return Store.open(url, base_path, synchronous, env=env, outbox_owner=outbox_owner)


def _deferrable_path(url: str | None, base_path: Path | str | None, env: Mapping[str, str]) -> Path | None:
    from rtmbotd.store.errors import filesystem_problem
    from rtmbotd.store.url import DEFAULT_FILENAME, default_directory
    if url is not None and str(url).strip():
        return None
    try:
        folder = default_directory(base_path, env).absolute()
    except Exception:   # noqa: BLE001 - the real open reports it
        return None
    path = folder / DEFAULT_FILENAME
    if path.exists() or not folder.is_dir() or filesystem_problem(path) is not None:
        return None
    return path


class StandInStore:
    """Stands in for `Store` in the daemon until the database is open; the plugins'
    stores it hands out pass every call to the real one."""

    problem: str | None = None
    """What keeps the store from working, for the status line; None when nothing does."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._store: Any = None
        self._lock = threading.Lock()
        self._plugins: dict[str, DeferredPluginStore] = {}
        self._closed = False

    @property
    def opened(self) -> bool:
        return self._store is not None

    def state(self) -> str:
        """A word or two on the database for a plugin store's repr."""
        return "open" if self.opened else "not opened yet"

    def real(self) -> Any:
        """The open Store; raises StoreError when there is none (yet)."""
        raise NotImplementedError

    def _closed_error(self) -> StoreError:
        return StoreError(f"{self.where}: the store is closed")

    def plugin(self, name: str) -> "DeferredPluginStore":
        with self._lock:
            ps = self._plugins.get(name)
            if ps is None:
                ps = self._plugins[name] = DeferredPluginStore(self, name)
            return ps

    def outbox_rows(self) -> list[tuple[int, dict]]:
        """The durable outbox's rows (see Store.outbox_rows); StoreError while there is no store."""
        return self.real().outbox_rows()

    def write_outbox(self, puts: list, deletes: list) -> None:
        """From the outbox's writer thread, which keeps and retries the rows on StoreError."""
        self.real().write_outbox(puts, deletes)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            store, self._store = self._store, None
        if store is not None:
            store.close()

    def __enter__(self) -> "StandInStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeferredStore(StandInStore):
    """The default SQLite store before its file exists: created on first need."""

    def __init__(self, opener: Callable[[], Any], path: Path) -> None:
        super().__init__(str(path))
        self._opener = opener
        self.path = path

    def real(self) -> Any:
        """The open Store, opening it now (raises StoreError; the next call tries again)."""
        with self._lock:
            if self._store is None:
                if self._closed:
                    raise self._closed_error()
                self._store = self._opener()
            return self._store

    def outbox_rows(self) -> list[tuple[int, dict]]:
        # Nothing was saved when the file did not exist at start; only this daemon saves it.
        return self._store.outbox_rows() if self._store is not None else []

    def write_outbox(self, puts: list, deletes: list) -> None:
        """The first message that must be kept creates the file."""
        if puts or self._store is not None:
            self.real().write_outbox(puts, deletes)


class RetryingStore(StandInStore):
    """The store while its database server cannot be reached: every call raises
    StoreUnavailableError until a background thread, retrying with backoff, opens it.

    The daemon's outbox journal's `outbox_rows`/`write_outbox` raise
    StoreUnavailableError until the store opens; the journal's writer then reads last
    run's saved rows first, and writes after that.
    """

    def __init__(self, opener: Callable[[], Any], error: StoreError, backoff: Backoff | None = None) -> None:
        super().__init__(getattr(error, "where", "the store"))
        self._opener = opener
        self._error: StoreError | None = error
        self._backoff = backoff or Backoff(base=1.0, cap=60.0)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._retry, name="rtmbotd-store-connect", daemon=True)
        self._thread.start()

    @property
    def problem(self) -> str | None:  # type: ignore[override]
        from rtmbotd.store.errors import StoreSchemaWaitError, StoreUnreachableError
        error = self._error
        if error is None or self._closed:
            return None
        if isinstance(error, StoreSchemaWaitError):
            return f"store: {error.detail}"
        if not isinstance(error, StoreUnreachableError):
            return f"store unusable ({error}): fix it and restart rtmbotd; retrying"
        if error.password_involved:
            return (f"store unreachable ({error.where}: {error.detail}): if the password in STORE_URL is "
                    "wrong, fix it and restart rtmbotd; retrying")
        return f"store unreachable ({error.where}: {error.detail}), retrying"

    def state(self) -> str:
        return "open" if self.opened else "unreachable, retrying"

    def real(self) -> Any:
        from rtmbotd.store.errors import StoreUnavailableError
        with self._lock:
            if self._store is not None:
                return self._store
            if self._closed:
                raise self._closed_error()
            error = self._error
        raise StoreUnavailableError(f"{error} (rtmbotd keeps retrying in the background)")

    def _retry(self) -> None:
        while not self._stopped.wait(self._backoff.next_delay()):
            try:
                store = self._opener()
            except StoreError as exc:
                level = logging.DEBUG if str(exc) == str(self._error) else logging.WARNING
                log.log(level, "store: still cannot open it: %s", exc)
                self._error = exc
                continue
            except Exception as exc:  # noqa: BLE001 - the thread must live on and keep trying
                log.exception("store: opening it failed unexpectedly")
                self._error = StoreError(f"{self.where}: {type(exc).__name__}: {exc}")
                continue
            with self._lock:
                if not self._closed:
                    self._store, self._error, store = store, None, None
            if store is not None:          # closed while it was being opened
                store.close()
            else:
                log.info("store: the database can be reached now; plugins' stores work")
            return

    def close(self) -> None:
        self._stopped.set()
        super().close()


class DeferredPluginStore:
    """A plugin's `store` (see rtmbotd.store.plugin.PluginStore) handed out by a
    StandInStore; every call goes to the real one, once there is one."""

    def __init__(self, owner: StandInStore, name: str) -> None:
        self._owner = owner
        self.name = name

    def _real(self) -> Any:
        return self._owner.real().plugin(self.name)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self._real(), attr)

    def __repr__(self) -> str:
        return f"<store of plugin {self.name!r}: {self._owner.where}, {self._owner.state()}>"

    def __getitem__(self, key: str) -> Any:
        return self._real()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._real()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._real()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._real()

    def __len__(self) -> int:
        return len(self._real())

    def __iter__(self) -> Iterator[str]:
        return iter(self._real())

    def __eq__(self, other: object) -> bool:
        return self._real() == other

    __hash__ = None  # type: ignore[assignment]  # a mapping, like PluginStore


MutableMapping.register(DeferredPluginStore)
