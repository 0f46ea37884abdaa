"""Start-up, notify texts and the command line (issue 10, "House in order first")."""
import os
import signal
import subprocess

import pytest
import yaml

from tests.e2e.harness import Rtmbotd, clean_env, rtmbotd_command, wait_until

OK_PLUGIN = "outputs = []\n"


def run_cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(rtmbotd_command() + list(args), env=env or clean_env(), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# -- READY=1 whatever the STATUS text ------------------------------------------------------------


def test_reload_failing_in_non_latin1_plugin_folder_ends_in_ready(make_bot, fake):
    bot = make_bot(plugins={"a": OK_PLUGIN}).start()
    bot.write_plugin("сломан", "import no_such_module_here\n")
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGHUP)
    r = bot.notify.wait_for("RELOADING", "1", after=mark)
    ready = bot.notify.wait_for("READY", "1", after=r)
    status = bot.notify.messages[ready][1]["STATUS"]
    assert status.startswith("reload failed:") and "сломан" in status, status


def test_tokenless_config_in_non_latin1_folder_is_ready(tmp_path, fake):
    folder = tmp_path / "бот"
    folder.mkdir()
    bot = Rtmbotd(folder, fake, plugins={"a": OK_PLUGIN})
    del bot.settings["SLACK_TOKEN"]
    bot.write_config()
    try:
        bot.start(wait_connected=False)           # waits for READY=1
        status = bot.notify.messages[bot.notify.wait_for("READY", "1")][1]["STATUS"]
        assert "No Slack token" in status and "бот" in status, status
    finally:
        bot.stop()


# -- a stop during start-up is a clean stop -------------------------------------------------------

SLOW_IMPORT = '''
import pathlib, time
pathlib.Path(__file__).with_name("importing").touch()
time.sleep(60)
'''


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_while_importing_a_slow_plugin_exits_zero(make_bot, fake, signum):
    bot = make_bot(plugins={"slow": SLOW_IMPORT}, settings={"IMPORT_TIMEOUT": 120})
    bot.start(wait_ready=False, wait_connected=False)
    wait_until(lambda: (bot.plugins_dir / "slow" / "importing").exists(), 20, "the slow import started")
    bot.signal(signum)
    assert bot.wait_exit(20) == 0
    assert "Traceback" not in bot.log()


def _caught(pid: int, signum: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
    return bool(mask & (1 << (signum - 1)))


def _waiting_for_fifo_reader(pid: int) -> bool:
    with open(f"/proc/{pid}/wchan") as wchan:
        return wchan.read().strip() in ("wait_for_partner", "fifo_open")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_before_the_loop_runs_is_replayed_and_exits_zero(make_bot, fake, tmp_path, signum):
    """LOGFILE is a FIFO: opening it blocks until a reader comes, so the signal surely
    arrives after main() began and before the loop installed its handlers."""
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    bot = make_bot(plugins={"a": OK_PLUGIN}, settings={"LOGFILE": str(fifo)})
    bot.start(wait_ready=False, wait_connected=False)
    pid = bot.proc.pid
    wait_until(lambda: _caught(pid, signal.SIGHUP) and _waiting_for_fifo_reader(pid), 30,
               "rtmbotd blocked opening its LOGFILE")
    bot.signal(signum)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # now the open completes
    try:
        assert bot.wait_exit(30) == 0, bot.log()
        log = b""
        while chunk := os.read(reader, 65536):
            log += chunk
    finally:
        os.close(reader)
    assert b"stopped" in log and b"Traceback" not in log and b"Traceback" not in bot.log().encode()


# -- --check-config agrees with reload on a missing token ----------------------------------------


def test_check_config_without_token_fails_naming_slack_token(tmp_path):
    conf = tmp_path / "rtmbot.conf"
    conf.write_text(yaml.safe_dump({"RATE_LIMIT": 0}))
    (tmp_path / "plugins").mkdir()
    result = run_cli("-c", str(conf), "--check-config")
    assert result.returncode == os.EX_CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SLACK_TOKEN" in lines[0], result.stderr
    assert "OK" not in result.stdout
    from_env = run_cli("-c", str(conf), "--check-config", env=clean_env(SLACK_TOKEN="xoxb-env"))
    assert from_env.returncode == 0 and "OK" in from_env.stdout, from_env.stderr
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "slack_token").write_text("xoxb-credential\n")
    from_creds = run_cli("-c", str(conf), "--check-config", env=clean_env(CREDENTIALS_DIRECTORY=str(creds)))
    assert from_creds.returncode == 0 and "OK" in from_creds.stdout, from_creds.stderr


