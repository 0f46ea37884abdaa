"""rtmbotd as a service: notify protocol, reload, stop, pidfile, log reopening (issue: service)."""
import os
import signal
import subprocess
import time

import pytest
import yaml

from tests.e2e.harness import Rtmbotd, clean_env, rtmbotd_command, wait_until

COUNTER = '''
outputs = []
n = 0
def process_message(data):
    global n
    if data["text"] == "count":
        n += 1
        outputs.append([data["channel"], "%s %d" % (NAME, n)])
'''


def counter(name):
    return f"NAME = {name!r}\n" + COUNTER


def test_start_sequence_ready_with_status(make_bot, fake):
    bot = make_bot(plugins={"a": counter("a")}).start()
    assert bot.notify.sequence() == ["READY"]
    i = bot.notify.wait_for("READY", "1")
    status = bot.notify.messages[i][1]["STATUS"]
    assert "generation" in status and "1 plugin(s) loaded" in status
    wait_until(lambda: any(s.startswith("Connected (rtm)") for s in bot.notify.statuses()), 5, "connected STATUS")


def test_good_reload_swaps_keeps_state_and_connection(make_bot, fake):
    bot = make_bot(plugins={"a": counter("a"), "b": counter("b")}).start()
    assert sorted(bot.say("count", replies=2)) == ["a 1", "b 1"]
    opened = fake.connections_opened
    bot.write_plugin("b", counter("b2"))          # changed: re-imported fresh
    bot.write_plugin("c", counter("c"))           # added
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGHUP)
    r = bot.notify.wait_for("RELOADING", "1", after=mark)
    assert "MONOTONIC_USEC" in bot.notify.messages[r][1]
    bot.notify.wait_for("READY", "1", after=r)
    assert sorted(bot.say("count", replies=3)) == ["a 2", "b2 1", "c 1"]   # a kept its state
    assert fake.connections_opened == opened
    import shutil
    shutil.rmtree(bot.plugins_dir / "c")          # removed
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGHUP)
    bot.notify.wait_for("READY", "1", after=bot.notify.wait_for("RELOADING", "1", after=mark))
    assert sorted(bot.say("count", replies=2)) == ["a 3", "b2 2"]
    # Each plugin answers in order, so a stray extra reply would come before these two.
    assert sorted(bot.say("count", replies=2)) == ["a 4", "b2 3"]
    assert len(fake.sent_messages()) == 2 + 3 + 2 + 2


BAD_RELOADS = {
    "broken_yaml": lambda bot: bot.write_config("SLACK_TOKEN: [unclosed\n"),
    "missing_token": lambda bot: bot.write_config(yaml.safe_dump({k: v for k, v in bot.settings.items()
                                                                  if k != "SLACK_TOKEN"})),
    "plugin_import_fails": lambda bot: bot.write_plugin("broken", "import no_such_module_here\n"),
    "invalid_utf8": lambda bot: bot.conf.write_bytes(b"SLACK_TOKEN: \"\xff\"\n"),
}


@pytest.mark.parametrize("kind", sorted(BAD_RELOADS))
def test_bad_reload_keeps_old_generation(make_bot, fake, kind):
    bot = make_bot(plugins={"a": counter("a")}).start()
    assert bot.say("count") == ["a 1"]
    opened = fake.connections_opened
    BAD_RELOADS[kind](bot)
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGHUP)
    r = bot.notify.wait_for("RELOADING", "1", after=mark)
    ready = bot.notify.wait_for("READY", "1", after=r)
    status = bot.notify.messages[ready][1]["STATUS"]
    assert status.startswith("reload failed:"), status
    assert "generation 1" in status
    assert bot.say("count") == ["a 2"]                  # old generation, state intact
    assert fake.connections_opened == opened
    assert "reload rejected, still running generation 1" in bot.log()
    assert bot.proc.poll() is None


def test_sighups_coalesce(make_bot, fake):
    bot = make_bot(plugins={"a": counter("a")}).start()
    mark = len(bot.notify.messages)
    for _ in range(10):
        bot.signal(signal.SIGHUP)
    bot.notify.wait_for("READY", "1", after=mark)
    time.sleep(1.0)   # let any extra rebuilds finish before counting them
    reloads = [m for _, m in bot.notify.messages[mark:] if m.get("RELOADING") == "1"]
    assert 1 <= len(reloads) <= 2, "10 SIGHUPs should coalesce, got %d reloads" % len(reloads)
    assert bot.log().count("reloaded: generation") <= 3
    assert bot.say("count") == ["a 1"]


