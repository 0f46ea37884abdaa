"""`rtmbotd store ...` against SQLite and PostgreSQL, alone and beside a running writer."""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rtmbotd.config import Config
from rtmbotd.store import Store
from rtmbotd.store.cli import add_store_parser, parse_value, run_store_command
from tests.test_store import (CHILD_ENV, ROOT, pg_schema_url, postgres_url, sqlite_file,  # noqa: F401 - fixtures
                              integrity, store_url)


def run(args: list[str], url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture, stdin: str = "") -> tuple[int, str, str]:
    """`rtmbotd store ARGS` in-process; returns (exit status, stdout, stderr)."""
    parser = argparse.ArgumentParser(prog="rtmbotd")
    add_store_parser(parser.add_subparsers(dest="command"))
    parsed = parser.parse_args(["store", *args])
    config = Config(path=tmp_path / "rtmbot.conf", base_path=tmp_path, store_url=url)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    status = run_store_command(parsed, config)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def cli(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):  # noqa: ANN201
    Store.open(store_url).close()                   # the daemon has created the store
    return lambda *args, stdin="": run(list(args), store_url, tmp_path, monkeypatch, capsys, stdin)


def test_set_get_del_and_exit_codes(cli, store_url: str) -> None:  # noqa: ANN001
    assert cli("set", "counter", "conf", '{"limit": 3, "names": ["é"]}')[0] == 0
    status, out, err = cli("get", "counter", "conf")
    assert (status, json.loads(out), err) == (0, {"limit": 3, "names": ["é"]}, "")
    for word, stored in (("hello", "hello"), ("42", 42), ('"42"', "42"), ("true", True), ("null", None),
                         ("NaN", "NaN"), ("two words", "two words"), ("", "")):
        assert cli("set", "counter", "v", word)[0] == 0
        assert json.loads(cli("get", "counter", "v")[1]) == stored
    status, out, err = cli("get", "counter", "missing")
    assert (status, out) == (1, "") and "no key 'missing'" in err
    assert cli("get", "other", "conf")[0] == 1                   # namespaced by plugin
    assert cli("del", "counter", "conf")[0] == 0
    status, _, err = cli("del", "counter", "conf")
    assert status == 1 and "no key" in err
    assert cli("get", "counter", "conf")[0] == 1
    with Store.open(store_url) as store:
        assert store.dump() == {"counter": {"v": ""}}


def test_read_commands_never_create_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    url = f"sqlite:///{tmp_path}/typo.sqlite"
    for args in (["get", "p", "k"], ["dump"], ["del", "p", "k"], ["set", "p", "k", "1"]):
        status, _, err = run(args, url, tmp_path, monkeypatch, capsys)
        assert status == 74 and "no store" in err
    assert not (tmp_path / "typo.sqlite").exists()
    assert run(["set", "--create", "p", "k", "1"], url, tmp_path, monkeypatch, capsys)[0] == 0
    assert run(["get", "p", "k"], url, tmp_path, monkeypatch, capsys)[1] == "1\n"


def test_dump_and_load_round_trip(cli, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
                                  capsys: pytest.CaptureFixture) -> None:
    data = {"alpha": {"n": 1, "nested": {"list": [1, "two", None]}, "ünï": "cödé"},
            "beta": {"x": True}, "gamma": {}}
    with Store.open(store_url) as store:
        store.load(data)
    status, out, _ = cli("dump")
    assert status == 0 and json.loads(out) == {k: v for k, v in data.items() if v}   # empty plugins have no keys
    assert json.loads(cli("dump", "--plugin", "beta")[1]) == {"beta": {"x": True}}
    assert json.loads(cli("dump", "--plugin", "nobody")[1]) == {}

    copy_url = f"sqlite:///{tmp_path}/copy.sqlite"                  # restore into a new store
    dump_file = tmp_path / "dump.json"
    dump_file.write_text(out, encoding="utf-8")
    status, _, err = run(["load", str(dump_file)], copy_url, tmp_path, monkeypatch, capsys)
    assert status == 0 and "merged 4 keys of 2 plugins" in err
    assert json.loads(run(["dump"], copy_url, tmp_path, monkeypatch, capsys)[1]) == json.loads(out)

    patch = json.dumps({"alpha": {"n": 2, "new": "yes"}})
    assert cli("load", stdin=patch)[0] == 0                          # merge: other keys stay
    merged = json.loads(cli("dump")[1])
    assert merged["alpha"] == {**data["alpha"], "n": 2, "new": "yes"} and merged["beta"] == {"x": True}
    assert cli("load", "--replace", stdin=patch)[0] == 0             # replace: only the named plugins
    assert json.loads(cli("dump")[1]) == {"alpha": {"n": 2, "new": "yes"}, "beta": {"x": True}}


