"""One thread per plugin unit, so a slow or stuck plugin delays only itself.

The loop submits calls; the worker runs them in order, catches and attributes every
exception, then reports the unit's new outputs and jobs back to the loop's inbox.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from rtmbotd.metrics import Recorder
from rtmbotd.metrics.recorder import BAD_OUTPUT
from rtmbotd.router import Output, parse_output
from rtmbotd.runtime.loader import Unit

log = logging.getLogger(__name__)

_STOP = object()


@dataclass(frozen=True)
class PluginReport:
    """What a finished call produced: outputs to send (parsed on the plugin's thread), jobs to schedule."""

    worker: "Worker"
    outputs: list[Output]
    jobs: list
    job_key: Hashable | None = None


@dataclass(frozen=True)
class WorkerExited:
    worker: "Worker"


class Worker:
    """Runs one unit's calls on its own thread, in submission order."""

    def __init__(self, unit: Unit, report: Callable[[Any], None],
                 clock: Callable[[], float] = time.monotonic, recorder: Recorder | None = None) -> None:
        self.unit = unit
        self._report = report
        self._clock = clock
        self._recorder = recorder or Recorder()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.busy_since: float | None = None
        self.busy_label = ""
        self.stuck_reported = False
        self._submitted = 0      # written by the loop only
        self._finished = 0       # written by the worker thread only
        self._thread = threading.Thread(target=self._run, name=f"plugin:{unit.name}", daemon=True)

    def start(self) -> "Worker":
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """Until the loop has seen this worker's WorkerExited (a thread that posted it may
        still be returning, and nothing else would wake the loop to look again)."""
        return not self.exited

    exited = False          # set by the loop on WorkerExited

    def submit(self, label: str, fn: Callable, *args: Any, job_key: Hashable | None = None) -> None:
        self._submitted += 1
        self._queue.put((label, fn, args, job_key))

    def stop(self) -> None:
        """Finish what is queued, then exit (reports WorkerExited)."""
        self._queue.put(_STOP)

    @property
    def backlog(self) -> int:
        """Calls submitted and not yet finished (including the running one)."""
        return self._submitted - self._finished

    def busy_for(self, now: float) -> float:
        since = self.busy_since
        return 0.0 if since is None else now - since

    def _run(self) -> None:
        unit = self.unit
        # Outputs and jobs a plugin set up at import time go out first.
        self._flush(None)
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            label, fn, args, job_key = item
            self.busy_label = label
            self.busy_since = started = self._clock()
            ok = False
            try:
                ok = fn(*args) is not False
            except Exception:
                log.exception("plugin %s: %s raised", unit.name, label)
            except BaseException as exc:  # SystemExit / KeyboardInterrupt from plugin code
                log.error("plugin %s: %s raised %s; ignored", unit.name, label, type(exc).__name__)
            took = self._clock() - started
            try:
                self._flush(job_key)       # still busy: reading its outputs may block too
            finally:
                if job_key is not None or fn is run_event:     # a callback or job, not an outputs sweep
                    self._tell_metrics("plugin_call", unit.name, took, ok)   # after its outputs went to the loop
                self.busy_since = None
                self.stuck_reported = False
                self._finished += 1
        self._flush(None)
        self._report(WorkerExited(self))

    def _flush(self, job_key: Hashable | None) -> None:
        items = self._read("outputs", self.unit.take_outputs)    # apart: a broken crontable must not
        jobs = self._read("crontable/jobs", self.unit.take_jobs)  # cost outputs already taken
        outputs = [out for out in map(self._parse, items) if out is not None]
        for _ in range(len(items) - len(outputs)):
            self._tell_metrics("message_failed", BAD_OUTPUT)
        if outputs or jobs or job_key is not None:
            self._report(PluginReport(self, outputs, jobs, job_key))

    def _tell_metrics(self, hook: str, *args: Any) -> None:
        """A metrics hook, guarded: a failing hook must not end this thread (and with it the
        unit's calls, its book-keeping and the WorkerExited the stop waits for)."""
        try:
            getattr(self._recorder, hook)(*args)
        except Exception:  # noqa: BLE001
            log.exception("metrics: %s for plugin %s failed", hook, self.unit.name)

    def _read(self, what: str, take: Callable[[], list]) -> list:
        try:
            return take()
        except Exception:  # noqa: BLE001 - the plugin's objects: what they raise costs only them
            log.exception("plugin %s: reading its %s failed", self.unit.name, what)
            return []

    def _parse(self, item: Any) -> Output | None:
        """One output as plain data, here on the plugin's thread; a bad one costs only itself."""
        try:
            return parse_output(item, self.unit.name, self.unit.folder)
        except BaseException:  # noqa: BLE001 - whatever the plugin's object raises
            log.exception("plugin %s: output ignored: reading the %s raised", self.unit.name, type(item).__name__)
            return None


def run_event(unit: Unit, handler: Callable | None, data: dict, catch_all: bool = True) -> bool:
    """Call a unit's `process_<type>` and then (for Slack's events) its `catch_all`, each
    isolated; False when the handler raised (a raising `catch_all` reaches the worker)."""
    ok = True
    if handler is not None:
        try:
            handler(data)
        except Exception:
            ok = False
            log.exception("plugin %s: %s raised on %s", unit.name, getattr(handler, "__name__", "handler"),
                          f"{data.get('type')} event" if catch_all else f"the result of {data.get('callback')!r}")
    every = unit.catch_all if catch_all else None
    if every is not None:
        every(data)
    return ok
