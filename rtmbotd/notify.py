"""systemd's notify protocol (READY, RELOADING, STATUS, WATCHDOG, STOPPING).

Our own sender, as sd_notify(3) describes it: one UTF-8 datagram on the AF_UNIX socket
named by NOTIFY_SOCKET ('@' = abstract). sdnotify 0.3.2 encodes Latin-1 and swallows the
error, so a non-Latin-1 STATUS dropped the READY=1 travelling in the same datagram.
A no-op when NOTIFY_SOCKET is unset, so the daemon runs the same anywhere; a failed send
is logged once and never raised into the loop.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import time

from rtmbotd.redact import redact

log = logging.getLogger(__name__)

# systemd ignores a whole notify datagram longer than PIPE_BUF (4096 bytes), READY=1 with
# it; a STATUS is cut well below that so the other fields always fit.
STATUS_MAX_BYTES = 2048
SEND_TIMEOUT = 1.0       # a full receive queue must not hold the loop for longer
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")   # a newline would end the field, a NUL the datagram


def status_value(text: str) -> str:
    """`text` as one STATUS field: control characters (newlines, NUL) become one space,
    and it is cut, at a character boundary, to STATUS_MAX_BYTES of UTF-8."""
    flat = _CONTROL.sub(" ", str(text)).strip()
    raw = flat.encode("utf-8", "replace")
    if len(raw) <= STATUS_MAX_BYTES:
        return flat
    return raw[:STATUS_MAX_BYTES - 3].decode("utf-8", "ignore") + "…"


def socket_address(value: str | None) -> str | bytes | None:
    """NOTIFY_SOCKET as an AF_UNIX address: '@name' is abstract, else an absolute path."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode("utf-8", "surrogateescape")
    if value.startswith("/"):
        return value
    return None


class Notifier:
    def __init__(self, env: dict | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET")
        self.socket_name = raw
        self.address = socket_address(raw)
        if raw and self.address is None:
            log.warning("NOTIFY_SOCKET=%r is neither an absolute path nor '@abstract': not notifying", raw)
        self.enabled = self.address is not None
        self._sock: socket.socket | None = None
        self._failing = False            # the last send failed (and was logged)
        self._last_status = ""
        self.watchdog_interval = _watchdog_interval(env)

    def _send(self, *fields: str) -> None:
        """One datagram of KEY=value lines; a failure is logged once per run of failures."""
        if self.address is None:
            return
        data = "".join(field + "\n" for field in fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(SEND_TIMEOUT)
            self._sock.sendto(data, self.address)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot notify systemd on %s: %s (lost: %s)", self.socket_name, exc,
                            " ".join(f.split("=", 1)[0] for f in fields))
            self._failing = True
            return
        if self._failing:
            log.info("notifying systemd works again")
            self._failing = False

    def _status(self, status: str) -> str:
        self._last_status = status
        return "STATUS=" + status_value(redact(status))    # world-readable: systemctl status

    def ready(self, status: str) -> None:
        self._send("READY=1", self._status(status))

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str = "Stopping") -> None:
        self._send("STOPPING=1", self._status(status))

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._send(self._status(status))

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")


def _watchdog_interval(env) -> float | None:
    """Half of WATCHDOG_USEC when the watchdog is meant for this process, else None."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
