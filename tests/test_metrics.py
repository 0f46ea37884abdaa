"""The metrics core: METRICS parsing, the recorder's hooks, the exposition server, the summary."""
import os
import socket
import subprocess
import threading
import sys
import urllib.error
import urllib.request

import pytest

from rtmbotd.config import load_config
from rtmbotd.errors import ConfigError
from rtmbotd.metrics import Address, MetricsError, Recorder, parse_address
from rtmbotd.metrics.recorder import label
from rtmbotd.metrics.server import MetricsServer, check_listen
from rtmbotd.metrics.summary import scrape, summarize


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample(families, name, **labels):
    return sum(s.value for fam in families.values() for s in fam.samples
               if s.name == name and labels.items() <= s.labels.items())


@pytest.fixture
def served():
    recorder, server = Recorder(), MetricsServer()
    address = Address("127.0.0.1", free_port())
    server.serve(address, recorder)
    yield recorder, server, address
    server.close().join()


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9810", Address("127.0.0.1", 9810)),
    (" localhost:9810 ", Address("localhost", 9810)),
    ("[::1]:9810", Address("::1", 9810)),
    ("0.0.0.0:65535", Address("0.0.0.0", 65535)),
])
def test_address_parsed(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text, why", [
    ("nonsense", "must be host:port"), (":9810", "must be host:port"), ("::1:9810", "must be host:port"),
    ("[nope]:9810", "must be host:port"), ("127.0.0.1:http", "must be host:port"),
    ("127.0.0.1:0", "1 to 65535"), ("127.0.0.1:70000", "1 to 65535"),
    ("127.0.0.1:\u00b2", "must be host:port"),      # "²".isdigit() but int() refuses it
    ("a" * 64 + ":9810", "not a host name"), ("a..b:9810", "not a host name"),   # getaddrinfo: UnicodeError
])
def test_bad_address_names_metrics(text, why):
    with pytest.raises(MetricsError, match=f"^METRICS: .*{why}"):
        parse_address(text)


def test_scrape_url_of_a_wildcard_bind_is_loopback():
    assert parse_address("0.0.0.0:9810").url == "http://127.0.0.1:9810/metrics"
    assert parse_address("[::]:9810").url == "http://[::1]:9810/metrics"


def test_config_key(tmp_path):
    conf = tmp_path / "rtmbot.conf"
    conf.write_text('SLACK_TOKEN: xoxb-1\nMETRICS: "127.0.0.1:9810"\n')
    assert load_config(conf, env={}).metrics == Address("127.0.0.1", 9810)
    conf.write_text('SLACK_TOKEN: xoxb-1\n')
    assert load_config(conf, env={}).metrics is None
    for bad in ('METRICS: "nonsense"', "METRICS: 9810"):
        conf.write_text(f"SLACK_TOKEN: xoxb-1\n{bad}\n")
        with pytest.raises(ConfigError, match=r"rtmbot.conf: METRICS: ") as err:
            load_config(conf, env={})
        assert "\n" not in str(err.value)


def test_labels_from_slack_are_bounded():
    assert label("message") == "message"
    assert label("reaction_added") == "reaction_added"
    assert label("Hello <@U1ALICE> xoxb-secret text") == "other"
    assert label("x" * 65) == "other"
    assert label("Message") == "other"          # Slack's names are lowercase
    assert label(None) == "other"


