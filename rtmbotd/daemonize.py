"""Detaching without systemd: python-daemon plus a locked pidfile."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import Iterator

from rtmbotd.errors import RtmbotdError


class PidfileError(RtmbotdError):
    exit_code = os.EX_UNAVAILABLE


class Pidfile:
    """A pidfile held with an exclusive lock for the life of the process."""

    def __init__(self, path: str) -> None:
        self.path = Path(path).absolute()
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            err = PidfileError(f"pidfile {self.path}: {exc.strerror}")
            err.exit_code = os.EX_CANTCREAT
            raise err from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise PidfileError(f"already running: pid {other} holds {self.path}") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    # python-daemon's pidfile protocol
    __enter__ = lambda self: (self.acquire(), self)[1]  # noqa: E731

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def daemon_context(detach: bool, pidfile: str | None) -> Iterator[None]:
    """Detach (when asked) before any resource is opened, then hold the pidfile."""
    lock = Pidfile(pidfile) if pidfile else None
    if not detach:
        if lock:
            with lock:
                yield
        else:
            yield
        return
    import daemon   # python-daemon
    if lock:
        # Fail in the foreground, where the user sees it, before detaching.
        lock.acquire()
        lock.release()
    ctx = daemon.DaemonContext(working_directory="/", umask=0o022, pidfile=lock,
                               detach_process=True, signal_map={})
    with ctx:
        yield
