"""Logging: journald-friendly stderr or a LOGFILE that SIGUSR1 reopens; tokens redacted."""
from __future__ import annotations

import logging
import os
import sys
import threading
import traceback

from rtmbotd.redact import redact

_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class RedactingFormatter(logging.Formatter):
    """Every record, its exception text and traceback included, passes `redact`."""

    def __init__(self, fmt: str, journal: bool = False) -> None:
        super().__init__(fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        try:
            text = super().format(record)
        except Exception as exc:  # noqa: BLE001 - log.info("%d", text): logging's own report
            # (Handler.handleError) would print the arguments to stderr unredacted
            text = (f"{record.levelname} {record.name}: a log call at {record.pathname}:{record.lineno} "
                    f"could not be formatted ({type(exc).__name__}: {exc}): {record.msg!r}")
        text = redact(text)
        if self.journal:
            prio = _SYSLOG_PRIORITY.get(record.levelno, 6)
            return "\n".join(f"<{prio}>{line}" for line in text.splitlines())
        return text


def early_logging() -> None:
    """Redacted stderr logging, warnings and uncaught-exception reports, before any config is read."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.captureWarnings(True)     # warnings.warn writes to stderr itself, unredacted
    sys.excepthook = _report_uncaught
    threading.excepthook = lambda args: _report_uncaught(args.exc_type, args.exc_value, args.exc_traceback,
                                                         args.thread)


def _report_uncaught(exc_type, exc_value, exc_traceback, thread: threading.Thread | None = None) -> None:
    if exc_type is SystemExit:
        return
    where = f"Exception in thread {thread.name}:\n" if thread is not None else ""
    text = "".join(traceback.format_exception(exc_type, exc_value, exc_traceback))
    sys.stderr.write(redact(where + text))


def _journal_attached() -> bool:
    """True when stderr is the journal stream systemd gave us (JOURNAL_STREAM=dev:ino)."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class Logging:
    """Owns the root handler, so reload can change the level and SIGUSR1 reopen the file."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.handler: logging.Handler | None = None
        self.logfile: str | None = None
        self.quiet = quiet          # the console: warnings and errors only, unless DEBUG

    def configure(self, *, debug: bool, logfile: str | None) -> None:
        root = logging.getLogger()
        root.setLevel(logging.DEBUG if debug else logging.WARNING if self.quiet else logging.INFO)
        for noisy in ("websockets", "asyncio", "slack_sdk"):
            logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.WARNING)
        if self.handler is not None and logfile == self.logfile:
            return
        if logfile:
            handler: logging.Handler = logging.FileHandler(logfile, encoding="utf-8", delay=False)
            handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        else:
            journal = _journal_attached()
            handler = logging.StreamHandler(sys.stderr)
            fmt = "%(levelname)s %(name)s: %(message)s" if journal else \
                "%(asctime)s %(levelname)s %(name)s: %(message)s"
            handler.setFormatter(RedactingFormatter(fmt, journal))
        for old in list(root.handlers):   # basicConfig's, or ours before this reload
            root.removeHandler(old)
            if old is self.handler:
                old.close()
        root.addHandler(handler)
        self.handler = handler
        self.logfile = logfile

    def reopen(self) -> bool:
        """Reopen LOGFILE after logrotate moved it; False when logging to stderr."""
        handler = self.handler
        if not isinstance(handler, logging.FileHandler):
            return False
        handler.acquire()
        try:
            if handler.stream:
                handler.stream.close()
            handler.stream = handler._open()
        finally:
            handler.release()
        return True