def test_recorder_off_imports_no_prometheus_client():
    code = ("import sys, rtmbotd.daemon, rtmbotd.cli\n"
            "from rtmbotd.metrics import Recorder\n"
            "r = Recorder(); r.event_received('message'); r.plugin_call('p', 0.1, False)\n"
            "assert 'prometheus_client' not in sys.modules, 'imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hooks_move_the_metrics(served):
    recorder, _server, address = served
    recorder.event_received("message")
    recorder.event_received("message")
    recorder.event_received("secret text from U1ALICE")
    recorder.plugin_call("repeat", 0.02, True)
    recorder.plugin_call("repeat", 0.5, False)
    recorder.plugin_call("repeat", 0.1, True)
    recorder.plugins_busy(["repeat", "slow"], ["slow"])
    recorder.message_sent(1.5)
    recorder.message_failed("channel_not_found")
    recorder.outbox_queued(lambda: 7)
    recorder.reconnect("goodbye")
    recorder.reconnect("something else")
    recorder.reloaded(False, 1)
    recorder.reloaded(True, 2)
    recorder.store_operation(0.003, True)
    recorder.connected(True)
    f = scrape(address)
    expected = [
        ("rtmbotd_events_received_total", {"type": "message"}, 2),
        ("rtmbotd_events_received_total", {"type": "other"}, 1),
        ("rtmbotd_plugin_calls_total", {"plugin": "repeat", "outcome": "ok"}, 2),
        ("rtmbotd_plugin_calls_total", {"plugin": "repeat", "outcome": "error"}, 1),
        ("rtmbotd_plugin_calls_total", {"plugin": "slow"}, 0),     # present, at 0
        ("rtmbotd_plugin_call_duration_seconds_count", {"plugin": "repeat"}, 3),
        ("rtmbotd_plugin_call_slowest_seconds", {"plugin": "repeat"}, 0.5),
        ("rtmbotd_plugin_busy", {"plugin": "slow"}, 1),
        ("rtmbotd_plugin_busy", {"plugin": "repeat"}, 0),
        ("rtmbotd_messages_sent_total", {}, 1),
        ("rtmbotd_outbox_wait_seconds_sum", {}, 1.5),
        ("rtmbotd_messages_failed_total", {"reason": "channel_not_found"}, 1),
        ("rtmbotd_outbox_queued", {}, 7),
        ("rtmbotd_reconnects_total", {"reason": "goodbye"}, 1),
        ("rtmbotd_reconnects_total", {"reason": "error"}, 1),
        ("rtmbotd_reconnects_total", {"reason": "drop"}, 0),
        ("rtmbotd_reloads_total", {"result": "rejected"}, 1),
        ("rtmbotd_reloads_total", {"result": "ok"}, 1),
        ("rtmbotd_config_last_reload_successful", {}, 1),
        ("rtmbotd_generation", {}, 2),
        ("rtmbotd_store_operations_total", {"outcome": "ok"}, 1),
        ("rtmbotd_store_operation_seconds_count", {}, 1),
        ("rtmbotd_connected", {}, 1),
    ]
    assert [(name, labels, sample(f, name, **labels)) for name, labels, _ in expected] == expected
    assert "rtmbotd_cluster_leader" not in f        # not in cluster mode
    assert "process_resident_memory_bytes" in f and "python_info" in f
    recorder.plugins_busy(["repeat"], [])           # 'slow' unloaded by a reload
    assert sample(scrape(address), "rtmbotd_plugin_busy", plugin="slow") == 0
    assert 'plugin="slow"' not in _text(address).split("rtmbotd_plugin_busy")[1].split("# HELP")[0]
    recorder.cluster_leader(True)
    assert sample(scrape(address), "rtmbotd_cluster_leader") == 1


def _text(address):
    return urllib.request.urlopen(address.url, timeout=5).read().decode()


def test_two_daemons_in_one_process_keep_their_own_registries(served):
    recorder, _server, address = served
    other, other_server = Recorder(), MetricsServer()
    other_address = Address("127.0.0.1", free_port())
    other_server.serve(other_address, other)
    try:
        other.event_received("message")
        assert sample(scrape(other_address), "rtmbotd_events_received_total") == 1
        assert sample(scrape(address), "rtmbotd_events_received_total") == 0
    finally:
        other_server.close().join()


def test_serve_moves_binding_first_and_keeps_the_old_address_on_failure(served):
    recorder, server, address = served
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = Address("127.0.0.1", taken.getsockname()[1])
        with pytest.raises(MetricsError, match=f"^METRICS: cannot listen on {busy}: address already in use by "
                                               rf"this process \(pid {os.getpid()}\)$"):
            server.serve(busy, recorder)
    assert server.address == address
    assert "rtmbotd_build_info" in scrape(address)
    new = Address("127.0.0.1", free_port())
    server.serve(new, recorder)
    assert "rtmbotd_build_info" in scrape(new)
    from rtmbotd.testing.waiting import wait_until
    wait_until(lambda: _refused(address), 10, "the old address to close")


def test_serve_to_another_host_on_the_same_port(served):
    recorder, server, address = served
    wildcard = Address("0.0.0.0", address.port)
    server.serve(wildcard, recorder)
    assert server.address == wildcard
    assert "rtmbotd_build_info" in scrape(wildcard)


@pytest.fixture
def joins(monkeypatch):
    """Thread joins made by this (the loop's) thread: the loop must never wait for the old server."""
    made, join = [], threading.Thread.join

    def recording(thread, timeout=None):
        if threading.current_thread() is threading.main_thread():
            made.append(thread.name)
        return join(thread, timeout)
    monkeypatch.setattr(threading.Thread, "join", recording)
    return made


@pytest.mark.parametrize("host", ["0.0.0.0", "localhost"])
def test_moving_to_another_host_on_the_same_port_never_waits_for_the_old_thread(served, joins, host):
    recorder, server, address = served
    for target in (Address(host, address.port), address):      # there and back
        server.serve(target, recorder)
        assert server.address == target and "rtmbotd_build_info" in scrape(target)
    server.serve(Address("127.0.0.1", free_port()), recorder)  # another port
    assert joins == []


def test_same_port_move_that_fails_serves_the_old_address_again(served, joins):
    recorder, server, address = served
    with pytest.raises(MetricsError, match="no such address on this host"):
        server.serve(Address("192.0.2.1", address.port), recorder)     # TEST-NET-1: never local
    assert server.address == address
    assert "rtmbotd_build_info" in scrape(address)
    assert joins == []


def test_serve_none_stops_listening(served):
    recorder, server, address = served
    server.serve(None, recorder)
    from rtmbotd.testing.waiting import wait_until
    wait_until(lambda: _refused(address), 10, "the address to close")


def _refused(address):
    try:
        urllib.request.urlopen(address.url, timeout=2)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    except OSError:          # accepted into the backlog just before the close: reset
        return False
    return False


def test_check_listen_accepts_the_daemons_own_server(served, tmp_path):
    _recorder, _server, address = served
    check_listen(address, tmp_path / "rtmbot.conf")     # held by this very process


def test_check_listen_refuses_a_port_held_by_another_process(tmp_path):
    listener = subprocess.Popen([sys.executable, "-c", "import socket, sys, time\n"
                                 "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
                                 "print(s.getsockname()[1], flush=True); time.sleep(120)"],
                                stdout=subprocess.PIPE, text=True)
    try:
        address = Address("127.0.0.1", int(listener.stdout.readline()))
        with pytest.raises(MetricsError, match=rf"already in use by another process \(pid {listener.pid}: "):
            check_listen(address, tmp_path / "rtmbot.conf")
    finally:
        listener.kill()
        listener.wait()


@pytest.mark.parametrize("argv, args", [
    (["/usr/bin/rtmbotd", "-c", "/etc/x.conf"], ["-c", "/etc/x.conf"]),
    (["/venv/bin/python", "/venv/bin/rtmbotd", "--config=x.conf"], ["--config=x.conf"]),
    (["python3", "-m", "rtmbotd", "-c", "x.conf", ""], ["-c", "x.conf"]),
    (["python3", "-m", "http.server"], None),
    (["nginx: master process"], None),
])
def test_rtmbotd_command_lines_recognised(argv, args):
    from rtmbotd.metrics.holder import _rtmbotd_args
    assert _rtmbotd_args(argv) == args


def test_the_daemon_of_a_config_is_found_by_its_config_file_or_mainpid(tmp_path, monkeypatch):
    from rtmbotd.metrics.holder import config_of, is_daemon_of
    conf = tmp_path / "rtmbot.conf"
    conf.write_text("SLACK_TOKEN: xoxb-1\n")
    monkeypatch.delenv("MAINPID", raising=False)
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "rtmbotd", "-c", "rtmbot.conf"],
                            cwd=tmp_path)
    try:
        assert config_of(fake.pid) is None          # "rtmbotd" is not its program
    finally:
        fake.kill()
        fake.wait()
    script = tmp_path / "rtmbotd"
    script.write_text("import time; time.sleep(120)\n")
    daemon = subprocess.Popen([sys.executable, str(script), "-c", "rtmbot.conf"], cwd=tmp_path)
    try:
        wait_for = __import__("rtmbotd.testing.waiting", fromlist=["wait_until"]).wait_until
        wait_for(lambda: config_of(daemon.pid) is not None, 30, "its command line")
        assert config_of(daemon.pid) == conf.resolve()
        assert is_daemon_of(daemon.pid, conf)
        assert not is_daemon_of(daemon.pid, tmp_path / "other.conf")
        monkeypatch.setenv("MAINPID", str(daemon.pid))     # systemd's ExecReload
        assert is_daemon_of(daemon.pid, tmp_path / "other.conf")
        monkeypatch.setenv("MAINPID", "1")
        assert not is_daemon_of(daemon.pid, conf)         # the same config, but not the unit's daemon
    finally:
        daemon.kill()
        daemon.wait()


