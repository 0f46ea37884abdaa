"""Decode websocket frames from Slack into events: pure, never raises on bad input."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# A sample of a bad frame is kept for the log, never the whole (it may be 1 MB).
SAMPLE_CHARS = 120


@dataclass(frozen=True)
class BadFrame:
    """A frame that is not a JSON object; `reason` says why, `sample` shows its start."""

    reason: str
    sample: str
    size: int


def decode_frame(raw: str | bytes) -> dict | BadFrame:
    """The JSON object in `raw`, or a BadFrame saying what is wrong with it."""
    size = len(raw)
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            return BadFrame(f"binary frame is not UTF-8 ({exc.reason} at byte {exc.start})",
                            repr(bytes(raw)[:SAMPLE_CHARS]), size)
    try:
        value: Any = json.loads(raw)
    except ValueError as exc:
        return BadFrame(f"not JSON ({exc})", raw[:SAMPLE_CHARS], size)
    except RecursionError:
        return BadFrame("JSON nested too deeply", raw[:SAMPLE_CHARS], size)
    if not isinstance(value, dict):
        return BadFrame(f"JSON {type(value).__name__}, not an object", raw[:SAMPLE_CHARS], size)
    return value


def event_type(event: dict) -> str | None:
    """The event's `type` when it is a usable name for `process_<type>`, else None."""
    kind = event.get("type")
    if isinstance(kind, str) and kind.isidentifier():
        return kind
    return None


def copy_json(value: Any) -> Any:
    """A deep copy of decoded JSON (dicts, lists, scalars), faster than copy.deepcopy.

    Without recursion: a frame nested deeper than the recursion limit (json.loads takes
    ~990 levels) is copied like any other, whatever the caller's stack depth.
    """
    if not isinstance(value, (dict, list)):
        return value
    root = [value]
    todo = [(root, 0)]          # (a copied container, the key of a child still to copy)
    while todo:
        parent, key = todo.pop()
        child = parent[key]
        if isinstance(child, dict):
            copy: Any = dict(child)
            todo.extend((copy, k) for k, v in copy.items() if isinstance(v, (dict, list)))
        else:
            copy = list(child)
            todo.extend((copy, i) for i, v in enumerate(copy) if isinstance(v, (dict, list)))
        parent[key] = copy
    return root[0]
