"""Outputs naming a Web API write, through the real daemon against the fake Slack (issue #14)."""
from __future__ import annotations

import base64
import json
import signal

import pytest

from tests.e2e.harness import wait_until

# Appends the outputs a message gives as JSON ("out: [...]"), with "$ts" replaced by the
# message's ts; reports each callback's result as a DM to alice ("result: {...}") and,
# for "edit", edits the posted message with chat.update.
SAYS = '''
import json
outputs = []

def process_message(data):
    text = data.get("text") or ""
    if text.startswith("out: "):
        for item in json.loads(text[5:].replace("$ts", data["ts"])):
            outputs.append(item)

def process_output_result(result):
    if result["callback"] == "edit" and result["ok"]:
        answer = result["response"]
        outputs.append({"method": "chat.update", "channel": answer["channel"], "ts": answer["ts"],
                        "text": "done: " + result["output"]["text"]})
    outputs.append(["D1ALICE", "result: " + json.dumps(result, sort_keys=True)])
'''

WRITES = [
    {"method": "reactions.add", "channel": "#general", "timestamp": "$ts", "name": "eyes"},
    {"method": "reactions.remove", "channel": "C1GENERAL", "timestamp": "$ts", "name": "eyes"},
    {"method": "chat.update", "channel": "#general", "ts": "$ts", "text": "edited"},
    {"method": "chat.delete", "channel": "C1GENERAL", "ts": "$ts"},
    {"method": "chat.postEphemeral", "channel": "#general", "user": "U1ALICE", "text": "only you"},
    {"method": "chat.scheduleMessage", "channel": "@alice", "post_at": 1900000000, "text": "later"},
]


def say(fake, outputs: list, channel: str = "C1GENERAL") -> str:
    """Post `outputs` as a message the plugin turns into outputs; the message's ts."""
    ts = "1700000001.000200"
    fake.message("out: " + json.dumps(outputs), channel=channel, ts=ts)
    return ts


def results(fake) -> list[dict]:
    return [json.loads(m["text"][8:]) for m in fake.sent_messages("D1ALICE") if m["text"].startswith("result: ")]


def writes(fake) -> list[dict]:
    """Accepted calls that write to a channel, in arrival order."""
    wanted = {"chat.postMessage", "files.completeUploadExternal"} | {w["method"] for w in WRITES}
    return [c for c in fake.api_calls() if c["method"] in wanted]


@pytest.mark.parametrize("mode", ["rtm", "socket_mode"])
def test_each_method_via_outputs_with_names_resolved(make_bot, fake, mode: str) -> None:
    bot = make_bot(mode=mode, plugins={"says": SAYS}).start()
    ts = say(fake, WRITES)
    fake.wait_until(lambda: len(writes(fake)) == len(WRITES), timeout=60)
    calls = [c for c in writes(fake) if c["channel"] == "C1GENERAL"]     # order is per channel
    assert [c["method"] for c in calls] == [w["method"] for w in WRITES[:5]]
    assert calls[0] == {"method": "reactions.add", "channel": "C1GENERAL", "timestamp": ts, "name": "eyes"}
    assert calls[1] == {"method": "reactions.remove", "channel": "C1GENERAL", "timestamp": ts, "name": "eyes"}
    assert calls[2] == {"method": "chat.update", "channel": "C1GENERAL", "ts": ts, "text": "edited"}
    assert calls[3] == {"method": "chat.delete", "channel": "C1GENERAL", "ts": ts}
    assert calls[4] == {"method": "chat.postEphemeral", "channel": "C1GENERAL", "user": "U1ALICE",
                        "text": "only you"}
    assert fake.api_calls("chat.scheduleMessage") == [{"method": "chat.scheduleMessage", "channel": "D1ALICE",
                                                       "post_at": 1900000000, "text": "later"}]
    assert [e["action"] for e in fake.edits()] == ["update", "delete"]
    assert "ERROR" not in bot.log()


def test_writes_keep_their_order_with_plain_messages_to_one_channel(make_bot, fake) -> None:
    """RTM sends plain messages on the socket and writes by the Web API; one channel's
    queue keeps them in the order the plugin gave them."""
    make_bot(plugins={"says": SAYS}).start()
    items = []
    for i in range(4):
        items.append(["C1GENERAL", f"m{i}"])
        items.append({"method": "reactions.add", "channel": "C1GENERAL", "timestamp": "$ts", "name": f"r{i}"})
        items.append({"method": "chat.update", "channel": "C1GENERAL", "ts": "$ts", "text": f"u{i}"})
    say(fake, items)
    fake.wait_until(lambda: len(fake.api_calls("chat.update")) == 4, timeout=60)
    msgs = fake.wait_for_messages(4, channel="C1GENERAL", timeout=60)
    assert all(m["via"] == "rtm" for m in msgs)
    # One timeline: socket messages as they arrived, Web API writes as their requests arrived.
    timeline = [(m["received_at"], m["text"]) for m in msgs]
    timeline += [(c["received_at"], c["params"].get("name") or c["params"].get("text"))
                 for c in fake.web_calls() if c["method"] in ("reactions.add", "chat.update")]
    assert [what for _, what in sorted(timeline)] == [x for i in range(4) for x in (f"m{i}", f"r{i}", f"u{i}")]


