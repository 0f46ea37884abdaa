"""rtmbotd.notify: our own sd_notify sender (UTF-8, abstract sockets, never raising)."""
import logging
import os
import socket

import pytest

from rtmbotd.notify import STATUS_MAX_BYTES, Notifier, socket_address, status_value
from rtmbotd.testing.notify_listener import NotifyListener


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(5)
    yield sock
    sock.close()


def fields(datagram: bytes) -> dict:
    return dict(line.split("=", 1) for line in datagram.decode("utf-8").split("\n") if line)


def test_ready_with_non_latin1_status_arrives_as_utf8(listener):
    notifier = Notifier({"NOTIFY_SOCKET": listener.getsockname()})
    notifier.ready("reload failed: plugin сломан: ImportError; 🤖")
    data = listener.recv(65536)
    assert data.endswith(b"\n") and fields(data) == {
        "READY": "1", "STATUS": "reload failed: plugin сломан: ImportError; 🤖"}


def test_abstract_socket_name(listener):
    name = "rtmbotd-test-%d" % os.getpid()
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind(b"\0" + name.encode())
    abstract.settimeout(5)
    try:
        assert socket_address("@" + name) == b"\0" + name.encode()
        Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert abstract.recv(100) == b"WATCHDOG=1\n"
    finally:
        abstract.close()


def test_status_cannot_break_the_datagram(listener):
    notifier = Notifier({"NOTIFY_SOCKET": listener.getsockname()})
    notifier.stopping("line one\nREADY=1\r\nnul\0here")
    assert fields(listener.recv(65536)) == {"STOPPING": "1", "STATUS": "line one READY=1 nul here"}
    notifier.ready("ж" * 5000)                    # 10000 bytes of UTF-8
    data = listener.recv(65536)
    assert len(data) < 4096 and fields(data)["READY"] == "1"
    status = fields(data)["STATUS"]
    assert status.endswith("…") and len(status.encode()) <= STATUS_MAX_BYTES and set(status[:-1]) == {"ж"}


def test_status_value_keeps_short_text_and_replaces_lone_surrogates():
    assert status_value("  ok  ") == "ok"
    assert status_value("folder \udcff") == "folder \udcff"      # kept; the datagram encodes it as "?"


def test_undecodable_path_in_status_still_sends_ready(listener):
    Notifier({"NOTIFY_SOCKET": listener.getsockname()}).ready("bad \udcff name")
    assert fields(listener.recv(65536)) == {"READY": "1", "STATUS": "bad ? name"}


def test_failure_is_logged_once_and_never_raised(tmp_path, caplog):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    with caplog.at_level(logging.INFO, logger="rtmbotd.notify"):
        notifier.ready("x")
        notifier.watchdog()
        notifier.watchdog()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot notify systemd" in warnings[0].getMessage()
    assert "READY STATUS" in warnings[0].getMessage()


def test_recovery_is_logged_and_rearms_the_warning(tmp_path, caplog):
    path = tmp_path / "later.sock"
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    with caplog.at_level(logging.INFO, logger="rtmbotd.notify"):
        notifier.watchdog()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        try:
            notifier.watchdog()
            assert sock.recv(100) == b"WATCHDOG=1\n"
        finally:
            sock.close()
        os.unlink(path)
        notifier.watchdog()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot notify systemd" in m for m in messages) == 2
    assert any("works again" in m for m in messages)


def test_unset_or_relative_socket_is_a_no_op(caplog):
    assert not Notifier({}).enabled
    with caplog.at_level(logging.WARNING, logger="rtmbotd.notify"):
        relative = Notifier({"NOTIFY_SOCKET": "relative.sock"})
    assert not relative.enabled and "neither an absolute path" in caplog.text
    relative.ready("x")                          # nothing to send to, nothing raised


def test_listener_splits_fields_on_newlines_only_as_systemd_does(tmp_path):
    # A plugin named "a\u2028b" in "stuck: a\u2028b, other": str.splitlines() also
    # splits at U+2028, U+0085 and \x1c-\x1e, so the testing listener cut the STATUS
    # there while systemd (which splits at "\n" alone) shows all of it.
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        status = "stuck: a\u2028b, c\x85d, e\u2029f, other"
        Notifier({"NOTIFY_SOCKET": listener.path}).ready(status)
        listener.wait_for("READY", "1", timeout=10)
        assert listener.statuses() == [status]
    finally:
        listener.close()