def test_summary_of_a_scrape(served):
    recorder, _server, address = served
    recorder.connected(True)
    recorder.generation(3)
    recorder.plugins_busy(["repeat", "slow"], ["slow"])
    recorder.plugin_call("repeat", 0.25, True)
    recorder.plugin_call("repeat", 0.5, False)
    recorder.outbox_queued(lambda: 4)
    recorder.reconnect("drop")
    text = summarize(scrape(address))
    expected = ["link: connected; reconnects: 1 drop", "generation: 3",
                "  repeat  2 call(s), 1 error(s), slowest 0.500 s",
                "  slow    0 call(s), 0 error(s), 1 running past PLUGIN_TIMEOUT now",
                "outbox: 4 queued", "cluster: not in cluster mode"]
    assert [line for line in expected if line not in text] == [], text
    recorder.cluster_leader(False)
    assert "cluster: follower" in summarize(scrape(address))


def test_summary_says_the_last_reload_was_rejected(served):
    recorder, _server, address = served
    recorder.reloaded(False, 1)
    assert "generation: 1; reloads: 1 rejected (the last one was REJECTED)" in summarize(scrape(address))
    recorder.reloaded(True, 2)
    assert "generation: 2; reloads: 1 ok, 1 rejected\n" in summarize(scrape(address))


