"""Review of the outputs naming Web API writes (issue #14): what a demanding plugin gives them."""
from __future__ import annotations

import base64
import os
import signal

import pytest

from tests.e2e.harness import wait_until
from tests.e2e.test_outputs import SAYS, results, say, writes


def test_a_fifo_as_path_is_dropped_and_blocks_neither_the_channel_nor_the_stop(make_bot, fake) -> None:
    """Opening a FIFO for reading waits for a writer: the upload must not sit on it."""
    bot = make_bot(plugins={"says": SAYS})
    os.mkfifo(bot.plugins_dir / "says" / "pipe")
    bot.start()
    say(fake, [{"method": "files.upload", "channel": "C1GENERAL", "filename": "pipe", "path": "pipe",
                "callback": "up"},
               {"channel": "C1GENERAL", "text": "after the pipe"}])
    assert [m["text"] for m in fake.wait_for_messages(1, channel="C1GENERAL", timeout=60)] == ["after the pipe"]
    bot.wait_log(r"plugin says: files.upload to C1GENERAL dropped: files.upload: file_unreadable")
    fake.wait_until(lambda: results(fake), timeout=60)
    assert results(fake)[0]["error"] == "file_unreadable"
    bot.signal(signal.SIGTERM)
    assert bot.wait_exit(60) == 0


def test_a_directory_as_path_is_dropped_alone(make_bot, fake) -> None:
    bot = make_bot(plugins={"says": SAYS})
    (bot.plugins_dir / "says" / "sub").mkdir()
    bot.start()
    say(fake, [{"method": "files.upload", "channel": "C1GENERAL", "filename": "sub", "path": "sub"},
               {"channel": "C1GENERAL", "text": "after the folder"}])
    assert [m["text"] for m in fake.wait_for_messages(1, channel="C1GENERAL", timeout=60)] == ["after the folder"]
    bot.wait_log(r"plugin says: files.upload to C1GENERAL dropped: files.upload: file_unreadable")
    assert fake.uploaded_files() == []


