"""What the store can hold: keys and JSON text both databases accept, checked before
anything is written so that one bad item is refused alone, with a message naming it.

SQLAlchemy-free, so the outbox can check a record (`to_json`) without loading it.
A lone surrogate ("\\ud83d", half an emoji from an escaped JSON string) is a valid
Python str that no UTF-8 database can take; a NUL cannot be in PostgreSQL text. Both
are refused on every backend, so a store moves between SQLite and PostgreSQL intact.
"""
from __future__ import annotations

import json
from typing import Any

__all__ = ["check_key", "encode", "text_problem", "to_json"]


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored as database text (None when it can)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"it holds a lone surrogate {text[exc.start]!r}, which is not Unicode text (half of an emoji?)"
    return None


def to_json(value: Any, what: str) -> str:
    """JSON text for `value`; TypeError starting with `what`, naming the offending type."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:     # ValueError: NaN/Infinity, circular reference
        raise TypeError(f"{what}: cannot store a {type(value).__name__}: values must be "
                        f"JSON-serialisable (dict, list, str, int, float, bool, None): {exc}") from None
    problem = text_problem(text)
    if problem is not None:
        raise TypeError(f"{what}: cannot store this {type(value).__name__}: {problem}")
    return text


def encode(key: str, value: Any) -> str:
    """JSON text for the value of `key`; TypeError naming the key and the offending type."""
    return to_json(value, f"store[{key!r}]")


def check_key(key: Any, what: str = "store keys") -> str:
    """`key` when it can be a key (or plugin name) on every backend; TypeError otherwise."""
    if not isinstance(key, str):
        raise TypeError(f"{what} must be str, not {type(key).__name__} ({key!r:.40})")
    if "\0" in key:
        raise TypeError(f"{what} cannot contain NUL (\\x00): {key!r:.60}")
    problem = text_problem(key)
    if problem is not None:
        raise TypeError(f"{what} must be Unicode text, not {key!r:.60}: {problem}")
    return key