def _unit(name, **attrs):
    import types

    from rtmbotd.runtime.loader import Unit
    return Unit(name, name, types.SimpleNamespace(outputs=[], crontable=[], **attrs), False)


def _host(units, recorder, report=lambda item: None):
    import time
    from pathlib import Path

    from rtmbotd.runtime.host import PluginHost
    from rtmbotd.runtime.loader import LoadedPlugin, PluginSet
    host = PluginHost(report, clock=time.monotonic, recorder=recorder)
    host.swap(PluginSet(1, {"p": LoadedPlugin("p", Path("."), "", (), "", units, [])}, {}))
    return host


def test_plugin_calls_counted_by_outcome_on_the_plugins_thread():
    from rtmbotd.testing.waiting import wait_until

    recorder = Recorder()
    registry = recorder.enable("test").registry

    def boom(data):
        raise RuntimeError("boom")

    units = [_unit("good", process_message=lambda data: None), _unit("bad", process_message=boom),
             _unit("bad_catch_all", catch_all=boom)]
    host = _host(units, recorder)
    for _ in range(3):
        host.dispatch("message", {"type": "message", "text": "hi"})
    units[0].target.outputs.append(["C1", "from a thread"])
    host.sweep_outputs()                   # an empty call to drain outputs: not a plugin call

    def calls(plugin, outcome):
        return registry.get_sample_value("rtmbotd_plugin_calls_total", {"plugin": plugin, "outcome": outcome})
    wait_until(lambda: (calls("good", "ok"), calls("bad", "error"), calls("bad_catch_all", "error")) == (3, 3, 3),
               10, "every call counted")
    wait_until(lambda: not units[0].target.outputs, 10, "the sweep to run")
    assert calls("good", "error") == 0 and calls("bad", "ok") == 0
    assert registry.get_sample_value("rtmbotd_plugin_call_duration_seconds_count", {"plugin": "good"}) == 3
    host.stop()


def test_a_failing_metrics_hook_costs_neither_the_worker_nor_its_reports():
    from rtmbotd.runtime.worker import PluginReport, WorkerExited
    from rtmbotd.testing.waiting import wait_until

    class Broken(Recorder):
        def plugin_call(self, plugin, seconds, ok):
            raise RuntimeError("hook broke")

        message_failed = plugin_call

    reports = []
    unit = _unit("echo")
    unit.target.process_message = lambda data: unit.target.outputs.extend([["C1", data["text"]], ["C1"]])
    host = _host([unit], Broken(), reports.append)
    worker = host.workers[0]
    for text in ("one", "two"):
        host.dispatch("message", {"type": "message", "text": text})
    wait_until(lambda: [o.text for r in reports if isinstance(r, PluginReport) for o in r.outputs] == ["one", "two"],
               10, "both calls' outputs reported")
    wait_until(lambda: worker.backlog == 0 and worker.busy_since is None, 10, "both calls finished")
    host.stop()
    wait_until(lambda: any(isinstance(r, WorkerExited) for r in reports), 10, "the worker to exit")


