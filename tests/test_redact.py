"""One redaction for every output channel: tokens, URL credentials, Authorization headers."""
import asyncio
import logging

import pytest

from rtmbotd.redact import redact

KINDS = ["xoxb", "xoxp", "xoxa", "xoxr", "xoxs", "xoxe", "xapp", "xoxe.xoxp", "XOXB"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tail", ["1", "1234-5678-AbCdEf", "1-" + "x" * 200])
def test_slack_tokens_of_every_kind_and_length(kind, tail):
    text = redact(f"got '{kind}-{tail}', then more")
    assert tail not in text and text == f"got '{kind}-[redacted]', then more"


def test_token_prefix_without_a_value_and_plain_text_stay():
    for text in ["a bot token starting with xoxb-", "a bot token (xoxb-...)", "mail bob@example.com",
                 "https://slack.com/api/chat.postMessage", "http://127.0.0.1:8080/x@y", "12:30 done",
                 "authorization failed"]:
        assert redact(text) == text


@pytest.mark.parametrize("url, shown", [
    ("http://user:PW@proxy:3128", "http://user:[redacted]@proxy:3128"),
    ("socks5h://bob:P@ss:w0rd@10.0.0.1:1080/", "socks5h://bob:[redacted]@10.0.0.1:1080/"),
    ("postgresql+psycopg://rtm:PW@db.example/rtm", "postgresql+psycopg://rtm:[redacted]@db.example/rtm"),
    ("https://PW@example.com/", "https://[redacted]@example.com/"),
    ("user:PW@proxy:3128", "user:[redacted]@proxy:3128"),
])
def test_url_credentials_of_any_scheme(url, shown):
    assert redact(f"proxy {url!r} refused") == f"proxy {shown!r} refused"


@pytest.mark.parametrize("header, shown", [
    ("Authorization: Bearer PW.x-y", "Authorization: Bearer [redacted]"),
    ("authorization: Basic UFc6UFc=", "authorization: Basic [redacted]"),
    ("Proxy-Authorization: Basic UFc6UFc=", "Proxy-Authorization: Basic [redacted]"),
    ("{'Authorization': 'Bearer PW'}", "{'Authorization': 'Bearer [redacted]'}"),
    ("Authorization=PW", "Authorization=[redacted]"),
])
def test_authorization_headers(header, shown):
    assert redact(header) == shown


def test_redacting_twice_changes_nothing_more():
    once = redact("http://u:PW@h xoxb-1-2 Authorization: Bearer PW")
    assert redact(once) == once and "PW" not in once and "1-2" not in once


def test_websockets_proxy_error_text_is_redacted(monkeypatch):
    """websockets puts the whole proxy URL into InvalidProxy: it reached STATUS and the log."""
    from rtmbotd.slack.link import open_websocket
    for name in ("NO_PROXY", "no_proxy", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", "ftp://user:S3cretPW@127.0.0.1:9")     # a scheme it refuses
    with pytest.raises(Exception) as caught:
        asyncio.run(open_websocket("ws://slack.test/link"))
    raw = f"{type(caught.value).__name__}: {caught.value}"
    assert "S3cretPW" in raw                 # the library really does show it
    assert "S3cretPW" not in redact(raw) and "127.0.0.1:9" in redact(raw)


def test_every_log_record_and_traceback_is_redacted(tmp_path):
    from rtmbotd.logsetup import Logging
    logfile = tmp_path / "bot.log"
    logs, root = Logging(), logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure(debug=False, logfile=str(logfile))
        try:
            raise RuntimeError("via http://user:PW1@proxy:3128 with xoxp-PW2")
        except RuntimeError:
            logging.getLogger("plugin").exception("failed with %s", {"Authorization": "Bearer PW3"})
        logs.handler.flush()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logs.handler.close()
    text = logfile.read_text()
    assert "Traceback" in text and "RuntimeError" in text
    for secret in ("PW1", "PW2", "PW3"):
        assert secret not in text, text


def test_every_status_is_redacted(tmp_path, monkeypatch):
    from rtmbotd.notify import Notifier
    from rtmbotd.testing.notify_listener import NotifyListener
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
    try:
        notifier = Notifier(env={"NOTIFY_SOCKET": listener.path})
        notifier.ready("reload failed: SLACK_TOKEN xoxb-PW1")
        notifier.status("retrying: InvalidProxy: http://user:PW2@proxy:3128 isn't a valid proxy")
        notifier.stopping("stopping, Authorization: Bearer PW3")
        listener.wait_for("STOPPING", "1")
    finally:
        listener.close()
    statuses = [fields["STATUS"] for _, fields in listener.messages]
    assert len(statuses) == 3
    assert not any(secret in s for s in statuses for secret in ("PW1", "PW2", "PW3")), statuses
    assert "http://user:[redacted]@proxy:3128" in statuses[1]


@pytest.mark.parametrize("where", ["main", "thread"])
def test_uncaught_exceptions_on_stderr_are_redacted(where):
    """What no except block catches still reaches stderr through the redaction."""
    import subprocess
    import sys
    code = ("from rtmbotd.logsetup import early_logging\n"
            "import threading\n"
            "early_logging()\n"
            "def boom():\n"
            "    raise RuntimeError('via http://user:PW1@proxy:3128 with xoxb-PW2')\n"
            + ("boom()\n" if where == "main" else
               "t = threading.Thread(target=boom, name='worker'); t.start(); t.join()\n"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "RuntimeError: via http://user:[redacted]@proxy:3128 with xoxb-[redacted]" in done.stderr, done.stderr
    assert "Traceback" in done.stderr and "PW1" not in done.stderr and "PW2" not in done.stderr
    assert (done.returncode == 1) == (where == "main")


def test_warnings_pass_the_redaction():
    """A plugin's (or a library's) warnings.warn went to stderr on its own, secrets and all."""
    import subprocess
    import sys
    code = ("from rtmbotd.logsetup import early_logging\n"
            "import warnings\n"
            "early_logging()\n"
            "warnings.warn('proxy http://user:PW1@proxy:3128 token xoxb-PW2')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "UserWarning: proxy http://user:[redacted]@proxy:3128 token xoxb-[redacted]" in done.stderr, done.stderr
    assert "PW1" not in done.stderr and "PW2" not in done.stderr


def test_a_log_call_that_cannot_be_formatted_shows_no_argument():
    """log.info("%d", token) (a plugin's slip): logging's handleError printed the arguments
    to stderr itself, past the redaction."""
    import subprocess
    import sys
    code = ("from rtmbotd.logsetup import early_logging\n"
            "import logging\n"
            "early_logging()\n"
            "logging.getLogger('plugin').error('sent %d with %s', 'xoxb-PW2', 'http://user:PW1@proxy:3128')\n"
            "logging.getLogger('plugin').error('still logging %s', 'fine')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "could not be formatted (TypeError" in done.stderr and "'sent %d with %s'" in done.stderr, done.stderr
    assert "still logging fine" in done.stderr
    assert "PW1" not in done.stderr and "PW2" not in done.stderr, done.stderr


@pytest.mark.parametrize("url, shown", [
    ("https://hooks.slack.com/services/T0123ABCD/B0123ABCD/AbCdEfGhIjKlMnOpQrStUvWx",
     "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/[redacted]"),
    ("https://hooks.slack.com/commands/T0123ABCD/1234567890/AbCdEfGhIjKlMnOpQrStUvWx",
     "https://hooks.slack.com/commands/T0123ABCD/1234567890/[redacted]"),
    ("https://hooks.slack.com/actions/T0123ABCD/1234567890/AbCdEfGhIjKlMnOpQrStUvWx",
     "https://hooks.slack.com/actions/T0123ABCD/1234567890/[redacted]"),
    ("https://hooks.slack.com/workflows/T0123ABCD/A0123ABCD/1234567890/AbCdEfGhIjKlMnOpQrStUvWx",
     "https://hooks.slack.com/workflows/T0123ABCD/A0123ABCD/1234567890/[redacted]"),
])
def test_webhook_and_response_urls(url, shown):
    """A webhook or a payload's response_url posts for whoever holds it, like a token:
    it reached the log in a plugin's exception text."""
    assert redact(f"HTTPError posting to {url}: 500") == f"HTTPError posting to {shown}: 500"
    assert redact(redact(url)) == shown
