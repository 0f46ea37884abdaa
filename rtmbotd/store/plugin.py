"""What a plugin holds: `PluginStore`, a durable, thread-safe dict of JSON values.

One per plugin, namespaced by the plugin's name; built by `Store.plugin(name)`.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from sqlalchemy import Connection, Engine, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from rtmbotd.store.errors import StoreError
from rtmbotd.store.schema import kv
from rtmbotd.store.values import check_key, encode

if TYPE_CHECKING:
    from rtmbotd.store.database import Store

T = TypeVar("T")


class _Absent:
    """The type of ABSENT."""

    _instance: "_Absent | None" = None

    def __new__(cls) -> "_Absent":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()
"""'No such key' for compare_and_set, distinct from a stored JSON null (None)."""

_NO_DEFAULT: Any = object()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def put_row(conn: Connection, plugin: str, key: str, text: str) -> None:
    """Insert or replace one key's JSON text (the caller holds the plugin's write lock)."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(kv).values(plugin=plugin, key=key, value=text)
    conn.execute(stmt.on_conflict_do_update(index_elements=["plugin", "key"], set_={"value": stmt.excluded["value"]}))


def table_prefix_for(plugin: str) -> str:
    """`p_<plugin>_`, made a safe SQL identifier; a hash keeps altered names distinct."""
    safe = re.sub(r"[^a-z0-9_]", "_", plugin.lower())
    if safe != plugin or len(safe) > 40:
        safe = f"{safe[:40]}_{hashlib.sha1(plugin.encode()).hexdigest()[:6]}"
    return f"p_{safe}_"