def test_a_symlink_out_of_the_folder_is_refused(make_bot, fake, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    bot = make_bot(plugins={"says": SAYS})
    (bot.plugins_dir / "says" / "link.txt").symlink_to(secret)
    bot.start()
    say(fake, [{"method": "files.upload", "channel": "C1GENERAL", "filename": "l", "path": "link.txt"},
               {"channel": "C1GENERAL", "text": "after the link"}])
    assert [m["text"] for m in fake.wait_for_messages(1, channel="C1GENERAL", timeout=60)] == ["after the link"]
    bot.wait_log(r"plugin says: output ignored: files.upload: path 'link.txt' is outside the plugin's folder")
    assert fake.uploaded_files() == [] and not fake.web_calls("files.getUploadURLExternal")


@pytest.mark.parametrize("item, logged", [
    ({"method": " reactions.add", "timestamp": "$ts", "name": "eyes"}, "unknown method ' reactions.add'"),
    ({"method": "Reactions.Add", "timestamp": "$ts", "name": "eyes"}, "unknown method 'Reactions.Add'"),
    ({"method": 7, "timestamp": "$ts", "name": "eyes"}, "unknown method 7"),
    ({"method": "reactions.add", "timestamp": "$ts", "name": "eyes", "callback": 3}, "callback must be a name"),
    ({"method": "reactions.add", "timestamp": 1.5, "name": "eyes"}, "timestamp must be a non-empty string"),
    ({"method": "chat.postEphemeral", "text": "x"}, "chat.postEphemeral needs user"),
    ({"method": "chat.scheduleMessage", "text": "x", "post_at": "soon"}, "post_at must be a Unix time"),
    ({"method": "files.upload", "filename": "f", "content": "a", "path": "b"}, "needs content or path"),
    ({"method": "files.upload", "filename": "f", "content": "x" * (800 * 1024)}, "over the limit"),
])
def test_odd_writes_are_logged_with_the_plugin_and_dropped_alone(make_bot, fake, item, logged) -> None:
    bot = make_bot(plugins={"says": SAYS}).start()
    say(fake, [dict(item, channel="C1GENERAL"), {"channel": "C1GENERAL", "text": "still sent"}])
    assert [m["text"] for m in fake.wait_for_messages(1, channel="C1GENERAL", timeout=60)] == ["still sent"]
    bot.wait_log("plugin says: .*" + logged.replace("(", r"\(").replace(")", r"\)"))
    assert [c["method"] for c in fake.web_calls() if c["method"] != "chat.postMessage"
            and c["method"].split(".")[0] in ("reactions", "chat", "files")] == []


@pytest.mark.parametrize("method, args, error", [
    ("reactions.remove", {"timestamp": "$ts", "name": "eyes"}, "no_reaction"),
    ("chat.update", {"ts": "$ts", "text": "x"}, "cant_update_message"),
    ("chat.delete", {"ts": "$ts"}, "message_not_found"),
    ("chat.postEphemeral", {"user": "U1ALICE", "text": "x"}, "user_not_in_channel"),
    ("chat.scheduleMessage", {"post_at": 1, "text": "x"}, "time_in_past"),
    ("files.upload", {"filename": "f", "content": "x"}, "invalid_arguments"),
])
def test_a_refusal_of_each_method_is_final_and_reaches_the_callback(make_bot, fake, method, args, error) -> None:
    bot = make_bot(plugins={"says": SAYS}).start()
    failing = "files.getUploadURLExternal" if method == "files.upload" else method
    fake.fail_next(failing, status=200, retry_after=None, error=error)
    say(fake, [dict(args, method=method, channel="#general", callback="c"), ["C1GENERAL", "next"]])
    assert [m["text"] for m in fake.wait_for_messages(1, channel="C1GENERAL", timeout=60)] == ["next"]
    fake.wait_until(lambda: results(fake), timeout=60)
    (result,) = results(fake)
    assert (result["ok"], result["error"], result["response"]) == (False, error, None)
    assert len(fake.web_calls(failing)) == 1
    bot.wait_log(f"plugin says: {method} to C1GENERAL dropped")


@pytest.mark.parametrize("method, args", [
    ("chat.update", {"ts": "$ts", "text": "x"}),
    ("chat.postEphemeral", {"user": "U1ALICE", "text": "x"}),
    ("files.upload", {"filename": "f", "content": "x"}),
])
def test_a_429_on_each_kind_is_retried_after_retry_after(make_bot, fake, method, args) -> None:
    bot = make_bot(mode="socket_mode", plugins={"says": SAYS}).start()
    failing = "files.completeUploadExternal" if method == "files.upload" else method
    fake.fail_next(failing, status=429, retry_after=1)
    say(fake, [dict(args, method=method, channel="C1GENERAL"), ["C1GENERAL", "after it"]])
    fake.wait_until(lambda: fake.api_calls("chat.postMessage"), timeout=60)
    assert [c["method"] for c in writes(fake)][-2:] == [failing, "chat.postMessage"]
    assert len(fake.web_calls(failing)) == 2
    bot.wait_log(f"Slack rate limit on {failing}")


def test_callbacks_of_writes_saved_at_a_stop_are_called_after_the_restart(tmp_path, fake) -> None:
    from tests.e2e.harness import Rtmbotd
    bot = Rtmbotd(tmp_path, fake, settings={"STOP_TIMEOUT": 1}, plugins={"says": SAYS})
    try:
        bot.start()
        say(fake, [["#general", "names listed"]])
        fake.wait_for_messages(1, channel="C1GENERAL", timeout=60)
        fake.set_web_api_down(True)
        say(fake, [{"method": "reactions.add", "channel": "#general", "timestamp": "$ts", "name": "eyes",
                    "callback": "kept"}])
        wait_until(lambda: fake.web_calls("reactions.add"), 60, "a reactions.add tried while the Web API is down")
        bot.signal(signal.SIGTERM)
        assert bot.wait_exit(60) == 0
    finally:
        bot.stop()
    fake.set_web_api_down(False)
    again = Rtmbotd(tmp_path, fake, plugins={"says": SAYS})
    try:
        again.start()
        fake.wait_until(lambda: results(fake), timeout=60)
        (result,) = results(fake)
        assert result["callback"] == "kept" and result["ok"] is True
        assert result["output"]["method"] == "reactions.add" and result["output"]["channel"] == "#general"
    finally:
        again.stop()


HANGS = '''
import threading, json
outputs = []
gate = threading.Event()
def process_message(data):
    if data.get("text") == "go":
        outputs.append({"channel": data["channel"], "text": "posted", "callback": "slow"})
def process_output_result(result):
    gate.wait(30)
'''


def test_a_hanging_callback_costs_only_its_plugin(make_bot, fake) -> None:
    bot = make_bot(settings={"PLUGIN_TIMEOUT": 1}, plugins={"hangs": HANGS, "says": SAYS}).start()
    fake.message("go", channel="C1GENERAL")
    fake.wait_for_messages(1, channel="C1GENERAL", timeout=60)
    bot.wait_log(r"hangs", timeout=60)
    say(fake, [["C1GENERAL", "others go on"]])
    fake.wait_until(lambda: any(m["text"] == "others go on" for m in fake.sent_messages("C1GENERAL")), timeout=60)


def test_a_reload_while_writes_wait_keeps_them_and_their_callbacks(make_bot, fake) -> None:
    bot = make_bot(plugins={"says": SAYS}).start()
    say(fake, [["#general", "names listed"]])
    fake.wait_for_messages(1, channel="C1GENERAL", timeout=60)
    fake.set_web_api_down(True)
    say(fake, [{"method": "reactions.add", "channel": "C1GENERAL", "timestamp": "$ts", "name": f"r{i}",
                "callback": f"c{i}"} for i in range(3)])
    wait_until(lambda: fake.web_calls("reactions.add"), 60, "a reactions.add tried while the Web API is down")
    bot.signal(signal.SIGHUP)
    bot.wait_log(r"reload", timeout=60)
    fake.set_web_api_down(False)
    fake.wait_until(lambda: len(results(fake)) == 3, timeout=60)
    assert [r["callback"] for r in results(fake)] == ["c0", "c1", "c2"]
    assert [c["name"] for c in fake.api_calls("reactions.add")] == ["r0", "r1", "r2"]


NAMES = '''
outputs = []
def process_message(data):
    if data.get("text") == "one":
        outputs.append(["#general", "by name"])
'''
IDS = '''
outputs = []
def process_message(data):
    if data.get("text") == "two":
        outputs.append(["D1ALICE", "by id"])
'''


def test_another_plugins_name_waiting_for_the_listing_holds_no_output_by_id(make_bot, fake) -> None:
    """Order is per plugin and channel: `#general` of one plugin waiting for a listing that
    keeps failing must not hold another plugin's output to a channel id (it did not before)."""
    fake.fail_next("conversations.list", count=10_000, status=500, retry_after=None, error="internal_error")
    bot = make_bot(settings={"PLUGIN_TIMEOUT": 2}, plugins={"names": NAMES, "ids": IDS}).start()
    fake.message("one", channel="C1GENERAL")
    wait_until(lambda: any("1 message(s) queued" in s for s in bot.notify.statuses()), 60,
               "#general waiting for the listing")
    fake.message("two", channel="C1GENERAL")
    msgs = fake.wait_for_messages(1, channel="D1ALICE", timeout=60)
    assert [m["text"] for m in msgs] == ["by id"]
    assert fake.sent_messages("C1GENERAL") == []


@pytest.mark.parametrize("mode", ["rtm", "socket_mode"])
def test_user_targets_for_uploads_ephemerals_and_reactions(make_bot, fake, mode: str) -> None:
    make_bot(mode=mode, plugins={"says": SAYS}).start()
    say(fake, [{"method": "files.upload", "channel": "@alice", "filename": "a.txt", "content": "bytes é"},
               {"method": "chat.postEphemeral", "channel": "@bob", "user": "U2BOB", "text": "psst"},
               {"method": "reactions.add", "channel": "U2BOB", "timestamp": "$ts", "name": "eyes"},
               {"method": "chat.update", "channel": "U1ALICE", "ts": "$ts", "text": "edited", "callback": "u"}])
    fake.wait_until(lambda: fake.uploaded_files() and fake.api_calls("reactions.add")
                    and fake.api_calls("chat.postEphemeral") and fake.api_calls("chat.update"), timeout=60)
    (upload,) = fake.uploaded_files()
    assert upload["channel"] == "D1ALICE" and base64.b64decode(upload["content_base64"]) == "bytes é".encode()
    bob = fake.api_calls("chat.postEphemeral")[0]["channel"]
    assert bob.startswith("D") and fake.api_calls("reactions.add")[0]["channel"] == bob
    assert fake.api_calls("chat.update")[0]["channel"] == "D1ALICE"
    fake.wait_until(lambda: results(fake), timeout=60)
    assert results(fake)[0]["ok"] is True


def test_failed_writes_count_under_their_code_and_never_user_text(make_bot, fake) -> None:
    from tests.e2e.test_metrics_e2e import Address, free_port, scrape
    address = Address("127.0.0.1", free_port())
    bot = make_bot(settings={"METRICS": str(address)}, plugins={"says": SAYS})
    (bot.plugins_dir / "says" / "sub").mkdir()
    bot.start()
    fake.fail_next("reactions.add", status=200, retry_after=None, error="secret text of user U1ALICE")
    say(fake, [{"method": "reactions.add", "channel": "C1GENERAL", "timestamp": "$ts", "name": "eyes"},
               {"method": "files.upload", "channel": "C1GENERAL", "filename": "sub", "path": "sub"},
               {"method": "chat.delete", "channel": "C1GENERAL", "ts": "$ts", "callback": "d"}])
    fake.wait_until(lambda: results(fake), timeout=60)

    def failed() -> dict:
        return {s.labels["reason"]: s.value for fam in scrape(address).values() for s in fam.samples
                if s.name == "rtmbotd_messages_failed_total"}
    wait_until(lambda: sum(failed().values()) >= 2, 60, "two failed writes counted")
    assert {k: v for k, v in failed().items() if v} == {"other": 1.0, "file_unreadable": 1.0}
    sent = sum(s.value for fam in scrape(address).values() for s in fam.samples
               if s.name == "rtmbotd_messages_sent_total")
    assert sent >= 1
    assert "secret" not in str(scrape(address))


def test_writes_and_their_callbacks_survive_a_sigkill(tmp_path, fake) -> None:
    from rtmbotd.store import Store
    from tests.e2e.harness import Rtmbotd
    url = f"sqlite:///{tmp_path / 'kept.sqlite'}"
    bot = Rtmbotd(tmp_path, fake, settings={"STORE_URL": url}, plugins={"says": SAYS})
    try:
        bot.start()
        fake.set_web_api_down(True)
        say(fake, [{"method": "reactions.add", "channel": "C1GENERAL", "timestamp": "$ts", "name": "eyes",
                    "callback": "k"},
                   {"method": "files.upload", "channel": "C1GENERAL", "filename": "k.txt", "content": "killed"}])

        def rows() -> int:
            with Store.open(url) as store:
                return len(store.load_outbox())
        wait_until(lambda: rows() == 2, 60, "both writes in the store")
        bot.proc.send_signal(signal.SIGKILL)
        bot.proc.wait(20)
    finally:
        bot.stop()
    fake.set_web_api_down(False)
    again = Rtmbotd(tmp_path, fake, settings={"STORE_URL": url}, plugins={"says": SAYS})
    try:
        again.start()
        fake.wait_until(lambda: fake.uploaded_files() and results(fake), timeout=60)
        assert [c["method"] for c in writes(fake)] == ["reactions.add", "files.completeUploadExternal"]
        assert results(fake)[0]["callback"] == "k" and results(fake)[0]["ok"] is True
    finally:
        again.stop()
