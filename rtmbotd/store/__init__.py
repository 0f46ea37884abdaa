"""The plugin store: one database (SQLite or PostgreSQL, through SQLAlchemy) of every
plugin's keys and the daemon's outbox.

The public face is named here and loaded lazily (PEP 562): importing `rtmbotd.store`
costs nothing, and SQLAlchemy (about 12 MiB resident) is imported only when a name that
needs it, such as `Store` or `PluginStore`, is first used. The errors are SQLAlchemy-free.

- `database`: `Store`, one database with its plugin namespaces and outbox
- `plugin`: `PluginStore`, the dict-like store a plugin holds
- `engine`, `schema`, `url`: connections and locking, tables and migrations, STORE_URL
- `values`: what can be stored (keys, JSON text), checked before anything is written
- `errors`: typed errors, and driver exceptions mapped to them
- `lazy`: the daemon's store, opened on first need or once the database can be reached
- `cli`: `rtmbotd store ...`
"""
from __future__ import annotations

from typing import Any

_ERRORS = ("StoreError", "StoreBusyError", "StoreCorruptError", "StoreFullError", "StoreReadOnlyError",
           "StoreUnavailableError", "StoreUnreachableError", "StoreVersionError", "StoreWriteError")
_DATABASE = ("Store",)
_PLUGIN = ("ABSENT", "PluginStore")

__all__ = [*_DATABASE, *_PLUGIN, *_ERRORS]


def __getattr__(name: str) -> Any:
    if name in _ERRORS:
        from rtmbotd.store import errors as module
    elif name in _DATABASE:
        from rtmbotd.store import database as module
    elif name in _PLUGIN:
        from rtmbotd.store import plugin as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted(__all__)
