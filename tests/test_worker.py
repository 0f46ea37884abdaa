"""Plugin threads and dispatch: a bad output or event costs only itself."""
import queue
import threading
import types
from pathlib import Path

from rtmbotd.router import Output
from rtmbotd.runtime.host import PluginHost
from rtmbotd.runtime.loader import LoadedPlugin, PluginSet, Unit
from rtmbotd.runtime.worker import PluginReport, Worker
from rtmbotd.testing.waiting import wait_until


class ItemsRaise(dict):
    def items(self):
        raise RuntimeError("items says no")

    keys = __iter__ = items


def deep_dict(levels):
    value = {"text": "bottom"}
    for _ in range(levels):
        value = {"blocks": [value]}
    return value


def module_unit(name, **attrs):
    return Unit(name, name, types.SimpleNamespace(outputs=[], crontable=[], **attrs), False)


def test_outputs_are_plain_data_from_the_plugin_thread_and_bad_ones_go_alone(caplog):
    unit = module_unit("messy")
    reports = queue.SimpleQueue()
    release = threading.Event()

    class GetBlocks(dict):
        def get(self, *args):
            release.wait()

    unit.target.outputs.extend([
        ["C1", "first"],
        {"channel": "C1", "text": "too deep", "blocks": [deep_dict(5000)]},
        ["C1", object()],
        GetBlocks(channel="C1", text="its .get would block"),
        "neither a list nor a dict",
        {"channel": "C1", "text": "last"},
    ])
    worker = Worker(unit, reports.put).start()
    report = reports.get(timeout=10)
    assert isinstance(report, PluginReport)
    assert all(type(out) is Output for out in report.outputs)
    assert [(o.target, o.text, o.plugin) for o in report.outputs] == [
        ("C1", "first", "messy"), ("C1", "its .get would block", "messy"), ("C1", "last", "messy")]
    assert caplog.text.count("plugin messy: output") == 3
    release.set()
    worker.stop()


def test_event_nested_deeper_than_the_recursion_limit_reaches_every_plugin():
    seen = {"a": [], "b": []}
    host = PluginHost(lambda item: None, clock=lambda: 0.0)
    units = [module_unit(n, process_message=seen[n].append) for n in seen]
    host.swap(PluginSet(1, {"p": LoadedPlugin("p", Path("."), "", (), "", units, [])}, {}))
    host.dispatch("message", deep_dict(900))
    wait_until(lambda: all(seen.values()), 10, "both plugins to get the deep event")
    a, b = seen["a"][0], seen["b"][0]
    for _ in range(900):             # the same all the way down, and no container shared
        assert a is not b and a.keys() == b.keys() == {"blocks"}
        a, b = a["blocks"][0], b["blocks"][0]
    assert a == b == {"text": "bottom"}
    host.stop()


def test_event_that_cannot_be_copied_is_logged_once_and_the_next_reaches_everyone(caplog):
    seen = {"a": [], "b": []}
    host = PluginHost(lambda item: None, clock=lambda: 0.0)
    units = [module_unit(n, process_message=seen[n].append) for n in seen]
    host.swap(PluginSet(1, {"p": LoadedPlugin("p", Path("."), "", (), "", units, [])}, {}))
    host.dispatch("message", ItemsRaise(type="message", text="bad"))
    host.dispatch("message", {"type": "message", "text": "good"})
    wait_until(lambda: all(seen.values()), 10, "both plugins to get the next event")
    assert seen == {"a": [{"type": "message", "text": "good"}], "b": [{"type": "message", "text": "good"}]}
    assert caplog.text.count("message event dropped: it cannot be copied") == 1
    host.stop()


class LookupsRaise:
    """A class plugin reading its settings through __getattr__ (KeyError, not AttributeError),
    with an `outputs` property that has broken too."""

    settings: dict = {}

    def __getattr__(self, name):
        return self.settings[name]

    @property
    def outputs(self):
        raise RuntimeError("outputs property")


