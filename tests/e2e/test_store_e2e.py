"""The store seen from outside: durable outbox, SIGKILL crash safety, plugins' store."""
import json
import random
import signal
import sqlite3
import subprocess
import textwrap
import time

import pytest

from tests.e2e.harness import Rtmbotd, clean_env, rtmbotd_command, wait_until

WRITER = '''
outputs = []
def process_message(data):
    text = data.get("text", "")
    if text.startswith("w "):
        n = int(text[2:])
        store["k%06d" % n] = {"n": n}
        store.incr("writes")
        outputs.append([data["channel"], "ack %d" % n])
'''


def once_flag_exists(flag, body: str) -> str:
    """A module plugin whose cron job runs `body` (Python appending to `outputs`) once,
    as soon as the file `flag` exists."""
    return (f"import os\noutputs = []\ncrontable = [[0.1, 'tick']]\ndone = False\n"
            f"def tick():\n    global done\n    if not done and os.path.exists({str(flag)!r}):\n"
            f"        done = True\n" + textwrap.indent(textwrap.dedent(body).strip(), " " * 8) + "\n")


def test_undelivered_messages_survive_a_stop_and_go_out_once_in_order(tmp_path, fake):
    flag = tmp_path / "go"
    bot = Rtmbotd(tmp_path, fake, plugins={"burst": once_flag_exists(flag, """
        for i in range(5):
            outputs.append(["C1GENERAL", "saved %d" % i])
        outputs.append(["@bob", "saved for bob"])       # waits for a DM channel too
        """)}, settings={"STOP_TIMEOUT": 1})
    try:
        bot.start()
        fake.refuse_connections(1000)
        fake.drop_connections()                    # the link is gone and stays gone
        bot.wait_log("Slack connection lost")
        flag.touch()                               # now the plugin produces its messages
        time.sleep(0.5)
        bot.signal(signal.SIGTERM)
        assert bot.wait_exit() == 0
        assert "6 undelivered message(s) saved" in bot.log()
        assert fake.sent_messages() == []
    finally:
        bot.stop()
    flag.unlink()                                  # the plugin stays quiet from now on
    fake.refuse_connections(0)
    again = Rtmbotd(tmp_path, fake, plugins={})
    try:
        again.start()
        msgs = fake.wait_for_messages(6, timeout=15)
        assert [m["text"] for m in msgs if m["channel"] == "C1GENERAL"] == [f"saved {i}" for i in range(5)]
        assert [m["text"] for m in msgs if m["channel"] != "C1GENERAL"] == ["saved for bob"]
        again.signal(signal.SIGTERM)
        assert again.wait_exit() == 0
        assert "will be sent first" in again.log()
    finally:
        again.stop()
    third = Rtmbotd(tmp_path, fake, plugins={})
    try:
        third.start()
        time.sleep(0.5)
        assert len(fake.sent_messages()) == 6       # nothing sent twice
    finally:
        third.stop()


def test_store_survives_sigkill_at_random_points(tmp_path, fake):
    rng = random.Random(20261125)
    acked: set[int] = set()
    n = 0
    db = tmp_path / "store.sqlite"
    for round_ in range(15):
        bot = Rtmbotd(tmp_path, fake, plugins={"writer": WRITER}, notify=(round_ == 0))
        try:
            bot.start(wait_ready=False)
            bot.wait_log("connected to Slack", count=1)
            deadline = time.monotonic() + rng.uniform(0.2, 1.0)
            while time.monotonic() < deadline:
                n += 1
                fake.message(f"w {n}", channel="C1GENERAL")
                time.sleep(0.002)
            bot.proc.send_signal(signal.SIGKILL)
            bot.proc.wait(10)
        finally:
            bot.stop()
        for m in fake.sent_messages():
            if m["text"].startswith("ack "):
                acked.add(int(m["text"][4:]))
        # a fresh log per round
        bot.log_path.unlink()
    assert len(acked) > 50, "the plugin should have acknowledged writes before the kills"
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = dict(con.execute("SELECT key, value FROM rtmbot_kv WHERE plugin = 'writer'").fetchall())
    finally:
        con.close()
    missing = [k for k in sorted(acked) if "k%06d" % k not in rows]
    assert not missing, f"acknowledged writes lost after SIGKILL: {missing[:20]}"
    assert json.loads(rows["k%06d" % min(acked)]) == {"n": min(acked)}


def test_store_cli_reads_what_the_running_daemon_wrote(tmp_path, fake):
    bot = Rtmbotd(tmp_path, fake, plugins={"writer": WRITER})
    try:
        bot.start()
        assert bot.say("w 7", channel="C1GENERAL") == ["ack 7"]
        get = subprocess.run(rtmbotd_command() + ["-c", str(bot.conf), "store", "get", "writer", "k000007"],
                             env=clean_env(), capture_output=True, text=True, timeout=30)
        assert get.returncode == 0, get.stderr
        assert json.loads(get.stdout) == {"n": 7}
        put = subprocess.run(rtmbotd_command() + ["-c", str(bot.conf), "store", "set", "writer", "writes", "100"],
                             env=clean_env(), capture_output=True, text=True, timeout=30)
        assert put.returncode == 0, put.stderr
        assert bot.say("w 8", channel="C1GENERAL") == ["ack 8"]
        dump = subprocess.run(rtmbotd_command() + ["-c", str(bot.conf), "store", "dump"],
                              env=clean_env(), capture_output=True, text=True, timeout=30)
        data = json.loads(dump.stdout)
        assert data["writer"]["writes"] == 101
    finally:
        bot.stop()


