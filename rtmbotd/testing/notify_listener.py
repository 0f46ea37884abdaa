"""A stand-in for systemd's NOTIFY_SOCKET: what a daemon under test tells its manager.

    listener = NotifyListener(tmp_path / "notify.sock")
    env["NOTIFY_SOCKET"] = listener.path          # for the process under test
    i = listener.wait_for("READY", "1")
    listener.messages[i][1]["STATUS"]
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from rtmbotd.testing.waiting import wait_until


class NotifyListener:
    """An AF_UNIX datagram socket; each datagram is kept, parsed into its KEY=value
    fields, with the monotonic time it arrived: `messages[i] == (at, fields)`."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        if path.exists():
            path.unlink()        # left by an earlier process in the same folder
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            at = time.monotonic()
            # "\n" alone ends a field, as in systemd (str.splitlines would also split at U+2028)
            fields = dict(line.split("=", 1) for line in data.decode(errors="replace").split("\n")
                          if "=" in line)
            with self._cond:
                self.messages.append((at, fields))
                self._cond.notify_all()

    def wait_for(self, key: str, value: str | None = None, *, after: int = 0, timeout: float = 30.0) -> int:
        """Index of the first message at or after `after` with `key` (=`value`); TimeoutError."""
        def found() -> tuple[int] | None:
            with self._cond:
                for i in range(after, len(self.messages)):
                    fields = self.messages[i][1]
                    if key in fields and (value is None or fields[key] == value):
                        return (i,)      # a tuple: index 0 is a find too
            return None

        return wait_until(found, timeout, lambda: f"{key}={value} on the notify socket; got "
                          f"{[m for _, m in list(self.messages)]}", changes=self)[0]

    def change_token(self) -> int:
        with self._cond:
            return len(self.messages)

    def wait_for_change(self, token: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) != token, timeout)

    def at(self, index: int) -> float:
        """When message `index` arrived (time.monotonic)."""
        with self._cond:
            return self.messages[index][0]

    def __len__(self) -> int:
        with self._cond:
            return len(self.messages)

    def sequence(self) -> list[str]:
        """The notification kinds in order, STATUS-only and WATCHDOG messages left out."""
        with self._cond:
            return [key for _, fields in self.messages for key in ("READY", "RELOADING", "STOPPING")
                    if key in fields]

    def statuses(self) -> list[str]:
        with self._cond:
            return [f["STATUS"] for _, f in self.messages if "STATUS" in f]

    def count(self, key: str) -> int:
        with self._cond:
            return sum(1 for _, f in self.messages if key in f)

    def close(self) -> None:
        self._sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