def test_writes_keep_their_order_with_plain_messages_socket_mode(make_bot, fake) -> None:
    make_bot(mode="socket_mode", plugins={"says": SAYS}).start()
    items = []
    for i in range(3):
        items.append(["#general", f"m{i}"])
        items.append({"method": "reactions.add", "channel": "C1GENERAL", "timestamp": "$ts", "name": f"r{i}"})
        items.append({"channel": "C1GENERAL", "text": f"t{i}", "thread_ts": "$ts"})
        items.append({"method": "chat.postEphemeral", "channel": "#general", "user": "U1ALICE", "text": f"e{i}"})
    say(fake, items)
    fake.wait_until(lambda: len(fake.api_calls("chat.postEphemeral")) == 3, timeout=60)
    got = [c.get("name") or c.get("text") for c in writes(fake)]
    assert got == [x for i in range(3) for x in (f"m{i}", f"r{i}", f"t{i}", f"e{i}")]


def test_429_with_retry_after_on_reactions_add_is_retried_in_order(make_bot, fake) -> None:
    bot = make_bot(plugins={"says": SAYS}).start()
    fake.fail_next("reactions.add", status=429, retry_after=2)
    say(fake, [{"method": "reactions.add", "channel": "C1GENERAL", "timestamp": "$ts", "name": "eyes"},
               {"channel": "C1GENERAL", "text": "after the reaction", "callback": "x"}])
    fake.wait_until(lambda: fake.api_calls("chat.postMessage"), timeout=60)
    assert len(fake.web_calls("reactions.add")) == 2
    assert [c["method"] for c in writes(fake)] == ["reactions.add", "chat.postMessage"]
    assert "Slack rate limit on reactions.add; pausing sends for 2 s" in bot.log()
    assert "dropped" not in bot.log()


def test_the_enforced_rate_limit_counts_reactions_too(make_bot, fake) -> None:
    """Every write to a channel shares its rate limit: no violation at the fake's enforced 1/s."""
    make_bot(settings={"RATE_LIMIT": 1, "RATE_BURST": 1}, plugins={"says": SAYS}).start()
    fake.enforce_rate_limit(1.0, burst=1)
    say(fake, [{"method": "reactions.add", "channel": "C1GENERAL", "timestamp": "$ts", "name": f"r{i}"}
               for i in range(3)])
    fake.wait_until(lambda: len(fake.api_calls("reactions.add")) == 3, timeout=60)
    assert fake.rate_limit_violations() == 0
    assert len(fake.web_calls("reactions.add")) == 3


def test_a_stop_with_queued_reactions_and_a_restart_sends_them(tmp_path, fake) -> None:
    from tests.e2e.harness import Rtmbotd
    bot = Rtmbotd(tmp_path, fake, settings={"STOP_TIMEOUT": 1}, plugins={"says": SAYS})
    try:
        bot.start()
        say(fake, [["#general", "names listed"]])      # the directory is loaded: names resolve
        fake.wait_for_messages(1, channel="C1GENERAL", timeout=60)
        fake.set_web_api_down(True)           # the RTM socket stays up; every Web API call fails
        say(fake, [{"method": "reactions.add", "channel": "#general", "timestamp": "$ts", "name": f"r{i}"}
                   for i in range(3)] + [{"method": "files.upload", "channel": "C1GENERAL", "filename": "n.txt",
                                          "content": "kept"}])
        wait_until(lambda: fake.web_calls("reactions.add"), 60, "a reactions.add tried while the Web API is down")
        bot.signal(signal.SIGTERM)
        assert bot.wait_exit(60) == 0
        bot.wait_log(r"4 undelivered message\(s\) saved")
    finally:
        bot.stop()
    assert fake.api_calls("reactions.add") == []
    fake.set_web_api_down(False)
    again = Rtmbotd(tmp_path, fake, plugins={"says": SAYS})
    try:
        again.start()
        fake.wait_until(lambda: fake.uploaded_files(), timeout=60)
        assert [c["name"] for c in fake.api_calls("reactions.add")] == ["r0", "r1", "r2"]
        assert all(c["channel"] == "C1GENERAL" for c in fake.api_calls("reactions.add"))
        assert base64.b64decode(fake.uploaded_files()[0]["content_base64"]) == b"kept"
        assert [c["method"] for c in writes(fake)] == ["reactions.add"] * 3 + ["files.completeUploadExternal"]
    finally:
        again.stop()