def test_tokenless_reload_is_rejected_like_check_config(make_bot, fake):
    """First install: started without a token (active, STATUS says where it goes); a
    reload that still has none is refused, as `--check-config` refuses it."""
    bot = make_bot(plugins={"a": OK_PLUGIN})
    del bot.settings["SLACK_TOKEN"]
    bot.write_config()
    bot.start(wait_connected=False)
    bot.write_plugin("b", OK_PLUGIN)
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGHUP)
    ready = bot.notify.wait_for("READY", "1", after=bot.notify.wait_for("RELOADING", "1", after=mark))
    status = bot.notify.messages[ready][1]["STATUS"]
    assert status.startswith("reload failed:") and "SLACK_TOKEN" in status and "No Slack token" in status
    assert bot.proc.poll() is None


# -- exit codes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--no-such-option"], ["store", "frob"], ["console", "--no-such"],
                                  ["--pidfile"]])
def test_usage_errors_exit_64_with_usage(args):
    result = run_cli(*args)
    assert result.returncode == os.EX_USAGE, result.stderr
    assert result.stderr.startswith("usage: rtmbotd") and "error:" in result.stderr


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["store", "--help"]])
def test_help_and_version_exit_zero(args):
    result = run_cli(*args)
    assert result.returncode == 0 and result.stdout and not result.stderr


# -- Ctrl-C still ends the commands that are not the daemon ---------------------------------------


def _started(tmp_path, *args: str, text_seen: str) -> subprocess.Popen:
    out = tmp_path / "out.log"
    proc = subprocess.Popen(rtmbotd_command() + list(args), env=clean_env(), stdin=subprocess.PIPE,
                            stdout=out.open("wb"), stderr=subprocess.STDOUT, cwd=tmp_path)
    wait_until(lambda: text_seen in out.read_text(errors="replace"), 30, f"{text_seen!r} printed")
    return proc


def test_ctrl_c_ends_the_console(tmp_path):
    conf = tmp_path / "rtmbot.conf"
    conf.write_text(yaml.safe_dump({"RATE_LIMIT": 0}))       # no token, no systemd: the console
    (tmp_path / "plugins").mkdir()
    proc = _started(tmp_path, "-c", str(conf), text_seen="rtmbotd console:")
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert "Traceback" not in (tmp_path / "out.log").read_text()


def test_ctrl_c_ends_a_store_command(tmp_path):
    conf = tmp_path / "rtmbot.conf"
    conf.write_text(yaml.safe_dump({"STORE_URL": f"sqlite:///{tmp_path / 'store.sqlite'}"}))
    (tmp_path / "plugins").mkdir()
    out = tmp_path / "out.log"
    proc = subprocess.Popen(rtmbotd_command() + ["-c", str(conf), "store", "load"], env=clean_env(),
                            stdin=subprocess.PIPE, stdout=out.open("wb"), stderr=subprocess.STDOUT)
    try:   # `store load` reads standard input, which stays open: it waits there for Ctrl-C
        wait_until(lambda: _caught(proc.pid, signal.SIGINT) and not _caught(proc.pid, signal.SIGTERM)
                   and _reading_stdin(proc.pid), 30, "store load waiting on its input")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        proc.kill()
        proc.wait()


def _reading_stdin(pid: int) -> bool:
    with open(f"/proc/{pid}/wchan") as wchan:
        where = wchan.read().strip()
    return where.endswith("pipe_read") or where in ("pipe_wait", "wait_woken")
