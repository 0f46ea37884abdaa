"""Issue 13: a real daemon's /metrics against the fake Slack, METRICS errors, `rtmbotd status`."""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from rtmbotd.metrics import Address
from rtmbotd.metrics.summary import scrape
from tests.e2e.harness import clean_env, rtmbotd_command, wait_until

OK_PLUGIN = "outputs = []\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, env: dict | None = None, user: str | None = None) -> subprocess.CompletedProcess:
    prefix = ["runuser", "-u", user, "--"] if user else []
    return subprocess.run(prefix + rtmbotd_command() + list(args), env=env or clean_env(), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def value(address: Address, name: str, **labels: str) -> float:
    return sum(s.value for fam in scrape(address).values() for s in fam.samples
               if s.name == name and labels.items() <= s.labels.items())


def listening_ports(pid: int) -> set[int]:
    """TCP ports process `pid` listens on: its socket fds matched in /proc/net/tcp{,6}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:      # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture
def metrics_bot(make_bot):
    def make(**kwargs):
        address = Address("127.0.0.1", free_port())
        settings = {"METRICS": str(address), **kwargs.pop("settings", {})}
        bot = make_bot(settings=settings, **kwargs)
        bot.metrics = address
        return bot
    return make


# -- serving, or not ---------------------------------------------------------------------------------


def test_nothing_listens_without_metrics(make_bot):
    bot = make_bot(plugins={"a": OK_PLUGIN}).start()
    assert listening_ports(bot.proc.pid) == set()


def test_metrics_served_where_the_admin_says(metrics_bot):
    bot = metrics_bot(plugins={"a": OK_PLUGIN}).start()
    assert listening_ports(bot.proc.pid) == {bot.metrics.port}
    families = scrape(bot.metrics)
    from rtmbotd import __version__
    assert value(bot.metrics, "rtmbotd_build_info", version=__version__) == 1
    assert "process_resident_memory_bytes" in families and "python_gc_objects_collected" in families
    assert f"metrics: serving http://{bot.metrics}/metrics" in bot.log()


def test_reload_moves_the_metrics_address(metrics_bot):
    bot = metrics_bot(plugins={"a": OK_PLUGIN}).start()
    old, new = bot.metrics, Address("127.0.0.1", free_port())
    bot.settings["METRICS"] = str(new)
    bot.write_config()
    bot.signal(signal.SIGHUP)
    bot.wait_log(r"reloaded: generation 2", timeout=30)
    assert "rtmbotd_build_info" in scrape(new)
    wait_until(lambda: listening_ports(bot.proc.pid) == {new.port}, 10, "only the new address listened on")
    del bot.settings["METRICS"]                       # unset by a reload: nothing listens
    bot.write_config()
    bot.signal(signal.SIGHUP)
    bot.wait_log(r"reloaded: generation 3", timeout=30)
    wait_until(lambda: listening_ports(bot.proc.pid) == set(), 10, "nothing listened on")
    assert old != new


def test_reload_to_another_host_on_the_same_port(metrics_bot):
    """The old socket leaves LISTEN before the new bind, so the port moves within one reload."""
    bot = metrics_bot(plugins={"a": OK_PLUGIN}).start()
    for n, host in enumerate(("0.0.0.0", "127.0.0.1"), start=2):        # there and back
        bot.settings["METRICS"] = f"{host}:{bot.metrics.port}"
        bot.write_config()
        bot.signal(signal.SIGHUP)
        bot.wait_log(rf"reloaded: generation {n}", timeout=30)
        assert "rtmbotd_build_info" in scrape(Address(host, bot.metrics.port))
        assert listening_ports(bot.proc.pid) == {bot.metrics.port}
    assert "reload rejected" not in bot.log()


def test_metrics_turned_on_by_a_reload_see_the_link_already_up(make_bot):
    bot = make_bot(plugins={"a": OK_PLUGIN}).start()
    address = Address("127.0.0.1", free_port())
    bot.settings["METRICS"] = str(address)
    bot.write_config()
    bot.signal(signal.SIGHUP)
    bot.wait_log(r"reloaded: generation 2", timeout=30)
    assert value(address, "rtmbotd_connected") == 1      # else "disconnected" alerts fire on a live link
    assert "link: connected;" in run_cli("-c", str(bot.conf), "status").stdout


def test_reload_to_an_address_in_use_is_rejected_and_the_old_one_kept(metrics_bot):
    bot = metrics_bot(plugins={"a": OK_PLUGIN}).start()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = Address("127.0.0.1", taken.getsockname()[1])
        bot.settings["METRICS"] = str(busy)
        bot.write_config()
        mark = len(bot.notify.messages)
        bot.signal(signal.SIGHUP)
        ready = bot.notify.wait_for("READY", "1", after=mark, timeout=30)
        status = bot.notify.messages[ready][1]["STATUS"]
        assert status.startswith(f"reload failed: METRICS: cannot listen on {busy}: address already in use")
        assert "generation 1" in status
    assert listening_ports(bot.proc.pid) == {bot.metrics.port}
    assert "rtmbotd_build_info" in scrape(bot.metrics)


def test_reload_to_a_host_name_that_cannot_be_encoded_is_rejected(metrics_bot):
    """A label over 63 characters: getaddrinfo's UnicodeError once left the reload unfinished."""
    bot = metrics_bot(plugins={"a": OK_PLUGIN}).start()
    bot.settings["METRICS"] = "a" * 64 + ":9810"
    bot.write_config()
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGHUP)
    ready = bot.notify.wait_for("READY", "1", after=mark, timeout=30)
    assert bot.notify.messages[ready][1]["STATUS"].startswith("reload failed: ")
    assert "METRICS: " in bot.notify.messages[ready][1]["STATUS"]
    assert "rtmbotd_build_info" in scrape(bot.metrics)