def test_watchdog_keeps_pinging_while_a_plugin_is_stuck(make_bot, fake, tmp_path):
    # How evenly it pings is measured by bench/ (a loaded machine stretches any gap);
    # here: the loop goes on pinging while a plugin's call has not returned.
    release = tmp_path / "release"
    bot = make_bot(plugins={"slow": f'''
        import os, time
        def process_message(data):
            while not os.path.exists({str(release)!r}):
                time.sleep(0.05)
        '''}, settings={"PLUGIN_TIMEOUT": 0.5}, env={"WATCHDOG_USEC": "400000"})
    bot.start()
    fake.message("block the plugin")
    try:
        def stuck_status() -> tuple[int] | None:
            return next(((i,) for i, (_, m) in enumerate(list(bot.notify.messages))
                         if "stuck: slow" in m.get("STATUS", "")), None)

        stuck = wait_until(stuck_status, 30, "stuck plugin in STATUS", changes=bot.notify)[0]

        def pings_since_stuck() -> bool:
            return sum(1 for _, m in bot.notify.messages[stuck:] if m.get("WATCHDOG") == "1") >= 5

        wait_until(pings_since_stuck, 30, "five watchdog pings while the plugin is stuck",
                   changes=bot.notify)
        assert not release.exists()                   # the call was still running throughout
        assert "plugin slow stuck in message" in bot.log()
    finally:
        release.touch()


def test_stop_drains_and_exits_zero(make_bot, fake, tmp_path):
    inside = tmp_path / "inside"
    bot = make_bot(plugins={"slowreply": f'''
        import pathlib, time
        outputs = []
        def process_message(data):
            pathlib.Path({str(inside)!r}).touch()
            time.sleep(1)
            outputs.append([data["channel"], "late reply"])
        '''}).start()
    fake.message("x", channel="C1GENERAL")
    wait_until(inside.exists, 30, "the plugin inside its call")
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGTERM)
    bot.notify.wait_for("STOPPING", "1", after=mark)
    assert bot.wait_exit(15) == 0
    assert [m["text"] for m in fake.sent_messages()] == ["late reply"]   # the running call finished, sent
    assert "stopped" in bot.log()
    assert fake.open_connections() == 0


def test_sighup_during_stop_is_ignored_and_second_int_forces(make_bot, fake, tmp_path):
    inside = tmp_path / "inside"
    bot = make_bot(plugins={"stuck": f'''
        import pathlib, time
        def process_message(data):
            pathlib.Path({str(inside)!r}).touch()
            time.sleep(60)
        '''}, settings={"STOP_TIMEOUT": 30}).start()
    fake.message("x")
    wait_until(inside.exists, 30, "the plugin inside its call")
    bot.signal(signal.SIGINT)
    bot.notify.wait_for("STOPPING", "1")
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert not any("RELOADING" in m for _, m in bot.notify.messages[mark:])
    assert bot.proc.poll() is None                 # still draining the stuck plugin
    bot.signal(signal.SIGINT)
    assert bot.wait_exit(5) == 130
    assert "second SIGINT" in bot.log()


