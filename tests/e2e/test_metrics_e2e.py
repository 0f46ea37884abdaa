"""Issue 13: a real daemon's /metrics against the fake Slack, METRICS errors, `rtmbotd status`."""
import os
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
def test_metrics_port_in_use(tmp_path, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        conf = _config(tmp_path, f"127.0.0.1:{taken.getsockname()[1]}")
        _one_line_naming_metrics(run_cli("-c", str(conf), *command), "address already in use")


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
