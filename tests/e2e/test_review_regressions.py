"""Regressions pinned after a review: each test names the bug it pins."""
import signal
import time

import yaml

from tests.e2e.harness import wait_until

PARROT = '''
outputs = []
def process_message(data):
    outputs.append([data["channel"], "parrot: " + data.get("text", "")])
'''


def test_plugin_mutating_its_event_does_not_affect_others(make_bot, fake):
    plugins = {f"mut{i}": '''
        def process_message(data):
            data.clear()
        ''' for i in range(5)}
    plugins["reader"] = '''
        outputs = []
        def process_message(data):
            outputs.append([data["channel"], "read " + data["text"]])
        '''
    bot = make_bot(plugins=plugins).start()
    for i in range(20):
        assert bot.say(f"m{i}") == [f"read m{i}"]
    assert "internal error" not in bot.log()


def test_token_change_keeps_ignoring_own_messages_until_new_identity(make_bot, fake):
    bot = make_bot(plugins={"parrot": PARROT}).start()
    assert bot.say("before", channel="C1GENERAL") == ["parrot: before"]
    fake.fail_next("auth.test", count=1000, status=200, error="invalid_auth")   # the new token is bad
    bot.settings["SLACK_TOKEN"] = "xoxb-new-but-bad"
    bot.write_config()
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGHUP)
    bot.notify.wait_for("READY", "1", after=bot.notify.wait_for("RELOADING", "1", after=mark))
    bot.wait_log("Slack rejected the token")
    before = len(fake.sent_messages())
    fake.message("after", channel="C1GENERAL")
    fake.wait_for_messages(before + 1)
    time.sleep(1.0)                       # an echo loop would have produced many more by now
    assert [m["text"] for m in fake.sent_messages()[before:]] == ["parrot: after"]


def test_non_json_output_is_refused_and_does_not_block_the_channel(make_bot, fake):
    bot = make_bot(mode="socket_mode", plugins={"blocks": '''
        outputs = []
        class Block:
            pass
        def process_message(data):
            if data["text"] == "bad":
                outputs.append({"channel": data["channel"], "text": "x", "blocks": [Block()]})
            outputs.append([data["channel"], "after " + data["text"]])
        '''}, settings={"STOP_TIMEOUT": 30}).start()
    assert bot.say("bad") == ["after bad"]
    assert bot.say("good") == ["after good"]
    bot.wait_log("not plain JSON")
    bot.signal(signal.SIGTERM)
    assert bot.wait_exit(60) == 0
    log = bot.log()
    assert "undelivered message(s) saved" not in log and "stop deadline" not in log, log[-2000:]
    assert "Traceback" not in log


def test_directory_listing_429_is_retried_and_names_still_resolve(make_bot, fake):
    fake.fail_next("users.list", count=1, status=429, retry_after=1)
    bot = make_bot(plugins={"named": '''
        outputs = []
        def process_message(data):
            outputs.append(["#random", "to random"])
        '''}).start()
    fake.message("x", channel="C1GENERAL")
    msgs = fake.wait_for_messages(1, timeout=20)
    assert msgs[0]["channel"] == "C2RANDOM"
    assert "retrying in" in bot.log()
    assert "no channel named" not in bot.log()


def test_unusable_logfile_in_reload_is_rejected_and_reloads_keep_working(make_bot, fake, tmp_path):
    bot = make_bot(plugins={"parrot": PARROT}).start()
    good = dict(bot.settings)
    bot.write_config(yaml.safe_dump({**good, "LOGFILE": str(tmp_path / "no" / "such" / "dir" / "x.log")}))
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGHUP)
    i = bot.notify.wait_for("READY", "1", after=bot.notify.wait_for("RELOADING", "1", after=mark))
    assert "LOGFILE" in bot.notify.messages[i][1]["STATUS"]
    bot.write_config(yaml.safe_dump(good))
    bot.write_plugin("second", PARROT.replace("parrot:", "second:"))
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGHUP)
    i = bot.notify.wait_for("READY", "1", after=bot.notify.wait_for("RELOADING", "1", after=mark))
    assert "generation 2" in bot.notify.messages[i][1]["STATUS"]
    assert sorted(bot.say("hi", channel="C1GENERAL", replies=2)) == ["parrot: hi", "second: hi"]


def test_lone_surrogates_in_text_do_not_break_the_link(make_bot, fake):
    bot = make_bot(plugins={"sur": '''
        outputs = []
        def process_message(data):
            outputs.append([data["channel"], "file caf\\udce9.txt"])
        '''}).start()
    opened = fake.connections_opened
    assert bot.say("x") == ["file caf\ufffd.txt"]
    assert bot.say("y") == ["file caf\ufffd.txt"]
    assert fake.connections_opened == opened


def test_sighup_while_starting_is_not_lost(make_bot, fake):
    bot = make_bot(plugins={"slow": '''
        import time
        time.sleep(1.0)          # a slow import keeps the daemon in STARTING
        outputs = []
        def process_message(data):
            outputs.append([data["channel"], "v1"])
        '''})
    bot.start(wait_ready=False, wait_connected=False)
    bot.wait_log("store: ")          # the daemon runs; the plugin import is still sleeping
    bot.write_plugin("slow", '''
        outputs = []
        def process_message(data):
            outputs.append([data["channel"], "v2"])
        ''')
    bot.signal(signal.SIGHUP)
    r = bot.notify.wait_for("RELOADING", "1", timeout=15)
    bot.notify.wait_for("READY", "1", after=r, timeout=15)
    bot.wait_log("connected to Slack")
    assert bot.say("which") == ["v2"]