def _mapped_files(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as maps:
        return maps.read()


def test_default_store_is_created_on_first_use_and_kept_across_restarts(tmp_path, fake):
    plugin = '''
        outputs = []
        def process_message(data):
            if data.get("text") == "count":
                outputs.append([data["channel"], "count %d" % store.incr("n")])
            elif data.get("text") == "ping":
                outputs.append([data["channel"], "pong"])
        '''
    db = tmp_path / "rtmbot.sqlite"          # STORE_URL unset: rtmbot.sqlite in BASE_PATH
    bot = Rtmbotd(tmp_path, fake, plugins={"counting": plugin}, settings={"BASE_PATH": str(tmp_path)})
    del bot.settings["STORE_URL"]
    bot.write_config()
    try:
        bot.start()
        assert bot.say("ping") == ["pong"]
        assert not db.exists()
        mapped = _mapped_files(bot.proc.pid)
        assert "_sqlite3" not in mapped and "sqlalchemy" not in mapped   # neither loaded nor needed
        assert "created when first needed" in bot.log()
        assert bot.say("count") == ["count 1"]
        assert db.exists()
        assert bot.say("count") == ["count 2"]
        bot.signal(signal.SIGTERM)
        assert bot.wait_exit() == 0
    finally:
        bot.stop()
    again = Rtmbotd(tmp_path, fake, plugins={"counting": plugin}, settings={"BASE_PATH": str(tmp_path)})
    del again.settings["STORE_URL"]
    again.write_config()
    try:
        again.start()
        assert "_sqlite3" in _mapped_files(again.proc.pid)    # an existing store is opened at start
        assert again.say("count") == ["count 3"]
    finally:
        again.stop()
    with sqlite3.connect(db) as conn:
        assert json.loads(conn.execute("select value from rtmbot_kv where plugin='counting' and key='n'").fetchone()[0]) == 3


def test_saved_messages_to_a_user_id_are_delivered_at_the_next_start(tmp_path, fake):
    from rtmbotd.store import Store
    with Store.open(f"sqlite:///{tmp_path / 'store.sqlite'}") as store:   # as a stop leaves it
        store.save_outbox([{"channel": "U2BOB", "text": "saved for bob", "plugin": "p"},
                           {"channel": "C1GENERAL", "text": "saved for general", "plugin": "p"}])
    bot = Rtmbotd(tmp_path, fake, plugins={})
    try:
        bot.start()
        msgs = fake.wait_for_messages(2, timeout=15)
        assert sorted(m["text"] for m in msgs) == ["saved for bob", "saved for general"]
        bob = [m for m in msgs if m["text"] == "saved for bob"][0]
        assert bob["channel"].startswith("D")               # a DM opened for U2BOB
        assert "dropped" not in bot.log()
        bot.signal(signal.SIGTERM)
        assert bot.wait_exit() == 0
    finally:
        bot.stop()
    with Store.open(f"sqlite:///{tmp_path / 'store.sqlite'}") as store:
        assert store.load_outbox() == []                     # delivered: nothing left saved


def test_a_stop_before_the_first_generation_keeps_the_saved_messages(tmp_path, fake):
    from rtmbotd.store import Store
    saved = [{"channel": "U2BOB", "text": "still saved", "plugin": "p"}]
    with Store.open(f"sqlite:///{tmp_path / 'store.sqlite'}") as store:
        store.save_outbox(saved)
    bot = Rtmbotd(tmp_path, fake, plugins={"slowimport": "import time\ntime.sleep(3)\n"},
                  settings={"PLUGIN_IMPORT_TIMEOUT": 10})
    try:
        bot.start(wait_ready=False, wait_connected=False)
        bot.wait_log("will be sent first")
        bot.signal(signal.SIGTERM)                           # while plugins are still importing
        assert bot.wait_exit() == 0
    finally:
        bot.stop()
    with Store.open(f"sqlite:///{tmp_path / 'store.sqlite'}") as store:
        assert [r["text"] for r in store.load_outbox()] == ["still saved"]
    assert fake.sent_messages() == []


def test_undelivered_messages_create_the_default_store_at_the_stop(tmp_path, fake):
    flag = tmp_path / "go"
    db = tmp_path / "rtmbot.sqlite"          # STORE_URL unset: created only when needed
    plugin = once_flag_exists(flag, """outputs.append(["C1GENERAL", "kept across the restart"])""")
    bot = Rtmbotd(tmp_path, fake, plugins={"later": plugin}, settings={"BASE_PATH": str(tmp_path), "STOP_TIMEOUT": 1})
    del bot.settings["STORE_URL"]
    bot.write_config()
    try:
        bot.start()
        assert not db.exists()
        fake.refuse_connections(1000)
        fake.drop_connections()
        bot.wait_log("Slack connection lost")
        flag.touch()
        time.sleep(0.5)
        bot.signal(signal.SIGTERM)
        assert bot.wait_exit() == 0
        assert "1 undelivered message(s) saved" in bot.log()
        assert db.exists()
    finally:
        bot.stop()
    flag.unlink()
    fake.refuse_connections(0)
    again = Rtmbotd(tmp_path, fake, plugins={}, settings={"BASE_PATH": str(tmp_path)})
    del again.settings["STORE_URL"]
    again.write_config()
    try:
        again.start()
        msgs = fake.wait_for_messages(1, timeout=15)
        assert [m["text"] for m in msgs] == ["kept across the restart"]
    finally:
        again.stop()
