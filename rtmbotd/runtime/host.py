"""The running plugins: one worker thread per unit, their timed jobs, event dispatch.

Owned by the daemon's loop. `swap` moves to a new generation keeping the workers (and
so the in-memory state) of unchanged plugins; `dispatch` hands an event to every unit
that handles it.
"""
from __future__ import annotations

import itertools
import logging
import time
from typing import Any, Callable, Hashable

from rtmbotd.slack.frames import copy_json
from rtmbotd.runtime.loader import PluginSet
from rtmbotd.runtime.scheduler import Scheduler
from rtmbotd.runtime.worker import PluginReport, Worker, run_event

log = logging.getLogger(__name__)


class PluginHost:
    def __init__(self, report: Callable[[Any], None], clock: Callable[[], float], recorder: Any = None,
                 wall: Callable[[], float] = time.time) -> None:
        self._report = report
        self._clock = clock
        self._recorder = recorder
        self.plugins: PluginSet | None = None
        self.workers: list[Worker] = []
        self.scheduler = Scheduler(clock, wall)
        self._job_ids = itertools.count(1)
        self.accepting = True
        # Cluster mode: jobs run only while `jobs_gate(now)` gives a token (the lease's epoch);
        # `job_started(name)` is told of each. None outside cluster mode: no cost.
        self.jobs_gate: Callable[[float], int | None] | None = None
        self.job_started: Callable[[str], None] | None = None
        self._job_tokens: dict[Hashable, int] = {}

    @property
    def generation(self) -> int:
        return self.plugins.generation if self.plugins else 0

    def swap(self, plugins: PluginSet) -> None:
        """Run `plugins` from now on: start new units, stop removed ones, keep the rest."""
        new_units = {id(u) for u in plugins.units}
        old_units = {id(u) for u in self.plugins.units} if self.plugins else set()
        keep = []
        for worker in self.workers:
            if id(worker.unit) in new_units:
                keep.append(worker)
            else:
                worker.stop()
                self.scheduler.remove_where(lambda key, w=worker: key[0] is w)
        for unit in plugins.units:
            if id(unit) not in old_units:
                keep.append(Worker(unit, self._report, self._clock, self._recorder).start())
        order = {id(u): i for i, u in enumerate(plugins.units)}
        self.workers = sorted(keep, key=lambda w: order[id(w.unit)])
        old, self.plugins = self.plugins, plugins
        if old is not None:
            for name, loaded in old.plugins.items():
                if plugins.plugins.get(name) is not loaded:
                    loaded.forget()

    def reject(self, plugins: PluginSet | None) -> None:
        """Forget the modules a rejected generation imported (it was never swapped in)."""
        if plugins is not None:
            for name, loaded in plugins.plugins.items():
                if name not in plugins.reused:
                    loaded.forget()

    def dispatch(self, kind: str, data: dict) -> None:
        """Hand the event to every unit that handles it; each gets its own copy.

        Every copy is made before any plugin starts, so no plugin sees another's changes.
        """
        calls = []
        for worker in self.workers:
            unit = worker.unit
            try:       # a class plugin's __getattr__ runs here: what it raises costs only it
                handler = unit.handler(kind)
                wanted = handler is not None or unit.catch_all is not None
            except Exception:  # noqa: BLE001
                log.exception("plugin %s: looking up its handler for a %s event raised; it misses the event",
                              unit.name, kind)
                continue
            if wanted:
                calls.append((worker, unit, handler))
        try:
            copies = [copy_json(data) for _ in calls[1:]] + [data]
        except Exception:  # noqa: BLE001 - an event that cannot be copied costs only itself
            log.exception("%s event dropped: it cannot be copied for each plugin", kind)
            return
        for (worker, unit, handler), copy in zip(calls, copies):
            worker.submit(kind, run_event, unit, handler, copy)

    def output_result(self, unit_name: str, result: dict) -> bool:
        """Call `process_output_result(result)` on the unit named `unit_name`, on its worker
        like an event (not its `catch_all`); False when no running unit has that name or
        the handler."""
        for worker in self.workers:
            if worker.unit.name != unit_name:
                continue
            try:       # a class plugin's __getattr__ runs here: what it raises costs only it
                handler = worker.unit.handler("output_result")
            except Exception:  # noqa: BLE001
                log.exception("plugin %s: looking up process_output_result raised", unit_name)
                return False
            if handler is None:
                return False
            worker.submit("output_result", run_event, worker.unit, handler, result, False)
            return True
        return False

    def run_due_jobs(self, now: float) -> None:
        if not self.accepting:
            return
        token = None
        if self.jobs_gate is not None:
            token = self.jobs_gate(now)      # checked right before submitting: fencing
            if token is None:
                return
        for entry in self.scheduler.due(now):
            worker, fn, label = entry.target
            if token is not None:
                self._job_tokens[entry.key] = token
                self.job_started(entry.name)
            worker.submit(f"job {label}", fn, job_key=entry.key)

    def job_token(self, key: Hashable | None) -> int | None:
        """The token (lease epoch) a job call was submitted under (cluster mode)."""
        return self._job_tokens.get(key) if key is not None else None

    def next_deadline(self) -> float | None:
        if not self.accepting:
            return None
        if self.jobs_gate is not None and self.jobs_gate(self._clock()) is None:
            return None       # a follower runs no job; the next ClusterState wakes the loop
        return self.scheduler.next_deadline()

    def reported(self, item: PluginReport) -> None:
        """Book-keeping for a finished call: the job is free again, new jobs scheduled."""
        if item.job_key is not None:
            self.scheduler.done(item.job_key)
            self._job_tokens.pop(item.job_key, None)
        if item.jobs and self.accepting and item.worker in self.workers:
            for schedule, fn, label in item.jobs:
                self.scheduler.add((item.worker, next(self._job_ids)), schedule, (item.worker, fn, label),
                                   name=f"{item.worker.unit.name}/{label}")   # its unit: one thread, one order

    def sweep_outputs(self) -> int:
        """Outputs appended outside a call (from a plugin's own thread) are sent too.

        An idle worker with a non-empty `outputs` gets an empty call; it drains the list
        on its own thread afterwards, as after every call.
        """
        count = 0
        for worker in self.workers:
            try:      # a class plugin's `outputs` may be a property: what it raises costs only it
                outs = getattr(worker.unit.target, "outputs", None)
                pending = isinstance(outs, list) and list.__len__(outs) > 0
            except Exception:  # noqa: BLE001 - its worker logs it when it reads the outputs
                pending = False
            if pending and worker.backlog == 0:
                worker.submit("outputs", _nothing)
                count += 1
        return count

    def stop(self) -> None:
        """No more events or jobs; each worker finishes what it has, then exits."""
        self.accepting = False
        for worker in self.workers:
            worker.stop()

    def busy(self) -> list[Worker]:
        return [w for w in self.workers if w.alive]

    def stuck(self, now: float, limit: float) -> list[Worker]:
        return [w for w in self.workers if w.busy_for(now) > limit]


def _nothing() -> None:
    """An empty plugin call: the worker drains outputs after it."""
