"""The metrics themselves, on a private registry per daemon (tests run several in one process).

Imported only once METRICS is set. prometheus_client's metric objects lock internally,
so plugin threads observe their own durations; only the slowest call needs a lock here.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable

from prometheus_client import (CollectorRegistry, Counter, GCCollector, Gauge, Histogram,
                               PlatformCollector, ProcessCollector)

from rtmbotd.metrics.recorder import DROP_REASONS, label

RECONNECT_REASONS = ("drop", "goodbye", "disconnect", "error")
CALL_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
STORE_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
MAX_LABEL_VALUES = 100      # distinct event types / failure reasons; more are counted as "other"


class LiveMetrics:
    """Every rtmbotd metric; the methods are `Recorder`'s hooks."""

    def __init__(self, version: str) -> None:
        self.registry = reg = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
        Gauge("rtmbotd_build_info", "rtmbotd's version; always 1", ["version"], registry=reg).labels(version).set(1)
        self._connected = Gauge("rtmbotd_connected", "1 while the Slack link is up, else 0", registry=reg)
        self._generation = Gauge("rtmbotd_generation", "The plugin generation running", registry=reg)
        self._events = Counter("rtmbotd_events_received", "RTM frames and Socket Mode events received, by type",
                               ["type"], registry=reg)
        self._calls = Counter("rtmbotd_plugin_calls", "Plugin callbacks and jobs finished", ["plugin", "outcome"],
                              registry=reg)
        self._duration = Histogram("rtmbotd_plugin_call_duration_seconds", "How long plugin calls ran",
                                   ["plugin"], buckets=CALL_BUCKETS, registry=reg)
        self._slowest_gauge = Gauge("rtmbotd_plugin_call_slowest_seconds",
                                    "The longest plugin call since the daemon started", ["plugin"], registry=reg)
        self._busy = Gauge("rtmbotd_plugin_busy", "Plugin calls running longer than PLUGIN_TIMEOUT now",
                           ["plugin"], registry=reg)
        self._sent = Counter("rtmbotd_messages_sent", "Messages Slack accepted", registry=reg)
        self._failed = Counter("rtmbotd_messages_failed",
                               "Messages given up for good, by why: rtmbotd's reason or Slack's error code",
                               ["reason"], registry=reg)
        self._queued = Gauge("rtmbotd_outbox_queued", "Messages waiting to be sent", registry=reg)
        self._wait = Histogram("rtmbotd_outbox_wait_seconds", "Time from queued to sent", buckets=WAIT_BUCKETS,
                               registry=reg)
        self._reconnects = Counter("rtmbotd_reconnects", "Slack links replaced, by why", ["reason"], registry=reg)
        self._reloads = Counter("rtmbotd_reloads", "Reloads (SIGHUP) ended, by result", ["result"], registry=reg)
        self._last_reload = Gauge("rtmbotd_config_last_reload_successful",
                                  "0 while the last reload was rejected (the old generation runs), else 1",
                                  registry=reg)
        self._last_reload.set(1)
        self._store_ops = Counter("rtmbotd_store_operations",
                                  "Store reads and writes (plugin keys, outbox rows), by outcome",
                                  ["outcome"], registry=reg)
        self._store_seconds = Histogram("rtmbotd_store_operation_seconds", "How long store operations took",
                                        buckets=STORE_BUCKETS, registry=reg)
        self._leader: Gauge | None = None
        for reason in RECONNECT_REASONS:        # at 0 from the start, so rate() and increase() see the first
            self._reconnects.labels(reason)
        for result in ("ok", "rejected"):
            self._reloads.labels(result)
        for outcome in ("ok", "error"):
            self._store_ops.labels(outcome)
        self._lock = threading.Lock()
        self._slowest: dict[str, float] = {}
        self._labelled: set[str] = set()
        # Children by raw value: a hook is a dict look-up and an inc, not label checks and
        # .labels()'s lock on every event (it runs on the latency path).
        self._event_children: dict[str, Counter] = {}
        # rtmbotd's own reasons at 0 from the start (they count against the cap too)
        self._failed_children: dict[str, Counter] = {r: self._failed.labels(r) for r in DROP_REASONS}
        self._plugin_children: dict[str, tuple] = {}

    def connected(self, up: bool) -> None:
        self._connected.set(1 if up else 0)

    def event_received(self, kind: str) -> None:
        child = self._event_children.get(kind)
        if child is None:
            child = _bounded_child(self._events, self._event_children, kind)
        child.inc()

    def plugin_call(self, plugin: str, seconds: float, ok: bool) -> None:
        children = self._plugin_children.get(plugin)
        if children is None:
            children = self._plugin_children.setdefault(plugin, (
                self._calls.labels(plugin, "ok"), self._calls.labels(plugin, "error"),
                self._duration.labels(plugin)))
        children[2].observe(seconds)
        if seconds > self._slowest.get(plugin, -1.0):
            with self._lock:
                if seconds > self._slowest.get(plugin, -1.0):
                    self._slowest[plugin] = seconds
                    self._slowest_gauge.labels(plugin).set(seconds)
        children[0 if ok else 1].inc()      # last: whoever sees the count sees the rest too

    def plugins_busy(self, plugins: Iterable[str], stuck: Iterable[str]) -> None:
        names = set(plugins)
        counts = dict.fromkeys(names, 0)
        for name in stuck:
            counts[name] = counts.get(name, 0) + 1
        for name in self._labelled - counts.keys():   # unloaded by a reload
            self._busy.remove(name)
        for name, count in counts.items():
            self._busy.labels(name).set(count)
            if name not in self._labelled:
                self._calls.labels(name, "ok")
                self._calls.labels(name, "error")
        self._labelled = set(counts)

    def message_sent(self, waited: float | None) -> None:
        if waited is not None:
            self._wait.observe(max(0.0, waited))
        self._sent.inc()                    # counts last, as in plugin_call

    def message_failed(self, reason: str) -> None:
        child = self._failed_children.get(reason)
        if child is None:
            child = _bounded_child(self._failed, self._failed_children, reason)
        child.inc()

    def outbox_queued(self, count: Callable[[], int]) -> None:
        self._queued.set(count())

    def reconnect(self, reason: str) -> None:
        self._reconnects.labels(reason if reason in RECONNECT_REASONS else "error").inc()

    def reloaded(self, ok: bool, generation: int) -> None:
        self._last_reload.set(1 if ok else 0)
        self._generation.set(generation)
        self._reloads.labels("ok" if ok else "rejected").inc()

    def generation(self, number: int) -> None:
        self._generation.set(number)

    def store_operation(self, seconds: float, ok: bool) -> None:
        self._store_seconds.observe(seconds)
        self._store_ops.labels("ok" if ok else "error").inc()

    def cluster_leader(self, leader: bool) -> None:
        if self._leader is None:         # only a node in cluster mode has the gauge
            self._leader = Gauge("rtmbotd_cluster_leader", "1 on the cluster's leader, else 0",
                                 registry=self.registry)
        self._leader.set(1 if leader else 0)


def _bounded_child(metric: Counter, children: dict[str, Counter], value: str) -> Counter:
    """The child for a value from Slack: `label`'s rules, and "other" past MAX_LABEL_VALUES."""
    name = label(value) if len(children) < MAX_LABEL_VALUES else "other"
    child = metric.labels(name)
    if len(children) < MAX_LABEL_VALUES:
        children[value] = child
    return child