def test_bad_load_input_changes_nothing(cli, tmp_path: Path) -> None:  # noqa: ANN001
    cli("set", "p", "keep", "1")
    for stdin, status, message in (("{not json", 65, "not JSON"), ("[1, 2]", 65, "top level"),
                                   ('{"p": [1]}', 65, "must be an object"),
                                   ('{"p": {"a": 1}, "q": 3}', 65, "'q'")):
        got, _, err = cli("load", "--replace", stdin=stdin)
        assert got == status and message in err, err
    got, _, err = cli("load", str(tmp_path / "absent.json"))
    assert got == 66 and "no such file" in err
    assert json.loads(cli("dump")[1]) == {"p": {"keep": 1}}


def test_load_refuses_a_bad_item_alone_and_loads_the_rest(cli, store_url: str) -> None:  # noqa: ANN001
    cli("set", "p", "keep", "1")
    cli("set", "p", "old", '"kept"')
    dump = ('{"p": {"a": 1, "half": "smile \\ud83d", "old": NaN, "b": [2]}, '
            '"q": {"nul\\u0000key": 1, "c": 3}, "r": {"d": {"deep": ["\\udc80"]}}}')
    status, out, err = cli("load", "--replace", stdin=dump)
    assert status == 65 and out == "" and "Traceback" not in err, err
    refused = [line for line in err.splitlines() if line.startswith("rtmbotd store: standard input: refused ")]
    assert len(refused) == 4, err
    for name in ("'half'", "'old'", "'nul\\x00key'", "'d'"):
        assert sum(name in line for line in refused) == 1, (name, err)
    assert "surrogate" in err and "NUL" in err and "JSON" in err
    assert "replaced 3 keys of 3 plugins" in err and "4 refused" in err
    # The good items are in; a refused value left the stored one as it was, even under --replace.
    assert json.loads(cli("dump")[1]) == {"p": {"a": 1, "b": [2], "old": "kept"}, "q": {"c": 3}}


def test_set_refuses_an_unstorable_key_without_a_traceback(cli) -> None:  # noqa: ANN001
    status, _, err = cli("set", "p", "k\udcff", "1")            # a non-UTF-8 byte in argv
    assert status == 65 and "Traceback" not in err and "surrogate" in err and "'k\\udcff'" in err, err
    status, _, err = cli("set", "p", "k", "\udcff")
    assert status == 65 and "store['k']" in err and "surrogate" in err, err
    assert json.loads(cli("dump")[1]) == {}


def test_parse_value() -> None:
    assert parse_value("[1, 2]") == [1, 2] and parse_value("{") == "{" and parse_value("Infinity") == "Infinity"


DAEMON = r"""
import sys
from rtmbotd.store import Store
store = Store.open(sys.argv[1])
ps = store.plugin("daemon")
print("ready", flush=True)
while "stop" not in ps:
    beats = ps.incr("beats")
    with ps.transaction() as t:
        t["last"] = {"beat": beats, "seen": t.get("last", {}).get("seen", 0) + 1}
print(ps["beats"], flush=True)
"""