def test_bad_outputs_are_counted_as_failed():
    from rtmbotd.testing.waiting import wait_until

    recorder = Recorder()
    registry = recorder.enable("test").registry
    unit = _unit("bad")
    unit.target.process_message = lambda data: unit.target.outputs.extend([["C1"], {"text": "no channel"},
                                                                            ["C1", "fine"], object()])
    host = _host([unit], recorder)
    host.dispatch("message", {"type": "message", "text": "hi"})
    wait_until(lambda: registry.get_sample_value("rtmbotd_plugin_calls_total", {"plugin": "bad", "outcome": "ok"})
               == 1, 10, "the call counted")
    assert registry.get_sample_value("rtmbotd_messages_failed_total", {"reason": "bad_output"}) == 3
    host.stop()


def test_store_operations_timed_once_each_and_database_errors_counted(tmp_path):
    import sqlite3

    from rtmbotd.errors import StoreError
    from rtmbotd.store.lazy import open_daemon_store
    recorder = Recorder()
    registry = recorder.enable("test").registry
    path = tmp_path / "store.sqlite"
    store = open_daemon_store(f"sqlite:///{path}", tmp_path, recorder=recorder)

    def ops(outcome):
        return registry.get_sample_value("rtmbotd_store_operations_total", {"outcome": outcome})
    before = ops("ok")                      # opening read the outbox
    plugin = store.plugin("counter")
    plugin["seen"] = 1
    assert plugin["seen"] == 1
    with plugin.transaction() as tx:        # one operation however many steps inside
        tx["a"] = tx.get("a", 0) + 1
        tx["b"] = 2
    assert ops("ok") - before == 3 and ops("error") == 0
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE rtmbot_kv")
    with pytest.raises(StoreError):
        plugin["seen"] = 2
    assert ops("error") == 1
    assert registry.get_sample_value("rtmbotd_store_operation_seconds_count") == ops("ok") + ops("error")
    store.close()


def test_distinct_values_from_slack_are_capped():
    from rtmbotd.metrics.live import MAX_LABEL_VALUES
    from rtmbotd.metrics.recorder import DROP_REASONS
    recorder = Recorder()
    registry = recorder.enable("test").registry
    for i in range(MAX_LABEL_VALUES + 50):
        recorder.event_received(f"type_{i}")
        recorder.message_failed(f"error_{i}")
    for name, ours in (("rtmbotd_events_received_total", 0), ("rtmbotd_messages_failed_total", len(DROP_REASONS))):
        values = [s for m in registry.collect() for s in m.samples if s.name == name]
        assert len(values) == MAX_LABEL_VALUES + 1                  # and "other"
        assert sum(s.value for s in values) == MAX_LABEL_VALUES + 50
        assert [s.value for s in values if "other" in s.labels.values()] == [50 + ours]   # ours hold places
    recorder.event_received("type_0")                               # a known one still counts as itself
    assert registry.get_sample_value("rtmbotd_events_received_total", {"type": "type_0"}) == 2


def test_the_link_metrics_stay_true_at_a_rejected_token_and_at_the_stop():
    """A token Slack rejects replaces the live link ('error'); a stopped connector has no link."""
    import asyncio

    from rtmbotd.slack.connector import SendResult
    from rtmbotd.slack.web import WebError
    from tests.test_connector import connected_rtm

    async def scenario():
        recorder = Recorder()
        registry = recorder.enable("test").registry
        conn, box, _link, _posts = connected_rtm()
        conn.recorder = recorder
        recorder.connected(True)                  # as on_hello said
        box.enqueue("C1", "with blocks", "p", 0.0, {"blocks": [{"type": "divider"}]})    # by the Web API
        (msg, _), = box.ready(0.0, socket=True, web=True)
        conn.handle_sent(SendResult(msg, WebError("chat.postMessage", "token_revoked", status=200)))
        assert registry.get_sample_value("rtmbotd_reconnects_total", {"reason": "error"}) == 1
        assert registry.get_sample_value("rtmbotd_connected") == 0
        again, _box, second, _posts = connected_rtm()
        again.recorder = recorder
        recorder.connected(True)
        await again.close()
        assert registry.get_sample_value("rtmbotd_connected") == 0
        for task in list(conn._tasks):
            task.cancel()
        await asyncio.gather(*conn._tasks, return_exceptions=True)
    asyncio.run(scenario())