class PluginStore(MutableMapping):
    """A plugin's own durable dict of JSON values; thread-safe.

    Values come back as fresh JSON-decoded objects (tuples become lists, dict keys
    strings): change a value by assigning it again, `store["l"] = store["l"] + [x]`,
    or atomically with `incr`, `compare_and_set` or `with store.transaction():`.
    """

    ABSENT = ABSENT

    def __init__(self, store: "Store", name: str) -> None:
        self._store = store
        self.name = name
        self._lock_name = "kv:" + name
        self.table_prefix = table_prefix_for(name)

    def __repr__(self) -> str:
        return f"<PluginStore {self.name!r} in {self._store.describe()}>"

    @property
    def engine(self) -> Engine:
        """For plugins keeping their own tables, named `table_prefix + "..."`.

        Tables live in the database's default schema on both backends (on PostgreSQL the
        first schema of search_path; to keep rtmbotd apart, give it a schema of its own
        with `?options=-csearch_path%3Drtmbot` in STORE_URL). Write to them inside
        `with store.transaction():` through `store.connection`, to share the store's
        locking and retries; writes through the engine directly get neither.
        """
        return self._store.engine

    @property
    def connection(self) -> Connection:
        """Inside `with transaction():` on this thread, its connection (for own tables)."""
        tx = self._store._active()
        if tx is None:
            raise StoreError(f"store {self.name!r}: .connection is only available inside `with store.transaction():`")
        return tx.conn

    def _where(self, key: str | None = None) -> str:
        return f"plugin {self.name!r}" + (f" key {key!r}" if key is not None else "")

    def _row(self, conn: Connection, key: str) -> str | None:
        return conn.execute(select(kv.c.value).where(kv.c.plugin == self.name, kv.c.key == key)).scalar()

    def _put(self, conn: Connection, key: str, text: str) -> None:
        put_row(conn, self.name, key, text)

    def _remove(self, conn: Connection, key: str) -> bool:
        return conn.execute(delete(kv).where(kv.c.plugin == self.name, kv.c.key == key)).rowcount > 0

    def _write(self, key: str | None, fn: Callable[[Connection], T]) -> T:
        return self._store._write(self._where(key), self._lock_name, fn)

    def _read(self, key: str | None, fn: Callable[[Connection], T]) -> T:
        return self._store._read(self._where(key), fn)

    # -- the mapping ----------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        text = self._read(key, lambda c: self._row(c, check_key(key)))
        if text is None:
            raise KeyError(key)
        return json.loads(text)

    def __setitem__(self, key: str, value: Any) -> None:
        text = encode(check_key(key), value)
        self._write(key, lambda c: self._put(c, key, text))

    def __delitem__(self, key: str) -> None:
        if not self._write(key, lambda c: self._remove(c, check_key(key))):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        try:
            check_key(key)
        except TypeError:            # what cannot be a key is not in the store
            return False
        return self._read(key, lambda c: self._row(c, key)) is not None

    def __len__(self) -> int:
        return self._read(None, lambda c: c.execute(
            select(func.count()).select_from(kv).where(kv.c.plugin == self.name)).scalar_one())

    def __iter__(self) -> Iterator[str]:
        """Over a snapshot of the keys, in sorted order."""
        return iter(self.keys())

    def _select(self, prefix: str, *columns):  # noqa: ANN002, ANN202
        stmt = select(*columns).where(kv.c.plugin == self.name).order_by(kv.c.key)
        if check_key(prefix, "a key prefix"):
            stmt = stmt.where(kv.c.key >= prefix, func.substr(kv.c.key, 1, len(prefix)) == prefix)
        return stmt

    def keys(self, prefix: str = "") -> list[str]:  # type: ignore[override]
        """Sorted keys starting with `prefix`."""
        return self._read(None, lambda c: list(c.scalars(self._select(prefix, kv.c.key))))

    def items(self, prefix: str = "") -> list[tuple[str, Any]]:  # type: ignore[override]
        """Sorted (key, value) pairs whose key starts with `prefix`, read atomically."""
        rows = self._read(None, lambda c: c.execute(self._select(prefix, kv.c.key, kv.c.value)).all())
        return [(k, json.loads(v)) for k, v in rows]

    def values(self, prefix: str = "") -> list[Any]:  # type: ignore[override]
        return [v for _, v in self.items(prefix)]

    def clear(self, prefix: str = "") -> int:
        """Delete every key (starting with `prefix`); returns how many."""
        check_key(prefix, "a key prefix")

        def remove(c: Connection) -> int:
            stmt = delete(kv).where(kv.c.plugin == self.name)
            if prefix:
                stmt = stmt.where(func.substr(kv.c.key, 1, len(prefix)) == prefix)
            return c.execute(stmt).rowcount
        return self._write(None, remove)

    def update(self, other: Any = (), /, **kwds: Any) -> None:
        """Set several keys in one atomic write."""
        pairs = list(other.items() if hasattr(other, "items") else other) + list(kwds.items())
        encoded = [(check_key(k), encode(k, v)) for k, v in pairs]

        def put_all(c: Connection) -> None:
            for k, text in encoded:
                self._put(c, k, text)
        if encoded:
            self._write(None, put_all)

    # -- atomic helpers -------------------------------------------------------------
    def incr(self, key: str, by: int = 1) -> int:
        """Add `by` to the integer at `key` (a missing key counts as 0); the new value."""
        if not isinstance(by, int) or isinstance(by, bool):
            raise TypeError(f"store.incr({key!r}): by must be an int, not {type(by).__name__}")

        def add(c: Connection) -> int:
            text = self._row(c, check_key(key))
            current = 0 if text is None else json.loads(text)
            if not isinstance(current, int) or isinstance(current, bool):
                raise TypeError(f"store.incr({key!r}): the stored value is a {type(current).__name__}, not an int")
            self._put(c, key, str(current + by))
            return current + by
        return self._write(key, add)

    def setdefault(self, key: str, default: Any = None) -> Any:
        """The value at `key`; if absent, store `default` first (atomically) and return it."""
        text = encode(check_key(key), default)

        def get_or_put(c: Connection) -> str:
            stored = self._row(c, key)
            if stored is None:
                self._put(c, key, text)
                return text
            return stored
        return json.loads(self._write(key, get_or_put))

    def compare_and_set(self, key: str, expected: Any, new: Any) -> bool:
        """Set `key` to `new` only if it now holds `expected`; True when it did.

        `expected=ABSENT` means "only if the key is missing" (None means a stored null);
        `new=ABSENT` deletes the key. Values compare as JSON (1 != 1.0 != True).
        """
        check_key(key)
        want = None if expected is ABSENT else _canonical(json.loads(encode(key, expected)))
        text = None if new is ABSENT else encode(key, new)

        def swap(c: Connection) -> bool:
            stored = self._row(c, key)
            current = None if stored is None else _canonical(json.loads(stored))
            if current != want:
                return False
            if text is None:
                self._remove(c, key)
            else:
                self._put(c, key, text)
            return True
        return self._write(key, swap)

    def pop(self, key: str, default: Any = _NO_DEFAULT) -> Any:
        """Remove `key` and return its value (atomically); `default` or KeyError if absent."""
        def take(c: Connection) -> str | None:
            stored = self._row(c, check_key(key))
            if stored is not None:
                self._remove(c, key)
            return stored
        stored = self._write(key, take)
        if stored is None:
            if default is _NO_DEFAULT:
                raise KeyError(key)
            return default
        return json.loads(stored)

    def popitem(self) -> tuple[str, Any]:
        """Remove and return the (key, value) with the smallest key (atomically)."""
        def take(c: Connection) -> tuple[str, str] | None:
            row = c.execute(self._select("", kv.c.key, kv.c.value).limit(1)).first()
            if row is not None:
                self._remove(c, row[0])
            return None if row is None else (row[0], row[1])
        row = self._write(None, take)
        if row is None:
            raise KeyError(f"store {self.name!r} is empty")
        return row[0], json.loads(row[1])

    @contextmanager
    def transaction(self) -> Iterator["PluginStore"]:
        """Make every call on this store from this thread, until the block ends, one
        atomic and isolated unit: all of it is kept, or (on an exception) none of it.

        Other threads' writes to this plugin wait until the block ends; their reads do
        not wait and see the state before it. Nested blocks are savepoints. Keep blocks
        short: on SQLite one holds the database's write lock, so every other writer (all
        plugins, other processes) waits for it.
        """
        with self._store._transaction(self._where(), self._lock_name):
            yield self