def test_safe_while_the_daemon_writes(cli, store_url: str) -> None:  # noqa: ANN001
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON, store_url], env=CHILD_ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout.readline().strip() == "ready", daemon.stderr.read()
        for i in range(15):
            assert cli("set", "admin", f"k{i}", str(i))[0] == 0
            assert cli("load", stdin=json.dumps({"admin": {f"l{i}": i}, "daemon": {f"note{i}": i}}))[0] == 0
            assert json.loads(cli("get", "admin", f"k{i}")[1]) == i
            assert cli("del", "admin", f"l{i}")[0] == 0
            dumped = json.loads(cli("dump", "--plugin", "daemon")[1])["daemon"]
            assert dumped["last"]["beat"] == dumped["last"]["seen"]       # a consistent snapshot
        assert cli("set", "daemon", "stop", "true")[0] == 0
        out, err = daemon.communicate(timeout=60)
    finally:
        daemon.kill()
    assert daemon.returncode == 0 and "locked" not in err, err
    with Store.open(store_url) as store:
        final = store.plugin("daemon")
        assert int(out) == final["beats"] == final["last"]["beat"] > 0
        assert all(final[f"note{i}"] == i for i in range(15))
        assert store.dump("admin") == {"admin": {f"k{i}": i for i in range(15)}}
    if store_url.startswith("sqlite"):
        assert integrity(sqlite_file(store_url)) == "ok"


def test_python_m_rtmbotd_store(tmp_path: Path) -> None:
    """The wired command line, as a sysadmin runs it."""
    url = f"sqlite:///{tmp_path}/rtmbot.sqlite"
    conf = tmp_path / "rtmbot.conf"
    conf.write_text(f"STORE_URL: {url}\n", encoding="utf-8")

    def rtmbotd(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rtmbotd", "-c", str(conf), "store", *args], input=stdin,
                              capture_output=True, text=True, env=CHILD_ENV, cwd=ROOT, timeout=60)
    assert rtmbotd("load", stdin='{"p": {"a": 1}}').returncode == 0
    assert rtmbotd("set", "p", "b", "word").returncode == 0
    assert json.loads(rtmbotd("dump").stdout) == {"p": {"a": 1, "b": "word"}}
    got = rtmbotd("get", "p", "b")
    assert (got.returncode, got.stdout) == (0, '"word"\n')
    assert rtmbotd("get", "p", "zzz").returncode == 1
    assert rtmbotd("del", "p", "a").returncode == 0
    assert rtmbotd("del", "p", "a").returncode == 1


def test_a_default_store_not_created_yet_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    # STORE_URL unset: the daemon creates rtmbot.sqlite on first use, so a fresh service has none
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    status, _, err = run(["dump"], None, tmp_path, monkeypatch, capsys)
    assert status == 74 and "nothing is stored yet" in err and "--create" in err
    assert not (tmp_path / "rtmbot.sqlite").exists()
    assert run(["set", "--create", "p", "k", "1"], None, tmp_path, monkeypatch, capsys)[0] == 0
    assert run(["dump"], None, tmp_path, monkeypatch, capsys)[1].strip().startswith("{")


@pytest.mark.parametrize("url", ["postgresql://127.0.0.1:1/db?user=u&password=Pa55word",
                                 "postgresql://u:Pa55word@127.0.0.1:1/db?sslpassword=Pa55word",
                                 "postgresql://u:Pa55word@127.0.0.1:1:2/db"])
def test_an_unusable_store_url_is_one_line_without_its_password(tmp_path: Path, url: str) -> None:
    """A password as a query parameter was printed whole (store commands, --check-config,
    the log); a port that is not a number gave a traceback."""
    conf = tmp_path / "rtmbot.conf"
    conf.write_text(f"SLACK_TOKEN: xoxb-1\nSTORE_URL: '{url}'\n")
    for args in (["store", "dump"], ["--check-config"]):
        done = subprocess.run([sys.executable, "-m", "rtmbotd", "-c", str(conf), *args], capture_output=True,
                              text=True, timeout=120, env=CHILD_ENV, cwd=ROOT)
        assert "Traceback" not in done.stderr, done.stderr
        assert "Pa55word" not in done.stderr + done.stdout, done.stderr
        assert "STORE_URL" in done.stderr or "127.0.0.1" in done.stderr, done.stderr
