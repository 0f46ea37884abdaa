"""The daemon's stdout and stderr pass the redaction too: a plugin's `print(token)` or
`sys.stderr.write(url)` reaches the journal as `xoxb-[redacted]`.

A thin text wrapper, line-buffered so that a secret split across two writes is still
caught whole; everything else (`.buffer`, `.fileno()`, `.encoding`, `isatty()`) is the
wrapped stream's.
"""
from __future__ import annotations

import atexit
import sys
import threading
from typing import Any, TextIO

from rtmbotd.redact import redact

MAX_PENDING = 64 * 1024    # an unended line longer than this goes out up to its last blank


class RedactingStream:
    """Writes to `stream` whole lines at a time, each passed through `redact`."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending = ""
        self._lock = threading.RLock()     # plugins print from their own threads

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            pending = self._pending + text
            cut = pending.rfind("\n") + 1
            if not cut and len(pending) > MAX_PENDING:
                # Secrets hold no blanks: cutting after one never splits a token.
                cut = max(pending.rfind(" "), pending.rfind("\t")) + 1 or len(pending)
            self._pending = pending[cut:]
            if cut:
                self.stream.write(redact(pending[:cut]))
                self.stream.flush()          # line-buffered, as on a terminal: the journal sees each line
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Write out an unended line too (print(..., flush=True), a prompt)."""
        with self._lock:
            pending, self._pending = self._pending, ""
            if pending:
                self.stream.write(redact(pending))
            self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        # The rest is the wrapped stream's: buffer, fileno(), encoding, errors, isatty(), closed...
        if name == "stream":         # not set yet (copy, pickle): no endless recursion
            raise AttributeError(name)
        return getattr(self.stream, name)


def redact_stdio() -> None:
    """Wrap sys.stdout and sys.stderr for the rest of the process (the daemon's, not the
    `store` commands' or the console's); unended lines are written at exit."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or isinstance(stream, RedactingStream):
            continue
        wrapper = RedactingStream(stream)
        setattr(sys, name, wrapper)
        atexit.register(_flush_quietly, wrapper)


def _flush_quietly(stream: RedactingStream) -> None:
    try:
        stream.flush()
    except (OSError, ValueError):    # the stream is gone already (closed, a dead pipe)
        pass
