"""The signals the daemon handles, defined once, and holding them until its loop runs.

`HANDLED` maps each signal to its handler's name (`Daemon.handle_<name>`); cli.py catches
the same set from the first line of `main`, so a stop or reload during start-up is
replayed into the loop instead of killing the process with the default action.
"""
from __future__ import annotations

import signal

HANDLED: dict[int, str] = {
    signal.SIGHUP: "hup",       # reload
    signal.SIGTERM: "term",     # stop
    signal.SIGINT: "int",       # stop; a second one forces
    signal.SIGUSR1: "usr1",     # reopen LOGFILE
}

EX_INTERRUPTED = 128 + signal.SIGINT   # a forced stop: the shell's status for death by SIGINT


class EarlySignals:
    """Remembers every handled signal that arrives before the loop installs its own
    handlers; the daemon replays `pending` into its inbox, in order."""

    def __init__(self) -> None:
        self.pending: list[int] = []

    def catch(self) -> None:
        for signum in HANDLED:
            signal.signal(signum, self._remember)

    def _remember(self, signum: int, frame: object) -> None:
        self.pending.append(signum)       # a handler only records

    def release(self) -> None:
        """For commands that are not the daemon (store, --check-config): the usual
        actions again (Ctrl-C raises KeyboardInterrupt), and what arrived meanwhile
        is delivered now."""
        for signum in HANDLED:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        pending, self.pending = self.pending, []
        for signum in pending:
            signal.raise_signal(signum)
