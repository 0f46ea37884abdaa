"""Outputs naming a Web API write: parsing, what is queued and saved, callbacks' items."""
from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from rtmbotd.outbox import Message, Outbox
from rtmbotd.outbox.journal import Journal, record_of
from rtmbotd.router import Output, parse_output
from rtmbotd.slack.writes import MAX_CONTENT_BASE64, METHODS
from tests.test_outbox_journal import RecordingStore

TS = "1700000000.000100"


@pytest.mark.parametrize("item, method, extra", [
    ({"method": "reactions.add", "channel": "#general", "timestamp": TS, "name": "eyes"},
     "reactions.add", {"timestamp": TS, "name": "eyes"}),
    ({"method": "reactions.remove", "channel": "C1", "timestamp": TS, "name": "eyes"},
     "reactions.remove", {"timestamp": TS, "name": "eyes"}),
    ({"method": "chat.update", "channel": "C1", "ts": TS, "text": "edited"}, "chat.update", {"ts": TS}),
    ({"method": "chat.delete", "channel": "C1", "ts": TS}, "chat.delete", {"ts": TS}),
    ({"method": "chat.postEphemeral", "channel": "C1", "user": "U1", "text": "psst"},
     "chat.postEphemeral", {"user": "U1"}),
    ({"method": "chat.scheduleMessage", "channel": "@alice", "post_at": 1900000000, "text": "later"},
     "chat.scheduleMessage", {"post_at": 1900000000}),
    ({"method": "chat.postMessage", "channel": "C1", "text": "as without method"}, "chat.postMessage", {}),
    ({"channel": "C1", "text": "no method"}, "chat.postMessage", {}),
])
def test_each_method_parses_with_its_arguments(item: dict, method: str, extra: dict) -> None:
    out = parse_output(item, "p")
    assert out is not None
    assert (out.target, out.method, out.extra, out.callback) == (item["channel"], method, extra, None)
    assert out.text == item.get("text")