def test_check_config(tmp_path):
    conf = tmp_path / "rtmbot.conf"
    (tmp_path / "plugins" / "ok").mkdir(parents=True)
    (tmp_path / "plugins" / "ok" / "ok.py").write_text("outputs = []\n")
    conf.write_text("SLACK_TOKEN: xoxb-1\n")
    good = subprocess.run(rtmbotd_command() + ["-c", str(conf), "--check-config"], env=clean_env(),
                          capture_output=True, text=True, timeout=30)
    assert good.returncode == 0 and "OK" in good.stdout and "ok" in good.stdout
    (tmp_path / "plugins" / "bad").mkdir()
    (tmp_path / "plugins" / "bad" / "bad.py").write_text("def broken(:\n")
    bad = subprocess.run(rtmbotd_command() + ["-c", str(conf), "--check-config"], env=clean_env(),
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 78 and "plugin bad: SyntaxError" in bad.stderr
    conf.write_text("SLACK_TOKEN: xoxb-1\nRATE_LIMIT: lots\n")
    worse = subprocess.run(rtmbotd_command() + ["-c", str(conf), "--check-config"], env=clean_env(),
                           capture_output=True, text=True, timeout=30)
    assert worse.returncode == 78 and "RATE_LIMIT: must be" in worse.stderr and "Traceback" not in worse.stderr


def test_no_token_under_systemd_waits_calmly_then_reload_connects(make_bot, fake):
    bot = make_bot(plugins={"a": counter("a")})
    settings = dict(bot.settings)
    del settings["SLACK_TOKEN"]
    bot.write_config(yaml.safe_dump(settings))
    bot.start(wait_connected=False)
    i = bot.notify.wait_for("READY", "1")
    assert "No Slack token" in bot.notify.messages[i][1]["STATUS"]
    time.sleep(0.5)
    assert fake.connections_opened == 0 and bot.proc.poll() is None
    bot.write_config()                                # now with the token
    bot.signal(signal.SIGHUP)
    fake.wait_until(lambda: fake.connections_opened == 1, timeout=10)
    bot.wait_log("connected to Slack")
    assert bot.say("count") == ["a 1"]


def test_sigusr1_reopens_rotated_logfile(make_bot, fake, tmp_path):
    logfile = tmp_path / "bot.log"
    bot = make_bot(plugins={"a": counter("a")}, settings={"LOGFILE": str(logfile)}).start(wait_connected=False)
    wait_until(lambda: logfile.exists() and "connected to Slack" in logfile.read_text(), 10, "log in LOGFILE")
    os.rename(logfile, tmp_path / "bot.log.1")
    bot.signal(signal.SIGUSR1)
    wait_until(lambda: logfile.exists() and "log file reopened" in logfile.read_text(), 5, "new log file")
    bot.signal(signal.SIGTERM)
    assert bot.wait_exit() == 0
    assert "stopped" in logfile.read_text()
    assert "stopped" not in (tmp_path / "bot.log.1").read_text()


def test_journal_priority_prefixes(make_bot, fake, tmp_path):
    bot = make_bot(plugins={"a": counter("a")})
    # JOURNAL_STREAM must name stderr's device:inode; the harness sends stderr to a file.
    bot._log = open(bot.log_path, "ab")
    st = os.fstat(bot._log.fileno())
    bot.extra_env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    bot.start()
    log = bot.wait_log(r"<6>INFO rtmbotd.slack.connector: connected to Slack")
    assert "<6>" in log


def test_pidfile_daemon_mode(make_bot, fake, tmp_path):
    pidfile = tmp_path / "rtmbotd.pid"
    bot = make_bot(plugins={"a": counter("a")}, notify=False, settings={"LOGFILE": str(tmp_path / "d.log")})
    first = subprocess.run(rtmbotd_command() + ["-c", str(bot.conf), "--daemon", "--pidfile", str(pidfile)],
                           env=clean_env(), capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "pidfile")
    pid = int(pidfile.read_text())
    assert pid != first.returncode and os.path.exists(f"/proc/{pid}")
    fake.wait_until(lambda: fake.connections_opened == 1, timeout=10)
    assert bot.say("count") == ["a 1"]
    second = subprocess.run(rtmbotd_command() + ["-c", str(bot.conf), "--daemon", "--pidfile", str(pidfile)],
                            env=clean_env(), capture_output=True, text=True, timeout=30)
    assert second.returncode == 69 and f"already running: pid {pid}" in second.stderr
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower(),
               15, "daemon exit")
    wait_until(lambda: not pidfile.exists(), 5, "pidfile removed")


def test_reload_with_new_token_reconnects_and_full_notify_sequence(make_bot, fake):
    bot = make_bot(plugins={"a": counter("a")}).start()
    assert bot.say("count") == ["a 1"]
    opened = fake.connections_opened
    bot.settings["SLACK_TOKEN"] = "xoxb-rotated"
    bot.write_config()
    bot.signal(signal.SIGHUP)
    fake.wait_until(lambda: fake.connections_opened == opened + 1, timeout=10)
    bot.wait_log("connected to Slack", count=2)
    wait_until(lambda: fake.open_connections() == 1, 10, "the old link closed")
    assert bot.say("count") == ["a 2"]                # same plugin state, new connection
    assert [c["token_kind"] for c in fake.web_calls("rtm.connect")] == ["bot", "bot"]
    bot.signal(signal.SIGTERM)
    assert bot.wait_exit() == 0
    assert bot.notify.sequence() == ["READY", "RELOADING", "READY", "STOPPING"]


def test_status_quotes_a_connection_error_with_its_case(make_bot, fake):
    """Issue 11, item 12: STATUS raised its first letter with str.capitalize, lowering the rest."""
    fake.fail_next("rtm.connect", count=1, status=200, error="Fake_Outage_In_EU", retry_after=None)
    bot = make_bot(plugins={"a": counter("a")}).start(wait_connected=False)
    quoted = "Cannot connect (rtm.connect: Fake_Outage_In_EU); retrying in "
    wait_until(lambda: any(s.startswith(quoted) for s in bot.notify.statuses()), 15,
               f"STATUS starting {quoted!r}")
    bot.wait_log("connected to Slack", timeout=20)           # the next attempt gets through
    wait_until(lambda: bot.notify.statuses()[-1].startswith("Connected (rtm)"), 15, "connected STATUS")
