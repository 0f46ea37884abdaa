"""Plugins cannot break the engine or each other: import paths, bad outputs and events, hung imports."""
import signal
from pathlib import Path

from rtmbotd.router import MAX_DEPTH
from tests.e2e.harness import wait_until

ECHO = '''
outputs = []
def process_message(data):
    outputs.append([data["channel"], "{name}: " + data["text"]])
'''


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line")


def test_helpers_named_like_the_standard_library_leave_store_and_web_api_working(make_bot, fake, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    bot = make_bot(fixtures=("shadows_stdlib", "same_library_names"), env={"STATE_DIRECTORY": str(state)})
    del bot.settings["STORE_URL"]          # the default store, created when the plugin first touches it
    bot.write_config()
    bot.start()
    assert not (state / "rtmbot.sqlite").exists()
    replies = bot.say("hi", channel="C1GENERAL", replies=4, timeout=30)    # imports SQLAlchemy, slack_sdk
    assert "via the Web API" in replies
    assert "seen 1, api ok: True; the plugin's decimal, the plugin's mimetypes, the plugin's numbers, " \
           "the plugin's pickle" in replies
    assert sorted(r for r in replies if "helpers" in r) == ["alpha's helpers", "beta's helpers"]
    assert (state / "rtmbot.sqlite").exists()
    assert "seen 2," in " ".join(bot.say("again", channel="C1GENERAL", replies=4))
    assert "Traceback" not in bot.log()


def test_bad_outputs_and_deep_events_cost_only_themselves(make_bot, fake):
    bot = make_bot(plugins={
        "messy": '''
            import threading
            outputs = []
            class GetRaises(dict):
                def get(self, *args):
                    raise RuntimeError("get says no")
            class GetBlocks(dict):
                def get(self, *args):
                    threading.Event().wait()
            def deep(levels):
                value = "bottom"
                for _ in range(levels):
                    value = {"blocks": [value]}
                return value
            def process_message(data):
                if data["text"] == "bad outputs":
                    outputs.extend([
                        GetRaises(channel=data["channel"], text="get raises"),
                        {"channel": data["channel"], "text": "too deep", "blocks": [deep(5000)]},
                        GetBlocks(channel=data["channel"], text="get blocks"),
                        [data["channel"], "after the bad ones"],
                    ])
            ''',
        "one": ECHO.format(name="one"), "two": ECHO.format(name="two"),
    }).start()
    replies = bot.say("bad outputs", channel="C1GENERAL", replies=5, timeout=20)
    assert sorted(replies) == ["after the bad ones", "get blocks", "get raises",
                               "one: bad outputs", "two: bad outputs"]
    assert f"plugin messy: output ignored: it is not plain JSON (nested deeper than {MAX_DEPTH} levels" in bot.log()
    before = len(fake.sent_messages())
    fake.push_raw('{"type": "message", "channel": "C1GENERAL", "user": "U1ALICE", "text": "deep", "x": '
                  + '[{"a": ' * 450 + "1" + "}]" * 450 + "}")     # 900 levels
    fake.message("after", channel="C1GENERAL")
    msgs = fake.wait_for_messages(before + 4, timeout=20)
    assert sorted(m["text"] for m in msgs[before:]) == ["one: after", "one: deep", "two: after", "two: deep"]
    assert "internal error" not in bot.log()


def test_hung_import_is_not_retried_on_reload_and_shows_in_status(make_bot, fake):
    bot = make_bot(plugins={"echo": ECHO.format(name="echo"), "hangs": '''
        import threading
        threading.Event().wait()        # an import that never ends
        '''}, settings={"IMPORT_TIMEOUT": 1})
    bot.start()
    wait_until(lambda: "1 import(s) hung" in bot.notify.statuses()[-1], 10, "STATUS with the hung import")
    base = threads_of(bot.proc.pid)
    for _ in range(10):
        mark = len(bot.notify.messages)
        bot.signal(signal.SIGHUP)
        i = bot.notify.wait_for("READY", "1", after=bot.notify.wait_for("RELOADING", "1", after=mark), timeout=20)
        status = bot.notify.messages[i][1]["STATUS"]
        assert "hangs: ImportStillRunning: import still running from an earlier reload" in status
        assert "1 import(s) hung" in status
    # a build thread may still be returning; the count settles at the base, not base + 10
    wait_until(lambda: threads_of(bot.proc.pid) <= base + 1, 10, f"threads back to about {base}")
    assert bot.say("still here") == ["echo: still here"]