@pytest.mark.parametrize("item, why", [
    ({"method": "chat.frobnicate", "channel": "C1", "text": "x"}, "unknown method 'chat.frobnicate'"),
    ({"method": 7, "channel": "C1", "text": "x"}, "unknown method 7"),
    ({"method": "reactions.add", "channel": "C1", "name": "eyes"}, "reactions.add needs timestamp"),
    ({"method": "reactions.add", "channel": "C1", "timestamp": TS, "name": 3}, "name must be a non-empty string"),
    ({"method": "reactions.add", "timestamp": TS, "name": "eyes"}, "it needs a channel"),
    ({"method": "chat.update", "channel": "C1", "text": "x"}, "chat.update needs ts"),
    ({"method": "chat.delete", "channel": "C1", "ts": ""}, "chat.delete needs ts"),
    ({"method": "chat.postEphemeral", "channel": "C1", "text": "x"}, "chat.postEphemeral needs user"),
    ({"method": "chat.postEphemeral", "channel": "C1", "user": "U1"}, "needs text or blocks"),
    ({"method": "chat.scheduleMessage", "channel": "C1", "text": "x"}, "needs post_at"),
    ({"method": "chat.scheduleMessage", "channel": "C1", "text": "x", "post_at": "soon"}, "post_at must be"),
    ({"method": "chat.scheduleMessage", "channel": "C1", "text": "x", "post_at": True}, "post_at must be"),
    ({"method": "files.upload", "channel": "C1", "content": "x"}, "files.upload needs filename"),
    ({"method": "files.upload", "channel": "C1", "filename": "a"}, "needs content or path"),
    ({"method": "files.upload", "channel": "C1", "filename": "a", "content": 5}, "content must be str or bytes"),
    ({"method": "chat.update", "channel": "C1", "ts": TS, "text": 5}, "text must be a string"),
    ({"channel": "C1", "text": "x", "callback": 5}, "callback must be a name"),
    ({"channel": "C1", "text": "x", "content": b"raw"}, "bytes are for files.upload's content only"),
    ({"method": "chat.update", "channel": "C1", "ts": TS, "text": "x", "content": b"raw"}, "bytes are for"),
])
def test_unknown_methods_and_missing_arguments_are_logged_with_the_plugin_and_dropped(
        item: dict, why: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert parse_output(item, "myplugin") is None
    assert "plugin myplugin:" in caplog.text and why in caplog.text


def test_every_known_method_but_post_is_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for method in METHODS:
        assert f"`{method}`" in readme


def test_upload_content_is_queued_as_base64_str_or_bytes() -> None:
    for content in ("héllo", "héllo".encode()):
        out = parse_output({"method": "files.upload", "channel": "C1", "filename": "a.txt", "content": content,
                            "title": "A", "callback": "up"}, "p")
        assert out.extra == {"filename": "a.txt", "title": "A",
                             "content_base64": base64.b64encode("héllo".encode()).decode()}
        # The callback's copy of the item leaves the bytes out (they may be large and not JSON).
        assert out.callback == {"callback": "up", "output": {"method": "files.upload", "channel": "C1",
                                                             "filename": "a.txt", "title": "A",
                                                             "callback": "up"}}


def test_upload_content_over_the_limit_is_refused_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    big = b"x" * (MAX_CONTENT_BASE64 // 4 * 3 + 3)
    with caplog.at_level(logging.ERROR):
        assert parse_output({"method": "files.upload", "channel": "C1", "filename": "a", "content": big}, "p") is None
    assert f"over the limit of {MAX_CONTENT_BASE64} bytes base64" in caplog.text
    ok = b"x" * (MAX_CONTENT_BASE64 // 4 * 3)
    assert parse_output({"method": "files.upload", "channel": "C1", "filename": "a", "content": ok}, "p")


def test_upload_path_is_under_the_plugin_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "plugin"
    (folder / "data").mkdir(parents=True)
    out = parse_output({"method": "files.upload", "channel": "C1", "filename": "r.csv", "path": "data/r.csv"},
                       "p", folder)
    assert out.extra == {"filename": "r.csv", "path": str(folder.resolve() / "data" / "r.csv")}
    with caplog.at_level(logging.ERROR):
        for path in ("../secret", "data/../../secret", str(tmp_path / "secret"), "/etc/passwd"):
            assert parse_output({"method": "files.upload", "channel": "C1", "filename": "s", "path": path},
                                "p", folder) is None
        assert parse_output({"method": "files.upload", "channel": "C1", "filename": "s", "path": "x"}, "p") is None
    assert caplog.text.count("outside the plugin's folder") == 2
    assert caplog.text.count("must be relative to the plugin's folder") == 2
    assert "has no folder" in caplog.text


def test_a_callback_keeps_the_item_as_given() -> None:
    item = {"channel": "#general", "text": "working…", "callback": "posted", "thread_ts": TS}
    out = parse_output(item, "p")
    assert out.callback == {"callback": "posted", "output": item}
    assert out.extra == {"thread_ts": TS}


def test_method_writes_are_never_split_nor_sent_on_the_rtm_socket() -> None:
    box = Outbox(rate=0, burst=1)
    long = "word " * 1000
    (update,) = box.enqueue("C1", long, "p", 0.0, {"ts": TS}, method="chat.update")
    assert update.text == long and not update.plain
    react, = box.enqueue("C1", None, "p", 0.0, {"timestamp": TS, "name": "eyes"}, method="reactions.add")
    assert not react.plain
    posted = box.enqueue("C1", long, "p", 0.0, callback={"callback": "c", "output": {}})
    assert len(posted) == 2
    assert [m.callback for m in posted] == [{"callback": "c", "output": {}}, None]    # the first part's ts
    assert not posted[0].plain and posted[1].plain
    assert box.enqueue("C1", "plain", "p", 0.0)[0].plain
    # One queue per channel for every write: order kept.
    sent = []
    while True:
        ready = box.ready(0.0, socket=True, web=True)
        if not ready:
            break
        for msg, _ in ready:
            sent.append(msg.method)
            box.delivered(msg)
    assert sent == ["chat.update", "reactions.add", "chat.postMessage", "chat.postMessage", "chat.postMessage"]


def test_saved_records_carry_method_and_callback_and_old_rows_stay_messages() -> None:
    out = Output("#general", None, {"timestamp": TS, "name": "eyes"}, "p", method="reactions.add",
                 callback={"callback": "c", "output": {"x": 1}})
    assert record_of(out) == {"channel": "#general", "text": None, "plugin": "p",
                              "extra": {"timestamp": TS, "name": "eyes"}, "method": "reactions.add",
                              "callback": {"callback": "c", "output": {"x": 1}}}
    assert "method" not in record_of(Output("C1", "hi", {}, "p"))
    msg = Message(1, "C1", None, "p", {"timestamp": TS, "name": "eyes"}, method="reactions.add")
    assert msg.as_record()["method"] == "reactions.add"
    assert "method" not in Message(2, "C1", "hi", "p").as_record()
    store = RecordingStore({1: {"channel": "C1", "text": "from an older rtmbotd", "plugin": "p"},
                            2: record_of(out),
                            3: {"channel": "C1", "text": None, "plugin": "p", "extra": {"a": 1}, "method": "x.y"}})
    restored = Journal(store).restore(None)
    assert [(o.method, o.callback) for o in restored] == [("chat.postMessage", None),
                                                           ("reactions.add", out.callback)]


def test_read_file_takes_a_regular_file_within_the_limit(tmp_path: Path) -> None:
    from rtmbotd.slack.writes import read_file
    (tmp_path / "ok.bin").write_bytes(b"x" * 10)
    assert read_file(str(tmp_path / "ok.bin"), limit=10) == b"x" * 10
    with pytest.raises(OSError, match="over Slack's limit of 9 bytes"):
        read_file(str(tmp_path / "ok.bin"), limit=9)


def test_read_file_refuses_a_fifo_without_waiting_for_a_writer_and_a_folder(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: it would hold an executor thread forever."""
    import os
    from rtmbotd.slack.writes import read_file
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OSError, match="not a regular file"):
        read_file(str(tmp_path / "pipe"))
    with pytest.raises(OSError):
        read_file(str(tmp_path))


@pytest.mark.parametrize("item, logged", [
    ({"method": "chat.scheduleMessage", "channel": "C1", "text": "x", "post_at": "１２３"}, "post_at must be a Unix time"),
    ({"method": "chat.scheduleMessage", "channel": "C1", "text": "x", "post_at": "²"}, "post_at must be a Unix time"),
    ({"method": "files.upload", "channel": "C1", "filename": "a", "path": "x\x00y"}, "must not hold a NUL"),
])
def test_odd_arguments_are_refused_with_a_reason_not_a_traceback(item, logged, tmp_path, caplog) -> None:
    with caplog.at_level(logging.ERROR):
        assert parse_output(item, "p", tmp_path) is None
    assert logged in caplog.text and "Traceback" not in caplog.text
