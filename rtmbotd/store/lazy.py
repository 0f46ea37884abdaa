"""The daemon's store, opened at start only when there is something in it.

SQLAlchemy and an open database cost about 12 MiB resident. With STORE_URL unset the
store is an SQLite file; when that file does not exist yet, nothing was saved by an
earlier run (no plugin keys, no outbox), so the daemon starts without opening it and
opens it on first need: a plugin touching its `store`, or messages to keep at the stop.
The file's directory is checked at start (rtmbotd.store.errors.filesystem_problem, the
check the store uses to explain a failed write); when it could not hold the file, the
store is opened at once so that the start fails with the store's own error.

An existing file, and any STORE_URL, are opened at start as before: an unusable store
stops the start with a clear error, and last run's undelivered messages are read.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Iterator, Mapping

log = logging.getLogger(__name__)


def open_daemon_store(url: str | None, base_path: Path | str | None, synchronous: str = "FULL",
                      env: Mapping[str, str] | None = None) -> Any:
    """A `Store`, or a `DeferredStore` for a default SQLite store not created yet."""
    env = os.environ if env is None else env
    path = _deferrable_path(url, base_path, env)
    if path is not None:
        log.info("store: %s does not exist yet; it is created when first needed", path)
        return DeferredStore(lambda: _open(url, base_path, synchronous, env), path)
    return _open(url, base_path, synchronous, env)


def _open(url: str | None, base_path: Path | str | None, synchronous: str, env: Mapping[str, str]) -> Any:
    from rtmbotd.store.database import Store
    return Store.open(url, base_path, synchronous, env=env)


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


class DeferredStore:
    """Stands in for `Store` in the daemon until something needs the database."""

    def __init__(self, opener: Any, path: Path) -> None:
        self._opener = opener
        self.path = path
        self._store: Any = None
        self._lock = threading.Lock()
        self._plugins: dict[str, DeferredPluginStore] = {}
        self._closed = False

    @property
    def opened(self) -> bool:
        return self._store is not None

    def real(self) -> Any:
        """The open Store, opening it now (raises StoreError; the next call tries again)."""
        with self._lock:
            if self._store is None:
                if self._closed:
                    from rtmbotd.errors import StoreError
                    raise StoreError(f"{self.path}: the store is closed")
                self._store = self._opener()
            return self._store

    def plugin(self, name: str) -> "DeferredPluginStore":
        with self._lock:
            ps = self._plugins.get(name)
            if ps is None:
                ps = self._plugins[name] = DeferredPluginStore(self, name)
            return ps

    def load_outbox(self) -> list[dict]:
        # Nothing was saved when the file did not exist at start; only this daemon saves it.
        return self._store.load_outbox() if self._store is not None else []

    def save_outbox(self, records: list[dict]) -> None:
        self.real().save_outbox(records)

    def clear_outbox(self) -> None:
        if self._store is not None:
            self._store.clear_outbox()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            store, self._store = self._store, None
        if store is not None:
            store.close()

    def __enter__(self) -> "DeferredStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeferredPluginStore:
    """A plugin's `store` (see rtmbotd.store.plugin.PluginStore) that opens the database
    on first use; every call goes to the real one."""

    def __init__(self, owner: DeferredStore, name: str) -> None:
        self._owner = owner
        self.name = name

    def _real(self) -> Any:
        return self._owner.real().plugin(self.name)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self._real(), attr)

    def __repr__(self) -> str:
        state = "open" if self._owner.opened else "not opened yet"
        return f"<store of plugin {self.name!r}: {self._owner.path}, {state}>"

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
