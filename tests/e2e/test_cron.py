"""Cron expressions in `crontable` and `Job`, and TIMEZONE, through the real rtmbotd process."""
import signal
import subprocess

import pytest

from tests.e2e.harness import clean_env, rtmbotd_command, wait_until

EVERY_MINUTE = '''
import time
outputs = []
crontable = [["* * * * *", "tick"]]

def tick():
    outputs.append(["C1GENERAL", "module ran at %r" % time.time()])
'''

CLASS_EVERY_MINUTE = '''
import time
from rtmbot.core import Plugin, Job

class Minutely(Job):
    def run(self, slack_client):
        return [["C1GENERAL", "class ran at %r" % time.time()]]

class Clock(Plugin):
    def register_jobs(self):
        self.jobs.append(Minutely("* * * * *"))
'''


def run_times(fake, prefix):
    return [float(m["text"].rpartition(" ")[2]) for m in fake.sent_messages() if m["text"].startswith(prefix)]


def test_every_minute_job_runs_on_the_minute(make_bot, fake):
    make_bot(plugins={"minutely": EVERY_MINUTE, "clock": CLASS_EVERY_MINUTE},
             settings={"TIMEZONE": "Asia/Kathmandu"}).start()      # UTC+05:45: minutes stay whole
    wait_until(lambda: run_times(fake, "module ran") and run_times(fake, "class ran"), 75,
               "both `* * * * *` jobs to run")
    for started in run_times(fake, "module ran")[:1] + run_times(fake, "class ran")[:1]:
        assert started % 60 < 3, f"ran {started % 60:.3f} s past the minute"


def check_config(tmp_path, conf_text, plugin=None):
    (tmp_path / "plugins").mkdir(exist_ok=True)
    if plugin is not None:
        (tmp_path / "plugins" / "bad").mkdir()
        (tmp_path / "plugins" / "bad" / "bad.py").write_text(plugin)
    conf = tmp_path / "rtmbot.conf"
    conf.write_text("SLACK_TOKEN: xoxb-e2e\n" + conf_text)
    return subprocess.run(rtmbotd_command() + ["-c", str(conf), "--check-config"], env=clean_env(),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("entry, why", [
    ('["61 * * * *", "f"]', "cron expression '61 * * * *': bad minute field"),
    ('["* * *", "f"]', "cron expression '* * *': has 3 field(s), needs 5"),
    ('["* * * * *", "NOT_A_FUNCTION"]', "'NOT_A_FUNCTION' is not the name of a function of the plugin"),
])
def test_check_config_names_the_plugin_and_the_bad_entry(tmp_path, entry, why):
    result = check_config(tmp_path, "", f"NOT_A_FUNCTION = 1\ncrontable = [{entry}]\ndef f():\n    pass\n")
    assert result.returncode == 78, result
    assert f"rtmbotd: plugin bad: CrontableError: crontable entry {entry.replace(chr(34), chr(39))}: {why}" \
        in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_timezone_is_a_config_error_at_check_and_start(tmp_path):
    result = check_config(tmp_path, "TIMEZONE: Mars/Olympus\n")
    assert result.returncode == 78
    assert "TIMEZONE: unknown time zone 'Mars/Olympus'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    start = subprocess.run(rtmbotd_command() + ["-c", str(tmp_path / "rtmbot.conf")], env=clean_env(),
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert start.returncode == 78
    assert "TIMEZONE: unknown time zone 'Mars/Olympus'" in start.stderr


GOOD = '''
outputs = []
crontable = [[600, "idle"]]

def idle():
    pass

def process_message(data):
    crontable.append(["* * * 13 *", "idle"])       # bad, appended at run time
    outputs.append([data["channel"], "still here"])
'''


def test_bad_plugin_is_skipped_the_daemon_runs_and_a_bad_reload_is_rejected(make_bot, fake):
    bot = make_bot(plugins={"good": GOOD, "bad": 'crontable = [["61 * * * *", "f"]]\ndef f():\n    pass\n'})
    bot.start()
    bot.wait_log(r"plugin bad skipped: CrontableError: crontable entry \['61 \* \* \* \*', 'f'\]")
    assert bot.say("hi") == ["still here"]
    bot.wait_log(r"plugin good: crontable entry \['\* \* \* 13 \*', 'idle'\]: cron expression '\* \* \* 13 \*': "
                 r"bad month field; dropped")
    bot.settings["TIMEZONE"] = "Nowhere/Special"
    bot.write_config()
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGHUP)
    bot.notify.wait_for("READY", "1", after=mark, timeout=60)
    bot.wait_log(r"reload rejected, still running generation 1: .*TIMEZONE: unknown time zone 'Nowhere/Special'")
    assert bot.say("again") == ["still here"]
