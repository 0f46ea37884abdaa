"""Turn the STORE_URL setting into a concrete SQLAlchemy URL.

None means the SQLite file `rtmbot.sqlite` in systemd's $STATE_DIRECTORY, else in
BASE_PATH. `postgresql://` picks the psycopg 3 driver. Relative SQLite paths are
relative to BASE_PATH (a service's working directory is `/`, rarely what was meant).
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from rtmbotd.store.errors import StoreError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

DEFAULT_FILENAME = "rtmbot.sqlite"
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


def default_directory(base_path: Path | str | None, env: Mapping[str, str]) -> Path:
    """Where the default SQLite file lives: $STATE_DIRECTORY's first entry, else base_path."""
    state = env.get("STATE_DIRECTORY", "")
    first = state.split(":")[0].strip()
    if first:
        return Path(first)
    if base_path is None:
        raise StoreError("STORE_URL is not set and neither $STATE_DIRECTORY nor a base path is known")
    return Path(base_path)


def resolve_url(url: str | URL | None, base_path: Path | str | None = None,
                env: Mapping[str, str] | None = None) -> URL:
    """The SQLAlchemy URL the store opens; raises StoreError for an unusable setting."""
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError
    env = os.environ if env is None else env
    if url is None or (isinstance(url, str) and not url.strip()):
        path = default_directory(base_path, env) / DEFAULT_FILENAME
        return URL.create("sqlite", database=str(path.absolute()))
    try:
        # (str() of a URL object would mask its password: pass the object itself.)
        parsed = make_url(url.strip() if isinstance(url, str) else url)
    except (ArgumentError, ValueError) as exc:     # ValueError: a port that is not a number
        raise StoreError(f"STORE_URL: not an SQLAlchemy URL ({exc})") from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            driver = "postgresql+psycopg" if importlib.util.find_spec("psycopg") else "postgresql"
            parsed = parsed.set(drivername=driver)
        return parsed
    if backend != "sqlite":
        return parsed      # another SQLAlchemy backend: used as given, untested
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:") or "mode=memory" in database:
        raise StoreError("STORE_URL: an in-memory SQLite database is not a store (every connection would "
                         "see a different, empty one); give a file path such as sqlite:////var/lib/rtmbot/rtmbot.sqlite")
    if parsed.query.get("uri") in ("true", "1"):
        return parsed
    path = Path(database)
    if not path.is_absolute():
        if base_path is None:
            raise StoreError(f"STORE_URL: relative SQLite path {database!r} needs a base path")
        path = Path(base_path) / path
    return parsed.set(database=str(path))


def sqlite_path(url: URL) -> Path | None:
    """The database file of an SQLite URL (None for other backends or URI filenames)."""
    if url.get_backend_name() != "sqlite" or url.query.get("uri") in ("true", "1"):
        return None
    return Path(url.database or "")


def display_url(url: URL) -> str:
    """The URL as safe to print: the password is dropped, not masked, also when it is a
    query parameter (`?password=...`, which libpq and psycopg take as well)."""
    # (URL.set(password=None) would keep the password: None there means "unchanged".)
    secret = [key for key in url.query if "password" in key.lower()]
    shown = url._replace(password=None).difference_update_query(secret)
    if shown.database:   # a path that is not UTF-8 (surrogate-escaped) cannot be %-quoted
        shown = shown._replace(database=os.fsencode(shown.database).decode("utf-8", "replace"))
    return shown.render_as_string(hide_password=False)


def server_options(url: URL, *settings: str) -> tuple[URL, str]:
    """`url` without libpq's `options` query, and those options with `settings` appended:
    for `connect_args={"options": ...}`, which would otherwise replace the URL's own
    (a STORE_URL's `-csearch_path` must hold on every connection the daemon opens)."""
    given = url.query.get("options")
    options = [given] if isinstance(given, str) and given else []
    return url.difference_update_query(["options"]), " ".join([*options, *settings])