# -- bad METRICS: one line naming it, exit 78, at --check-config and at start -------------------------


def _config(folder: Path, metrics: str) -> Path:
    conf = folder / "rtmbot.conf"
    conf.write_text(yaml.safe_dump({"SLACK_TOKEN": "xoxb-e2e", "SLACK_API_URL": "http://127.0.0.1:9/api/",
                                    "STORE_URL": f"sqlite:///{folder / 'store.sqlite'}", "METRICS": metrics}))
    (folder / "plugins").mkdir(exist_ok=True)
    return conf


def _one_line_naming_metrics(result: subprocess.CompletedProcess, why: str) -> None:
    assert result.returncode == 78, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rtmbotd: configuration error: ") and "METRICS: " in lines[0] and why in lines[0], \
        lines[0]


@pytest.mark.parametrize("command", [["--check-config"], []], ids=["check-config", "start"])
def test_nonsense_metrics(tmp_path, command):
    conf = _config(tmp_path, "nonsense")
    _one_line_naming_metrics(run_cli("-c", str(conf), *command), "must be host:port")


@pytest.mark.parametrize("command", [["--check-config"], []], ids=["check-config", "start"])
def test_metrics_host_name_that_cannot_be_encoded(tmp_path, command):
    conf = _config(tmp_path, "a" * 64 + ":9810")
    _one_line_naming_metrics(run_cli("-c", str(conf), *command), "not a host name")


