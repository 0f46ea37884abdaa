"""Cron jobs across SIGHUP reloads, through the real rtmbotd process: entries added, changed
and removed by a reload, a job appended at run time kept by reloads (TIMEZONE changes too)."""
import signal

from tests.e2e.harness import wait_until

APPENDS_AT_RUN_TIME = '''
import time
outputs = []
crontable = []

def tick():
    outputs.append(["C1GENERAL", "dyn tick %r" % time.time()])

def process_message(data):
    if data.get("text") == "arm":
        crontable.append(["* * * * *", "tick"])
        outputs.append([data["channel"], "armed"])
'''

EDITED = '''
import time
outputs = []
crontable = {table}

def tick():
    outputs.append(["C1GENERAL", "edit tick %r" % time.time()])
'''


def ticks(fake, prefix):
    return [float(m["text"].rpartition(" ")[2]) for m in fake.sent_messages() if m["text"].startswith(prefix)]


def reload(bot):
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGHUP)
    bot.notify.wait_for("READY", "1", after=mark, timeout=60)


def test_reloads_add_change_and_remove_cron_entries_and_keep_run_time_ones(make_bot, fake):
    bot = make_bot(plugins={"dyn": APPENDS_AT_RUN_TIME, "edit": EDITED.format(table='[[3600, "tick"]]')})
    bot.start()
    assert bot.say("arm") == ["armed"]
    wait_until(lambda: len(ticks(fake, "edit tick")) == 1, 30, "the interval job's first run")
    bot.write_plugin("edit", EDITED.format(table='[["* * * * *", "tick"]]'))
    bot.settings["TIMEZONE"] = "Asia/Kathmandu"              # UTC+05:45: minutes stay whole
    bot.write_config()
    reload(bot)
    wait_until(lambda: ticks(fake, "dyn tick") and len(ticks(fake, "edit tick")) >= 2, 90,
               "the run-time job and the reloaded plugin's cron job to run")
    assert all(t % 60 < 5 for t in ticks(fake, "dyn tick") + ticks(fake, "edit tick")[1:])
    bot.write_plugin("edit", EDITED.format(table="[]"))
    reload(bot)
    removed_at = len(ticks(fake, "edit tick"))
    seen = len(ticks(fake, "dyn tick"))
    wait_until(lambda: len(ticks(fake, "dyn tick")) > seen + 1, 150, "two more runs of the run-time job")
    assert len(ticks(fake, "edit tick")) <= removed_at + 1       # one may have been on its way at the reload