def test_a_plugin_whose_attribute_lookups_raise_costs_only_itself(caplog):
    seen = []
    host = PluginHost(lambda item: None, clock=lambda: 0.0)
    units = [Unit("odd", "odd", LookupsRaise(), True), module_unit("fine", process_message=seen.append)]
    host.swap(PluginSet(1, {"p": LoadedPlugin("p", Path("."), "", (), "", units, [])}, {}))
    host.dispatch("message", {"type": "message", "text": "hi"})      # raised KeyError on the loop
    assert host.sweep_outputs() == 0                                  # raised RuntimeError on the loop
    wait_until(lambda: seen, 10, "the other plugin to get the event")
    assert seen == [{"type": "message", "text": "hi"}]
    assert "plugin odd: looking up its handler for a message event raised" in caplog.text
    host.stop()


def test_host_names_jobs_by_unit_and_function_and_runs_cron_jobs_by_the_wall_clock():
    from rtmbotd.runtime.cron import parse
    reports = queue.SimpleQueue()
    clocks = {"mono": 50.0, "wall": 1_800_000_000.0 - 1}      # a second before a whole minute
    host = PluginHost(reports.put, clock=lambda: clocks["mono"], wall=lambda: clocks["wall"])
    ran = []
    a = Unit("todo/a", "todo", types.SimpleNamespace(outputs=[], crontable=[]), False)
    b = Unit("todo/b", "todo", types.SimpleNamespace(outputs=[], crontable=[]), False)
    host.swap(PluginSet(1, {"todo": LoadedPlugin("todo", Path("."), "", (), "", [a, b], [])}, {}))
    workers = {w.unit.name: w for w in host.workers}
    host.reported(PluginReport(workers["todo/a"], [], [(parse("* * * * *"), lambda: ran.append("a"), "tick")]))
    host.reported(PluginReport(workers["todo/b"], [], [(parse("* * * * *"), lambda: ran.append("b"), "tick")]))
    assert sorted(e.name for e in host.scheduler._entries.values()) == ["todo/a/tick", "todo/b/tick"]
    assert host.next_deadline() == 51.0
    host.run_due_jobs(51.0)          # the monotonic deadline came, the wall clock did not yet
    assert ran == []
    clocks["mono"], clocks["wall"] = 51.0, 1_800_000_000.0
    host.run_due_jobs(51.0)
    wait_until(lambda: sorted(ran) == ["a", "b"], 10, "both cron jobs to run")
    assert host.scheduler.last_runs() == {"todo/a/tick": 1_800_000_000.0, "todo/b/tick": 1_800_000_000.0}
    host.stop()


class JobsRaise:
    """A class plugin whose `jobs` property has broken, with outputs waiting."""

    def __init__(self):
        self.outputs = [["C1", "still sent"]]

    @property
    def jobs(self):
        raise RuntimeError("jobs property")


def test_a_broken_jobs_list_does_not_cost_the_calls_outputs(caplog):
    reports = queue.SimpleQueue()
    worker = Worker(Unit("odd", "odd", JobsRaise(), True), reports.put).start()
    report = reports.get(timeout=10)       # its first flush, before any call
    assert isinstance(report, PluginReport)
    assert [(o.target, o.text) for o in report.outputs] == [("C1", "still sent")]
    assert "plugin odd: reading its crontable/jobs failed" in caplog.text
    worker.stop()


def test_job_names_do_not_depend_on_which_units_thread_reported_first():
    from rtmbotd.runtime.cron import parse
    names = []
    for order in (("p/a", "p/b"), ("p/b", "p/a")):      # two files of plugin p, both with `tick`
        host = PluginHost(lambda item: None, clock=lambda: 0.0)
        units = [Unit(n, "p", types.SimpleNamespace(outputs=[], crontable=[]), False) for n in ("p/a", "p/b")]
        host.swap(PluginSet(1, {"p": LoadedPlugin("p", Path("."), "", (), "", units, [])}, {}))
        workers = {w.unit.name: w for w in host.workers}
        for unit_name in order:
            for _ in range(2):                           # and a repeat inside one unit
                host.reported(PluginReport(workers[unit_name], [], [(parse("@daily"), lambda: None, "tick")]))
        names.append(sorted((e.target[0].unit.name, e.name) for e in host.scheduler._entries.values()))
        host.stop()
    assert names[0] == names[1] == [("p/a", "p/a/tick"), ("p/a", "p/a/tick#2"), ("p/b", "p/b/tick"), ("p/b", "p/b/tick#2")]