@pytest.mark.parametrize("command", [["--check-config"], []], ids=["check-config", "start"])
def test_metrics_port_in_use(tmp_path, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        conf = _config(tmp_path, f"127.0.0.1:{taken.getsockname()[1]}")
        _one_line_naming_metrics(run_cli("-c", str(conf), *command), "address already in use")


def test_a_second_rtmbotd_on_the_same_metrics_port_is_refused(metrics_bot, tmp_path):
    """Only the daemon of this config holding the port is fine (a reload's --check-config);
    a second rtmbotd is 'another process', at --check-config and at start."""
    bot = metrics_bot(plugins={"a": OK_PLUGIN}).start()
    for env in (clean_env(), clean_env(MAINPID=str(bot.proc.pid))):     # by its config file; by systemd's MAINPID
        result = run_cli("-c", str(bot.conf), "--check-config", env=env)
        assert result.returncode == 0, result
    second = tmp_path / "second"
    second.mkdir()
    conf = _config(second, str(bot.metrics))
    for command in (["--check-config"], []):
        _one_line_naming_metrics(run_cli("-c", str(conf), *command),
                                 f"address already in use by another process (pid {bot.proc.pid}: rtmbotd ")
    # the same config file, but not the unit's main process: a manual second start, say
    _one_line_naming_metrics(run_cli("-c", str(bot.conf), "--check-config", env=clean_env(MAINPID="1")),
                             "address already in use by another process")
    assert "rtmbotd_build_info" in scrape(bot.metrics)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root to run as nobody")
@pytest.mark.parametrize("command", [["--check-config"], []], ids=["check-config", "start"])
def test_privileged_port_as_an_unprivileged_user(command):
    """The packaged unit runs as rtmbot without CAP_NET_BIND_SERVICE: :80 cannot be bound."""
    folder = Path(tempfile.mkdtemp(prefix="rtmbotd-nobody-"))
    try:
        folder.chmod(0o777)
        conf = _config(folder, "127.0.0.1:80")
        conf.chmod(0o644)
        result = run_cli("-c", str(conf), *command, user="nobody")
        _one_line_naming_metrics(result, "permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- rtmbotd status ------------------------------------------------------------------------------------


def test_status_without_metrics_says_so(tmp_path):
    conf = tmp_path / "rtmbot.conf"
    conf.write_text("SLACK_TOKEN: xoxb-e2e\n")
    result = run_cli("-c", str(conf), "status")
    assert result.returncode == 78, result
    assert "METRICS is not set" in result.stderr and 'METRICS: "127.0.0.1:9810"' in result.stderr


def test_status_with_no_daemon_running(tmp_path):
    conf = _config(tmp_path, f"127.0.0.1:{free_port()}")
    result = run_cli("-c", str(conf), "status")
    assert result.returncode == 69, result
    assert "no rtmbotd answers at http://127.0.0.1:" in result.stderr and "is it running?" in result.stderr


# -- each metric moves as it should in a real daemon ----------------------------------------------


def wait_value(address: Address, name: str, expected, timeout: float = 30.0, **labels: str) -> float:
    """Scrape until `name{labels}` satisfies `expected` (a value or a predicate)."""
    check = expected if callable(expected) else (lambda v: v == expected)
    wait_until(lambda: check(value(address, name, **labels)), timeout,
               f"{name}{labels} to be {getattr(expected, '__name__', expected)}; last {value(address, name, **labels)}")
    return value(address, name, **labels)


ECHO = """
outputs = []

def process_message(data):
    if data.get("text") == "boom":
        raise RuntimeError("boom")
    outputs.append([data["channel"], "echo " + data["text"]])
"""

COUNTER = """
outputs = []

def process_message(data):
    store.incr("seen")
"""


def test_events_plugin_calls_and_sends(metrics_bot):
    bot = metrics_bot(plugins={"echo": ECHO, "counter": COUNTER}).start()
    m = bot.metrics
    wait_value(m, "rtmbotd_connected", 1)
    assert bot.say("hello") == ["echo hello"]
    assert bot.say("again") == ["echo again"]
    bot.fake.message("boom")
    wait_value(m, "rtmbotd_plugin_calls_total", 1, plugin="echo", outcome="error")
    # alice's 3 and the bot's own 2 replies, echoed as Slack does (received; no plugin gets them)
    wait_value(m, "rtmbotd_events_received_total", 5, type="message")
    assert value(m, "rtmbotd_plugin_calls_total", plugin="echo", outcome="ok") == 2
    wait_value(m, "rtmbotd_plugin_calls_total", 3, plugin="counter", outcome="ok")
    assert value(m, "rtmbotd_plugin_call_duration_seconds_count", plugin="echo") == 3
    wait_value(m, "rtmbotd_messages_sent_total", 2)
    assert value(m, "rtmbotd_outbox_wait_seconds_count") == 2
    wait_value(m, "rtmbotd_outbox_queued", 0)     # set at the end of the loop turn that saw the reply
    # store writes: three incr, each one operation (the first also creates the default file)
    wait_value(m, "rtmbotd_store_operations_total", lambda v: v >= 3, outcome="ok")
    assert value(m, "rtmbotd_store_operations_total", outcome="error") == 0
    assert value(m, "rtmbotd_generation") == 1
    text = "\n".join(str(s) for fam in scrape(m).values() for s in fam.samples)
    for secret in ("xoxb-e2e", "hello", "again", "U1ALICE", "D1ALICE"):   # no token, text or user id
        assert secret not in text, secret


def test_event_types_from_slack_are_bounded(metrics_bot):
    bot = metrics_bot(plugins={"echo": ECHO}).start()
    bot.fake.push_event({"type": "reaction_added", "user": "U1ALICE", "reaction": "tada"})
    for odd in ("x" * 100, "тип_события", "Capitalised"):     # usable names for process_<type>, odd labels
        bot.fake.push_event({"type": odd, "user": "U1ALICE"})
    wait_value(bot.metrics, "rtmbotd_events_received_total", 1, type="reaction_added")
    wait_value(bot.metrics, "rtmbotd_events_received_total", 3, type="other")


JOBS = """
outputs = []
crontable = [[1, "fails"], [1, "works"]]

def fails():
    raise RuntimeError("job down")

def works():
    pass
"""


def test_jobs_are_plugin_calls_too(metrics_bot):
    bot = metrics_bot(plugins={"jobs": JOBS}).start()
    wait_value(bot.metrics, "rtmbotd_plugin_calls_total", lambda v: v >= 2, plugin="jobs", outcome="error")
    wait_value(bot.metrics, "rtmbotd_plugin_calls_total", lambda v: v >= 2, plugin="jobs", outcome="ok")


SLOW = """
import time
outputs = []

def process_message(data):
    if data.get("text") == "slow":
        time.sleep(4)
"""


def test_a_slow_plugin_is_busy_then_timed(metrics_bot):
    bot = metrics_bot(plugins={"slow": SLOW}, settings={"PLUGIN_TIMEOUT": 1}).start()
    m = bot.metrics
    bot.fake.message("slow")
    wait_value(m, "rtmbotd_plugin_busy", 1, plugin="slow")
    wait_value(m, "rtmbotd_plugin_busy", 0, plugin="slow")
    wait_value(m, "rtmbotd_plugin_calls_total", 1, plugin="slow", outcome="ok")
    # the call slept 4 s: above the 1 s bucket, and it is the slowest
    assert value(m, "rtmbotd_plugin_call_duration_seconds_bucket", plugin="slow", le="1.0") == 0
    assert value(m, "rtmbotd_plugin_call_duration_seconds_bucket", plugin="slow", le="5.0") == 1
    assert value(m, "rtmbotd_plugin_call_slowest_seconds", plugin="slow") >= 4


@pytest.mark.parametrize("mode, how, reason", [
    ("rtm", "drop_connections", "drop"),
    ("rtm", "send_goodbye", "goodbye"),
    ("socket_mode", "send_disconnect", "disconnect"),
    ("socket_mode", "drop_connections", "drop"),
])
def test_reconnects_by_reason(metrics_bot, mode, how, reason):
    bot = metrics_bot(mode=mode, plugins={"echo": ECHO}).start()
    m = bot.metrics
    wait_value(m, "rtmbotd_connected", 1)
    opened = bot.fake.connections_opened
    getattr(bot.fake, how)()
    wait_value(m, "rtmbotd_reconnects_total", 1, reason=reason)
    bot.fake.wait_until(lambda: bot.fake.connections_opened > opened, timeout=30)
    wait_value(m, "rtmbotd_connected", 1)
    assert value(m, "rtmbotd_reconnects_total") == 1
    assert bot.say("still here") == ["echo still here"]


def test_rejected_and_accepted_reloads(metrics_bot):
    bot = metrics_bot(plugins={"echo": ECHO}).start()
    m = bot.metrics
    broken = bot.write_plugin("broken", "import no_such_module_here\n")
    bot.signal(signal.SIGHUP)
    wait_value(m, "rtmbotd_reloads_total", 1, result="rejected")
    assert value(m, "rtmbotd_config_last_reload_successful") == 0
    assert value(m, "rtmbotd_generation") == 1
    broken.unlink()
    bot.signal(signal.SIGHUP)
    wait_value(m, "rtmbotd_reloads_total", 1, result="ok")
    assert value(m, "rtmbotd_config_last_reload_successful") == 1
    running = int(re.findall(r"reloaded: generation (\d+)", bot.log())[-1])   # the rejected build took 2
    assert running > 1 and value(m, "rtmbotd_generation") == running
    assert value(m, "rtmbotd_reloads_total", result="rejected") == 1


LATER = """
import threading
outputs = []

def process_message(data):
    if data.get("text") == "later":
        def send():
            outputs.extend([[data["channel"], "late %d" % i] for i in range(3)])
        threading.Timer(2.0, send).start()
"""


def test_a_slack_outage_fills_the_outbox_and_it_drains(metrics_bot):
    bot = metrics_bot(plugins={"later": LATER}).start()
    m, fake = bot.metrics, bot.fake
    wait_value(m, "rtmbotd_connected", 1)
    fake.message("later")
    wait_value(m, "rtmbotd_events_received_total", 1, type="message")
    fake.set_web_api_down(True)              # no rtm.connect: the link stays down
    fake.drop_connections()
    wait_value(m, "rtmbotd_connected", 0)
    wait_value(m, "rtmbotd_outbox_queued", 3)
    assert value(m, "rtmbotd_messages_sent_total") == 0
    fake.set_web_api_down(False)
    wait_value(m, "rtmbotd_connected", 1, timeout=60)
    wait_value(m, "rtmbotd_outbox_queued", 0)
    wait_value(m, "rtmbotd_messages_sent_total", 3)
    assert value(m, "rtmbotd_outbox_wait_seconds_count") == 3
    assert value(m, "rtmbotd_outbox_wait_seconds_sum") > 0
    assert [msg["text"] for msg in fake.sent_messages()] == ["late 0", "late 1", "late 2"]


def test_a_message_slack_refuses_is_counted_by_reason(metrics_bot):
    bot = metrics_bot(mode="socket_mode", plugins={"echo": ECHO}).start()
    bot.fake.fail_next("chat.postMessage", status=200, retry_after=None, error="channel_not_found")
    bot.fake.message("lost")
    wait_value(bot.metrics, "rtmbotd_messages_failed_total", 1, reason="channel_not_found")
    assert bot.say("kept") == ["echo kept"]
    wait_value(bot.metrics, "rtmbotd_messages_sent_total", 1)     # once chat.postMessage answered


DROPS = """
outputs = []

def process_message(data):
    if data.get("text") == "drops":
        outputs.append(["#no-such-channel", "lost: unknown name"])
        outputs.append(["U9NOBODY", "lost: no such user to open a DM with"])
        outputs.append(["C1GENERAL"])
        outputs.append({"channel": "C1GENERAL", "text": float("nan")})
    outputs.append([data["channel"], "done " + data["text"]])
"""


@pytest.mark.parametrize("mode", ["rtm", "socket_mode"])
def test_outputs_the_router_gives_up_are_counted_once_by_reason(metrics_bot, mode):
    bot = metrics_bot(mode=mode, plugins={"drops": DROPS}).start()
    bot.fake.configure(echo_own_messages=False)
    m = bot.metrics
    assert value(m, "rtmbotd_messages_failed_total", reason="unknown_target") == 0     # there from the start
    assert bot.say("drops") == ["done drops"]
    wait_value(m, "rtmbotd_messages_failed_total", 1, reason="unknown_target")
    wait_value(m, "rtmbotd_messages_failed_total", 1, reason="dm_failed")
    wait_value(m, "rtmbotd_messages_failed_total", 2, reason="bad_output")
    assert bot.say("more") == ["done more"]
    wait_value(m, "rtmbotd_messages_sent_total", 2)
    assert value(m, "rtmbotd_messages_failed_total") == 4              # each once, nothing else
    assert [msg["text"] for msg in bot.fake.sent_messages()] == ["done drops", "done more"]


def test_status_summarises_the_running_daemon(metrics_bot):
    bot = metrics_bot(plugins={"echo": ECHO, "slow": SLOW}).start()
    bot.fake.configure(echo_own_messages=False)
    wait_value(bot.metrics, "rtmbotd_connected", 1)
    assert bot.say("hi") == ["echo hi"]
    bot.fake.message("boom")
    wait_value(bot.metrics, "rtmbotd_plugin_calls_total", 1, plugin="echo", outcome="error")
    wait_value(bot.metrics, "rtmbotd_messages_sent_total", 1)     # Slack's reply_to seen
    result = run_cli("-c", str(bot.conf), "status")
    assert result.returncode == 0, result
    expected = [f"metrics: http://{bot.metrics}/metrics", "link: connected; reconnects: none",
                "generation: 1; reloads: none", "events received: 2 (2 message)",
                "  echo  2 call(s), 1 error(s), slowest ", "  slow  2 call(s), 0 error(s), slowest ",
                "outbox: 0 queued; 1 sent, failed: none", "cluster: not in cluster mode"]
    assert [line for line in expected if line not in result.stdout] == [], result.stdout


# rtmbotd_cluster_leader moving between nodes is tested with the cluster issue: cluster mode
# does not exist yet (the gauge itself: tests/test_metrics.py; its alert: promtool test rules).