def test_an_unknown_method_or_missing_arguments_is_logged_and_dropped_alone(make_bot, fake) -> None:
    bot = make_bot(plugins={"says": SAYS}).start()
    say(fake, [{"method": "chat.frobnicate", "channel": "C1GENERAL", "text": "x"},
               {"method": "reactions.add", "channel": "C1GENERAL", "name": "eyes"},
               {"channel": "C1GENERAL", "text": "still sent"}])
    assert [m["text"] for m in fake.wait_for_messages(1, timeout=60)] == ["still sent"]
    bot.wait_log(r"plugin says: output ignored: unknown method 'chat.frobnicate'")
    bot.wait_log(r"plugin says: output ignored: reactions.add needs timestamp")
    assert not fake.web_calls("chat.frobnicate") and not fake.web_calls("reactions.add")


def test_a_slack_refusal_is_final_logged_and_given_to_the_callback(make_bot, fake) -> None:
    bot = make_bot(plugins={"says": SAYS}).start()
    react = {"method": "reactions.add", "channel": "C1GENERAL", "timestamp": "$ts", "name": "eyes", "callback": "r"}
    ts = say(fake, [react, react])
    fake.wait_until(lambda: len(results(fake)) == 2, timeout=60)
    first, second = results(fake)
    react = dict(react, timestamp=ts)
    assert first == {"callback": "r", "output": react, "ok": True, "response": {"ok": True}, "error": None}
    assert second == {"callback": "r", "output": react, "ok": False, "response": None, "error": "already_reacted"}
    assert len(fake.web_calls("reactions.add")) == 2          # not retried
    bot.wait_log(r"plugin says: reactions.add to C1GENERAL dropped: reactions.add: already_reacted")


def test_a_file_upload_end_to_end(make_bot, fake, tmp_path) -> None:
    """The three steps of Slack's upload flow; the bytes received are the content."""
    bot = make_bot(plugins={"says": SAYS})
    (bot.plugins_dir / "says" / "report.bin").write_bytes(bytes(range(256)) * 40)
    bot.start()
    say(fake, [{"method": "files.upload", "channel": "#general", "filename": "notes.txt", "content": "héllo\n",
                "title": "Notes", "thread_ts": "$ts", "text": "here you are", "callback": "up"},
               {"method": "files.upload", "channel": "C1GENERAL", "filename": "report.bin", "path": "report.bin"},
               {"method": "files.upload", "channel": "C1GENERAL", "filename": "x", "path": "../../rtmbot.conf"}])
    fake.wait_until(lambda: len(fake.uploaded_files()) == 2, timeout=60)
    notes, report = fake.uploaded_files()
    assert [c["method"] for c in fake.api_calls() if c["method"].startswith("files.")] == [
        "files.getUploadURLExternal", "files.completeUploadExternal"] * 2
    ticket = fake.api_calls("files.getUploadURLExternal")[0]
    assert (ticket["filename"], ticket["length"]) == ("notes.txt", str(len("héllo\n".encode())))
    assert base64.b64decode(notes["content_base64"]) == "héllo\n".encode()
    assert (notes["filename"], notes["title"], notes["channel"], notes["initial_comment"]) == (
        "notes.txt", "Notes", "C1GENERAL", "here you are")
    assert notes["thread_ts"] == "1700000001.000200"
    assert base64.b64decode(report["content_base64"]) == bytes(range(256)) * 40
    assert report["title"] == "report.bin"
    bot.wait_log(r"plugin says: output ignored: files.upload: path '../../rtmbot.conf' is outside")
    fake.wait_until(lambda: results(fake), timeout=60)
    (result,) = results(fake)
    assert result["ok"] and result["response"]["files"][0]["id"] == notes["id"]
    assert "content" not in result["output"]


