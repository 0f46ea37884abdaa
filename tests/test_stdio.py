"""The daemon's stdout/stderr wrapper: whole lines through `redact`, the rest delegated."""
import io
import sys

from rtmbotd import stdio
from rtmbotd.stdio import MAX_PENDING, RedactingStream


def test_a_token_split_across_two_writes_is_redacted_whole():
    out = io.StringIO()
    stream = RedactingStream(out)
    stream.write("token xoxb-1234-")
    assert out.getvalue() == ""                     # an unended line waits
    stream.write("5678-secret here\nnext ")
    assert out.getvalue() == "token xoxb-[redacted] here\n"
    assert "5678" not in out.getvalue()


def test_flush_writes_an_unended_line_redacted():
    out = io.StringIO()
    stream = RedactingStream(out)
    assert stream.write("prompt http://u:hunter2@proxy:3128> ") == len("prompt http://u:hunter2@proxy:3128> ")
    stream.flush()
    assert out.getvalue() == "prompt http://u:[redacted]@proxy:3128> "
    stream.flush()
    assert out.getvalue() == "prompt http://u:[redacted]@proxy:3128> "


def test_print_goes_through_it():
    out = io.StringIO()
    print("a", "xapp-1-A0-secret", file=RedactingStream(out))
    assert out.getvalue() == "a xapp-[redacted]\n"


def test_a_huge_unended_line_goes_out_up_to_its_last_blank():
    out = io.StringIO()
    stream = RedactingStream(out)
    stream.write("x" * MAX_PENDING + " xoxb-99-")
    assert out.getvalue() == "x" * MAX_PENDING + " "      # the token's start is kept back
    stream.write("secret\n")
    assert out.getvalue().endswith(" xoxb-[redacted]\n")


def test_the_rest_is_the_wrapped_streams(tmp_path):
    with open(tmp_path / "out.txt", "w", encoding="utf-8") as real:
        stream = RedactingStream(real)
        assert stream.fileno() == real.fileno()
        assert stream.encoding == "utf-8"
        assert stream.buffer is real.buffer
        assert stream.isatty() is False
        assert stream.closed is False
        stream.writelines(["one xoxp-1-secret\n", "two\n"])
    assert (tmp_path / "out.txt").read_text() == "one xoxp-[redacted]\ntwo\n"


def test_redact_stdio_wraps_both_once(monkeypatch):
    registered = []
    monkeypatch.setattr(stdio.atexit, "register", lambda fn, *args: registered.append((fn, args)))
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    stdio.redact_stdio()
    stdio.redact_stdio()
    assert isinstance(sys.stdout, RedactingStream) and sys.stdout.stream is out
    assert isinstance(sys.stderr, RedactingStream) and sys.stderr.stream is err
    sys.stderr.write("left unended xoxb-7-secret")
    for fn, args in registered:                # what runs at exit
        fn(*args)
    assert len(registered) == 2
    assert err.getvalue() == "left unended xoxb-[redacted]"