def test_a_file_gone_at_send_time_is_logged_and_dropped(make_bot, fake) -> None:
    bot = make_bot(plugins={"says": SAYS})
    data = bot.plugins_dir / "says" / "gone.txt"
    data.write_text("soon gone")
    bot.start()
    fake.set_web_api_down(True)
    say(fake, [{"method": "files.upload", "channel": "C1GENERAL", "filename": "gone.txt", "path": "gone.txt"},
               {"channel": "C1GENERAL", "text": "after"}])
    wait_until(lambda: fake.web_calls("files.getUploadURLExternal"), 60, "an upload tried while the Web API is down")
    data.unlink()
    fake.set_web_api_down(False)
    assert [m["text"] for m in fake.wait_for_messages(1, channel="C1GENERAL", timeout=60)] == ["after"]
    bot.wait_log(r"files.upload: cannot read .*gone.txt: No such file")
    bot.wait_log(r"plugin says: files.upload to C1GENERAL dropped: files.upload: file_unreadable")
    assert fake.uploaded_files() == []


@pytest.mark.parametrize("mode", ["rtm", "socket_mode"])
def test_a_callback_receives_the_ts_and_edits_the_message(make_bot, fake, mode: str) -> None:
    """Acknowledge, then edit: the callback gets chat.postMessage's answer and its ts."""
    make_bot(mode=mode, plugins={"says": SAYS}).start()
    say(fake, [{"channel": "#general", "text": "working", "callback": "edit"}])
    fake.wait_until(lambda: fake.edits(), timeout=60)
    (posted,) = fake.sent_messages("C1GENERAL")
    (edit,) = fake.edits()
    assert (edit["action"], edit["ts"], edit["text"]) == ("update", posted["ts"], "done: working")
    fake.wait_until(lambda: results(fake), timeout=60)
    (result,) = results(fake)
    assert result["output"] == {"channel": "#general", "text": "working", "callback": "edit"}
    assert result["ok"] is True and result["error"] is None
    assert result["response"]["ts"] == posted["ts"] and result["response"]["channel"] == "C1GENERAL"


def test_a_callback_for_an_unknown_target_hears_it_failed(make_bot, fake) -> None:
    make_bot(plugins={"says": SAYS}).start()
    say(fake, [{"channel": "#nowhere", "text": "lost", "callback": "c"}])
    fake.wait_until(lambda: results(fake), timeout=60)
    (result,) = results(fake)
    assert (result["ok"], result["response"], result["error"]) == (False, None, "unknown_target")


CLASS_PLUGIN = '''
from rtmbot.core import Plugin

class Acks(Plugin):
    def process_message(self, data):
        if data.get("text") == "ack":
            self.outputs.append({"channel": data["channel"], "text": "on it", "callback": "acked"})

    def process_output_result(self, result):
        posted = result["response"]
        self.outputs.append({"method": "chat.update", "channel": posted["channel"], "ts": posted["ts"],
                             "text": "class done"})
'''

RAISES = '''
outputs = []
def process_message(data):
    if data.get("text") == "boom":
        outputs.append({"channel": data["channel"], "text": "first", "callback": "bad"})
        outputs.append({"channel": data["channel"], "text": "second", "callback": "bad"})
def process_output_result(result):
    outputs.append([result["output"]["channel"], "heard " + result["output"]["text"]])
    if result["output"]["text"] == "first":
        raise RuntimeError("callback broke")
'''


def test_a_class_plugin_gets_its_results_as_a_method(make_bot, fake) -> None:
    bot = make_bot(plugins={"acks": CLASS_PLUGIN}).start()
    fake.message("ack", channel="C1GENERAL")
    fake.wait_until(lambda: fake.edits(), timeout=60)
    (posted,) = fake.sent_messages("C1GENERAL")
    assert fake.edits()[0]["ts"] == posted["ts"] and fake.edits()[0]["text"] == "class done"
    assert "ERROR" not in bot.log()


def test_a_raising_callback_is_logged_with_the_plugin_and_costs_only_that_call(make_bot, fake) -> None:
    bot = make_bot(plugins={"raises": RAISES}).start()
    fake.message("boom", channel="C1GENERAL")
    msgs = fake.wait_for_messages(4, channel="C1GENERAL", timeout=60)
    assert sorted(m["text"] for m in msgs) == ["first", "heard first", "heard second", "second"]
    bot.wait_log(r"plugin raises: process_output_result raised on the result of 'bad'")
    assert "callback broke" in bot.log()


def test_a_callback_without_a_handler_is_said_once_per_result(make_bot, fake) -> None:
    bot = make_bot(plugins={"nohandler": '''
outputs = []
def process_message(data):
    if data.get("text") == "go":
        outputs.append({"channel": data["channel"], "text": "posted", "callback": "nobody"})
'''}).start()
    assert bot.say("go") == ["posted"]
    bot.wait_log(r"plugin nohandler: no process_output_result for callback 'nobody'; result dropped")
