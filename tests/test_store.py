"""The plugin store, run against a real SQLite file and a real PostgreSQL server.

PostgreSQL comes from $STORE_TEST_POSTGRES_URL, else from scripts/postgres-test-server.
When it cannot be had the PostgreSQL tests fail, unless RTMBOTD_ALLOW_NO_POSTGRES=1.
Every PostgreSQL test runs in a schema of its own, dropped afterwards.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from rtmbotd.store import engine as store_engine
from rtmbotd.errors import StoreError
from rtmbotd.store import (ABSENT, PluginStore, Store, StoreCorruptError, StoreFullError, StoreReadOnlyError,
                           StoreUnavailableError, StoreUnreachableError, StoreVersionError)
from rtmbotd.store.errors import StoreBusyError, translate
from rtmbotd.store.plugin import table_prefix_for
from rtmbotd.store.schema import MIGRATIONS, Migration, newest
from rtmbotd.store.url import resolve_url
from rtmbotd.testing.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
PG_SCRIPT = ROOT / "scripts" / "postgres-test-server"
CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
THREADS = 8


# -- backends -----------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL URL for tests: the environment's, else the private test server's."""
    url = os.environ.get("STORE_TEST_POSTGRES_URL")
    if url:
        return url
    try:
        done = subprocess.run([str(PG_SCRIPT)], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = str(exc)
    else:
        last = (done.stdout.strip().splitlines() or [""])[-1]
        if done.returncode == 0 and last.startswith("STORE_TEST_POSTGRES_URL="):
            return last.partition("=")[2]
        problem = f"{PG_SCRIPT.name} exited {done.returncode}: {done.stderr[-2000:]}"
    if os.environ.get("RTMBOTD_ALLOW_NO_POSTGRES") == "1":
        pytest.skip(f"PostgreSQL unavailable and RTMBOTD_ALLOW_NO_POSTGRES=1: {problem}")
    pytest.fail(f"cannot start PostgreSQL for the store tests: {problem}\n"
                "(set STORE_TEST_POSTGRES_URL, or RTMBOTD_ALLOW_NO_POSTGRES=1 to skip them)", pytrace=False)


def with_server_options(url: str, options: str) -> str:
    """`url` with libpq server options (e.g. -csearch_path=x) added."""
    parsed = make_url(url)
    merged = f"{parsed.query.get('options', '')} {options}".strip()
    return parsed.update_query_dict({"options": merged}).render_as_string(hide_password=False)


def admin_engine(postgres_url: str):  # noqa: ANN201
    return create_engine(resolve_url(postgres_url), isolation_level="AUTOCOMMIT")


@pytest.fixture
def pg_schema_url(postgres_url: str) -> Iterator[str]:
    """The test database with search_path set to a fresh schema of this test's own."""
    schema = "t_" + uuid.uuid4().hex[:16]
    admin = admin_engine(postgres_url)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield with_server_options(postgres_url, f"-csearch_path={schema}")
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/rtmbot.sqlite"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store.open(store_url, lock_timeout=30)
    yield opened
    opened.close()


@pytest.fixture
def ps(store: Store) -> PluginStore:
    return store.plugin("p-" + uuid.uuid4().hex[:8])


def sqlite_file(url: str) -> Path:
    return Path(make_url(url).database)


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def run_threads(target: Callable[[int], None], count: int = THREADS) -> None:
    """Run target(i) on `count` threads started together; re-raise the first failure."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a worker thread hung"
    if errors:
        raise errors[0]


# -- the mapping ----------------------------------------------------------------------

def test_behaves_like_a_dict(ps: PluginStore) -> None:
    value = {"a": [1, 2.5, None, True], "é": "ünïcode ✓", "nested": {"x": {}}}
    ps["k"] = value
    assert ps["k"] == value
    assert "k" in ps and "nope" not in ps and 42 not in ps
    assert ps.get("nope") is None and ps.get("nope", 7) == 7
    with pytest.raises(KeyError):
        ps["nope"]
    ps["n"] = None                                   # a stored null is present
    assert "n" in ps and ps["n"] is None
    assert len(ps) == 2 and list(ps) == ["k", "n"]
    assert dict(ps) == {"k": value, "n": None} and ps == {"k": value, "n": None}
    fetched = ps["k"]
    fetched["a"].append("changed")                   # values are copies, not views
    assert ps["k"] == value
    ps["k"] = 3
    assert ps["k"] == 3
    del ps["k"]
    assert "k" not in ps
    with pytest.raises(KeyError):
        del ps["k"]
    ps.update({"a": 1, "b": 2}, c=3)
    assert ps.pop("a") == 1 and ps.pop("a", "gone") == "gone" and ps.pop("a", ABSENT) is ABSENT
    assert ps.popitem() == ("b", 2)
    assert ps.clear() == 2 and len(ps) == 0
    with pytest.raises(TypeError, match="keys must be str"):
        ps[1] = "x"


def test_values_come_back_as_json(ps: PluginStore) -> None:
    ps["t"] = (1, 2)
    ps["d"] = {1: "one"}
    ps["f"] = 1.0
    assert ps["t"] == [1, 2] and ps["d"] == {"1": "one"} and type(ps["f"]) is float


def test_plugins_are_namespaced(store: Store) -> None:
    a, b, ab = store.plugin("a"), store.plugin("b"), store.plugin("ab")
    assert store.plugin("a") is a
    a["k"], ab["k2"] = 1, 2
    assert "k" not in b and b.get("k") is None and len(b) == 0 and list(b) == []
    assert a.keys() == ["k"] and ab.keys() == ["k2"]
    b["k"] = "b's"
    assert a["k"] == 1 and b["k"] == "b's"
    del b["k"]
    assert a["k"] == 1
    assert b.clear() == 0 and a["k"] == 1
    assert store.plugin_names() == ["a", "ab"]


def test_keys_and_items_by_prefix(ps: PluginStore) -> None:
    keys = ["user:1", "user:10", "user:2", "users", "u", "ser:1", "%x", "_y", "user:é", "User:3", ""]
    for i, k in enumerate(keys):
        ps[k] = i
    assert ps.keys("user:") == ["user:1", "user:10", "user:2", "user:é"]
    assert ps.items("user:1") == [("user:1", 0), ("user:10", 1)]
    assert ps.keys("%") == ["%x"] and ps.keys("_") == ["_y"]     # no LIKE wildcards
    assert ps.keys("zzz") == [] and ps.values("users") == [3]
    assert ps.keys() == sorted(keys) and len(ps.items()) == len(keys)
    assert ps.clear("user:") == 4 and ps.keys("user") == ["users"]


# -- atomic helpers under contention -----------------------------------------------

def test_incr_from_8_threads_loses_nothing(ps: PluginStore) -> None:
    per_thread = 150
    seen: list[list[int]] = [[] for _ in range(THREADS)]
    run_threads(lambda i: seen[i].extend(ps.incr("hits") for _ in range(per_thread)))
    total = THREADS * per_thread
    assert ps["hits"] == total
    assert sorted(v for s in seen for v in s) == list(range(1, total + 1))   # each value handed out once
    assert ps.incr("hits", -total) == 0 and ps.incr("other", by=5) == 5


def test_incr_refuses_non_integers(ps: PluginStore) -> None:
    ps["s"], ps["b"] = "text", True
    for key in ("s", "b"):
        with pytest.raises(TypeError, match="not an int"):
            ps.incr(key)
    with pytest.raises(TypeError, match="by must be an int"):
        ps.incr("n", 1.5)
    assert ps["s"] == "text" and ps["b"] is True and "n" not in ps


def test_setdefault_from_8_threads_agrees_on_one_winner(ps: PluginStore) -> None:
    results = [None] * THREADS
    run_threads(lambda i: results.__setitem__(i, ps.setdefault("winner", {"thread": i})))
    assert all(r == results[0] for r in results)
    assert ps["winner"] == results[0]
    assert ps.setdefault("winner", "late") == results[0]


def test_compare_and_set_from_8_threads_counts_exactly(ps: PluginStore) -> None:
    per_thread = 60

    def bump(_: int) -> None:
        done = 0
        while done < per_thread:
            current = ps.get("n", ABSENT)
            if ps.compare_and_set("n", current, (current or 0) + 1):
                done += 1
    run_threads(bump)
    assert ps["n"] == THREADS * per_thread


def test_compare_and_set_semantics(ps: PluginStore) -> None:
    assert ps.compare_and_set("k", ABSENT, 1) is True
    assert ps.compare_and_set("k", ABSENT, 2) is False          # present now
    assert ps.compare_and_set("k", 1.0, 2) is False             # JSON 1.0 is not 1
    assert ps.compare_and_set("k", True, 2) is False
    assert ps.compare_and_set("k", 1, None) is True and ps["k"] is None
    assert ps.compare_and_set("k", ABSENT, 3) is False          # a stored null is not absent
    assert ps.compare_and_set("k", None, {"b": 1, "a": [1]}) is True
    assert ps.compare_and_set("k", {"a": [1], "b": 1}, ABSENT) is True   # dict order does not matter
    assert "k" not in ps
    assert ps.compare_and_set("k", None, 1) is False            # absent is not null
    assert PluginStore.ABSENT is ABSENT and repr(ABSENT) == "ABSENT"


# -- transactions --------------------------------------------------------------------

def test_transaction_commits_everything(ps: PluginStore) -> None:
    with ps.transaction() as t:
        assert t is ps
        t["a"] = 1
        t.incr("b")
        assert t["a"] == 1 and t.keys() == ["a", "b"]     # sees its own writes
    assert dict(ps) == {"a": 1, "b": 1}


def test_exception_in_transaction_rolls_everything_back(ps: PluginStore) -> None:
    ps.update(keep=1, gone="still here")
    with pytest.raises(RuntimeError):
        with ps.transaction() as t:
            t["new"] = 1
            t.incr("keep", 10)
            del t["gone"]
            t.compare_and_set("cas", ABSENT, 1)
            raise RuntimeError("plugin bug")
    assert dict(ps) == {"keep": 1, "gone": "still here"}
    with pytest.raises(TypeError):                        # a bad value mid-way also undoes the rest
        with ps.transaction() as t:
            t["x"] = 1
            t["y"] = object()
    assert "x" not in ps


def test_nested_transaction_is_a_savepoint(ps: PluginStore) -> None:
    with ps.transaction() as t:
        t["outer"] = 1
        with pytest.raises(ValueError):
            with t.transaction():
                t["inner"] = 1
                raise ValueError
        assert "inner" not in t
        with t.transaction():
            t["inner2"] = 2
    assert dict(ps) == {"outer": 1, "inner2": 2}


def test_transaction_is_isolated_from_other_threads(ps: PluginStore) -> None:
    ps["x"] = "old"
    written, checked = threading.Event(), threading.Event()
    seen = {}
    writer_saw_check: list[bool] = []       # asserted here: an assert in the thread would not fail

    def writer() -> None:
        with ps.transaction() as t:
            t["x"] = "new"
            t["y"] = 1
            written.set()
            writer_saw_check.append(checked.wait(30))
    thread = threading.Thread(target=writer)
    thread.start()
    assert written.wait(30)
    seen["x"], seen["y"] = ps.get("x"), ps.get("y")       # reads do not wait for the writer
    checked.set()
    thread.join(30)
    assert not thread.is_alive() and writer_saw_check == [True]
    assert seen == {"x": "old", "y": None}
    assert ps["x"] == "new" and ps["y"] == 1


def test_read_modify_write_transactions_from_8_threads(ps: PluginStore) -> None:
    """Transfers between two keys keep their sum; concurrent incr()s are not lost."""
    ps.update(a=1000, b=0)
    rounds = 40
    sums: list[int] = []

    def work(i: int) -> None:
        for _ in range(rounds):
            if i % 4 == 3:
                ps.incr("plain")
                snapshot = dict(ps.items())
                sums.append(snapshot["a"] + snapshot["b"])
                continue
            with ps.transaction() as t:
                t["a"] = t["a"] - 1
                t["b"] = t["b"] + 1
                t["plain"] = t.get("plain", 0) + 1
    run_threads(work)
    transfers = (THREADS - THREADS // 4) * rounds
    assert ps["a"] == 1000 - transfers and ps["b"] == transfers
    assert ps["plain"] == THREADS * rounds
    assert sums and set(sums) == {1000}


def test_own_tables_join_the_transaction(store: Store, ps: PluginStore) -> None:
    assert ps.table_prefix == table_prefix_for(ps.name) and ps.table_prefix.startswith("p_")
    table = ps.table_prefix + "notes"
    with ps.engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, body TEXT)"))
    with pytest.raises(RuntimeError):
        with ps.transaction():
            ps.connection.execute(text(f"INSERT INTO {table} VALUES (1, 'x')"))
            ps["count"] = 1
            raise RuntimeError
    with ps.transaction():
        ps.connection.execute(text(f"INSERT INTO {table} VALUES (2, 'y')"))
        ps["count"] = 1
    with ps.engine.connect() as conn:
        assert conn.execute(text(f"SELECT id FROM {table}")).scalars().all() == [2]
    assert ps["count"] == 1
    with pytest.raises(StoreError, match="only available inside"):
        ps.connection


def test_table_prefix_is_a_safe_identifier() -> None:
    assert table_prefix_for("counter") == "p_counter_"
    odd = table_prefix_for("plugins.repeat.RepeatPlugin")
    assert odd.startswith("p_plugins_repeat_repeatplugin_") and odd.replace("_", "").isalnum()
    assert table_prefix_for("a-b") != table_prefix_for("a_b")
    assert len(table_prefix_for("x" * 200)) < 60


# -- bad input ---------------------------------------------------------------------------

def test_non_json_value_is_a_type_error_and_writes_nothing(ps: PluginStore) -> None:
    ps["keep"] = 1
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: ps.__setitem__("s", {1, 2}), "set"),
        (lambda: ps.__setitem__("n", float("nan")), "float"),
        (lambda: ps.__setitem__("deep", {"when": object()}), "dict"),
        (lambda: ps.setdefault("sd", b"bytes"), "bytes"),
        (lambda: ps.compare_and_set("keep", 1, object()), "object"),
        (lambda: ps.update(ok=1, bad=set()), "set"),
    ]
    for call, type_name in cases:
        with pytest.raises(TypeError) as info:
            call()
        assert "JSON" in str(info.value) and type_name in str(info.value)
    with pytest.raises(TypeError, match=r"store\['s'\]"):
        ps["s"] = {1}
    assert dict(ps) == {"keep": 1}


def test_text_no_database_can_hold_is_a_type_error_naming_the_key(ps: PluginStore) -> None:
    """A lone surrogate (half an emoji) anywhere, or a NUL in a key, is refused alone on
    both backends, before anything reaches the driver (PostgreSQL used to call a NUL in
    a key "cannot reach the database", SQLite raised UnicodeEncodeError)."""
    ps["keep"] = 1
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: ps.__setitem__("k", "\ud800"), r"store\['k'\].*surrogate"),
        (lambda: ps.__setitem__("deep", {"blocks": [{"text": "smile \ud83d"}]}), r"store\['deep'\].*surrogate"),
        (lambda: ps.setdefault("sd", ["\udcff"]), r"store\['sd'\].*surrogate"),
        (lambda: ps.compare_and_set("keep", 1, "\udfff"), r"store\['keep'\].*surrogate"),
        (lambda: ps.update(ok=1, bad="\ud800"), r"store\['bad'\].*surrogate"),
        (lambda: ps.__setitem__("a\0b", 1), r"NUL.*'a\\x00b'"),
        (lambda: ps.__setitem__("\ud800", 1), r"'\\ud800'.*surrogate"),
        (lambda: ps.incr("n\0"), "NUL"),
        (lambda: ps["a\0b"], "NUL"),
        (lambda: ps.keys(prefix="a\0"), "prefix.*NUL"),
        (lambda: ps.clear(prefix="\ud800"), "prefix.*surrogate"),
    ]
    for call, pattern in cases:
        with pytest.raises(TypeError, match=pattern):
            call()
    assert "a\0b" not in ps and "\ud800" not in ps
    assert dict(ps) == {"keep": 1}
    ps["fine"] = "\u0000 and \U0001f600 are text"       # a NUL inside a value is JSON-escaped
    assert ps["fine"] == "\u0000 and \U0001f600 are text"


def test_load_refuses_a_bad_item_alone(store: Store) -> None:
    ps = store.plugin("p")
    ps.update(keep=1, old="kept")
    data = {"p": {"a": 1, "half": "\ud83d", "old": float("nan")}, "q": {"x\0": 1, "b": 2}, "r": [1],
            "\ud800": {"c": 3}}
    with pytest.raises(TypeError):                       # without a list for them: all or nothing
        store.load(data)
    assert store.dump() == {"p": {"keep": 1, "old": "kept"}}
    refused: list[str] = []
    assert store.load(data, replace=True, refused=refused) == 2
    assert len(refused) == 5
    for name in ("plugin 'p' key 'half'", "plugin 'p' key 'old'", "'x\\x00'", "'r'", "'\\ud800'"):
        assert sum(name in why for why in refused) == 1, (name, refused)
    assert store.dump() == {"p": {"a": 1, "old": "kept"}, "q": {"b": 2}}


# -- the durable outbox ------------------------------------------------------------------

def test_outbox_keeps_order_and_is_replaced_atomically(store_url: str) -> None:
    records = [{"channel": f"C{i % 3}", "text": f"message {i}", "plugin": "p", "extra": {"i": i}}
               for i in range(60)]
    with Store.open(store_url) as store:
        assert store.load_outbox() == []
        store.save_outbox(records)
        with pytest.raises(TypeError):
            store.save_outbox(records[:2] + [{"text": {1, 2}}])
        with pytest.raises(TypeError, match="must be a dict"):
            store.save_outbox(["not a dict"])
        assert store.load_outbox() == records               # failed saves changed nothing
    with Store.open(store_url) as store:
        assert store.load_outbox() == records               # survives reopening
        store.save_outbox(records[5:7])
        assert store.load_outbox() == records[5:7]
        with Store.open(store_url, outbox_owner="other-host") as other:
            assert other.load_outbox() == []                # each daemon its own outbox
            other.save_outbox(records[:1])
        store.clear_outbox()
        assert store.load_outbox() == []
    with Store.open(store_url, outbox_owner="other-host") as other:
        assert other.load_outbox() == records[:1]


def test_outbox_rows_are_added_replaced_and_deleted_one_by_one(store_url: str) -> None:
    with Store.open(store_url) as store:
        store.write_outbox([(10, "C1", '{"channel":"C1","text":"a"}'), (20, "C2", '{"channel":"C2","text":"b"}'),
                            (30, "C1", '{"channel":"C1","text":"c"}')])
        store.write_outbox([(20, "C2", '{"channel":"C2","text":"b, rest"}')], [10, 99])
        with Store.open(store_url, outbox_owner="other-host") as other:
            other.write_outbox([(5, "C9", '{"channel":"C9","text":"theirs"}')])
    with Store.open(store_url) as store:
        assert store.outbox_rows() == [(20, {"channel": "C2", "text": "b, rest"}), (30, {"channel": "C1", "text": "c"})]
        store.write_outbox([], list(range(0, 2000)))           # more than one DELETE ... IN chunk
        assert store.outbox_rows() == []
    with Store.open(store_url, outbox_owner="other-host") as other:
        assert other.outbox_rows() == [(5, {"channel": "C9", "text": "theirs"})]


def test_an_older_versions_saved_outbox_is_moved_into_rows_ahead_of_them(store_url: str) -> None:
    """Version 1 saved the outbox whole at a stop; its table stays (a rolling upgrade) and
    its rows are read once, first, then removed from it."""
    with Store.open(store_url, migrations=MIGRATIONS[:1]) as old:       # the older rtmbotd
        with old.engine.begin() as conn:
            conn.execute(text("INSERT INTO rtmbot_outbox (owner, seq, record) VALUES "
                              "('local', 0, '{\"channel\": \"C1\", \"text\": \"old 0\"}'), "
                              "('local', 1, '{\"channel\": \"C2\", \"text\": \"old 1\"}')"))
    with Store.open(store_url, outbox_owner="local") as store:
        store.write_outbox([(7, "C1", '{"channel":"C1","text":"new"}')])
        assert [r["text"] for _, r in store.outbox_rows()] == ["old 0", "old 1", "new"]
        assert [r["text"] for _, r in store.outbox_rows()] == ["old 0", "old 1", "new"]   # moved once
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM rtmbot_outbox")).scalar() == 0


# -- durability --------------------------------------------------------------------------

WRITER = r"""
import sys
from rtmbotd.store import Store
store = Store.open(sys.argv[1], synchronous=sys.argv[3])
ps = store.plugin(sys.argv[2])
print("ready", flush=True)
i = 0
while True:
    ps[f"k{i:06d}"] = {"i": i, "pad": "x" * (i % 500)}
    print(i, flush=True)
    i += 1
"""


def test_acknowledged_writes_survive_kill_9(store_url: str) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    acked: dict[str, int] = {}
    for round_ in range(20):
        plugin = f"kill{round_}"
        child = subprocess.Popen([sys.executable, "-c", WRITER, store_url, plugin, "FULL"], env=CHILD_ENV,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
            target, count = rng.randrange(0, 120), 0
            while count < target:
                line = child.stdout.readline()
                assert line, child.stderr.read()
                count = int(line) + 1
            time.sleep(rng.uniform(0, 0.004))            # land somewhere inside a write
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
            rest = child.stdout.read().split()           # acknowledged before the kill, not yet read
            child.stdout.close()
            child.stderr.close()
        acked[plugin] = int(rest[-1]) + 1 if rest else count
    with Store.open(store_url) as store:
        for plugin, count in acked.items():
            ps = store.plugin(plugin)
            got = ps.items()
            assert count <= len(got) <= count + 1, f"seed {seed}: {plugin}"   # at most the unacknowledged one extra
            for i in range(count):
                assert ps[f"k{i:06d}"] == {"i": i, "pad": "x" * (i % 500)}, f"seed {seed}"
    if store_url.startswith("sqlite"):
        assert integrity(sqlite_file(store_url)) == "ok"


COUNTER = r"""
import sys
from rtmbotd.store import Store
store = Store.open(sys.argv[1])
ps = store.plugin("shared")
tag, n = sys.argv[2], int(sys.argv[3])
for i in range(n):
    ps.incr("count")
    with ps.transaction() as t:
        t[f"{tag}:{i}"] = t.get("count")
print("done", flush=True)
"""


def test_several_processes_write_one_store(store_url: str) -> None:
    with Store.open(store_url) as store:
        ps = store.plugin("shared")
        children = [subprocess.Popen([sys.executable, "-c", COUNTER, store_url, f"proc{i}", "120"], env=CHILD_ENV,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
        run_threads(lambda i: [ps.incr("count") for _ in range(40)], count=4)
        for child in children:
            out, err = child.communicate(timeout=180)
            assert child.returncode == 0 and out.strip() == "done", err
            assert "locked" not in err and "Traceback" not in err
        assert ps["count"] == 3 * 120 + 4 * 40
        assert len(ps.keys("proc")) == 3 * 120
    if store_url.startswith("sqlite"):
        assert integrity(sqlite_file(store_url)) == "ok"


HOLDER = r"""
import sys
from rtmbotd.store import Store
store = Store.open(sys.argv[1])
ps = store.plugin("held")
with ps.transaction() as t:
    t["by_child"] = 1
    print("holding", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def test_lock_held_by_another_process_longer_than_busy_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """SQLite's busy_timeout runs out; the store retries instead of raising `database is locked`."""
    monkeypatch.setattr(store_engine, "BUSY_TIMEOUT", 0.05)
    url = f"sqlite:///{tmp_path}/rtmbot.sqlite"
    with Store.open(url) as store:
        ps = store.plugin("held")
        child = subprocess.Popen([sys.executable, "-c", HOLDER, url], env=CHILD_ENV, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "holding", child.stderr.read()
            result: list[object] = []
            caplog.set_level(logging.DEBUG, logger="rtmbotd.store.engine")
            writer = threading.Thread(target=lambda: result.append(ps.incr("by_parent")))
            writer.start()
            wait_until(lambda: sum("lock contention" in r.getMessage() for r in caplog.records) >= 3, 30,
                       what="the writer to retry a few times")
            assert result == []
            child.stdin.write("go\n")
            child.stdin.flush()
            writer.join(30)
            assert result == [1]
            assert child.stdout.readline().strip() == "released"
        finally:
            child.kill()
            child.communicate()
        assert dict(ps) == {"by_child": 1, "by_parent": 1}


def test_lock_timeout_gives_a_clear_busy_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_engine, "BUSY_TIMEOUT", 0.05)
    url = f"sqlite:///{tmp_path}/rtmbot.sqlite"
    with Store.open(url, lock_timeout=0.5) as store:
        child = subprocess.Popen([sys.executable, "-c", HOLDER, url], env=CHILD_ENV, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "holding", child.stderr.read()
            with pytest.raises(StoreBusyError, match="locked"):
                store.plugin("held")["x"] = 1
        finally:
            child.kill()
            child.communicate()


# -- schema versions ----------------------------------------------------------------------

def test_upgrade_from_version_0_keeps_existing_tables(store_url: str) -> None:
    """A database from before the store (plugin tables, no rtmbot_meta) is upgraded in place."""
    engine = create_engine(resolve_url(store_url))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE p_legacy_notes (id INTEGER PRIMARY KEY, body TEXT)"))
        conn.execute(text("INSERT INTO p_legacy_notes VALUES (1, 'kept')"))
    engine.dispose()
    with Store.open(store_url) as store:
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT value FROM rtmbot_meta WHERE name = 'schema_version'")).scalar() \
                == str(newest())
            assert conn.execute(text("SELECT body FROM p_legacy_notes")).scalar() == "kept"
        store.plugin("legacy")["k"] = 1


def test_registered_migration_upgrades_in_place_once(store_url: str) -> None:
    with Store.open(store_url) as store:
        store.plugin("p")["k"] = {"v": 1}
    runs = []

    def add_audit_table(conn) -> None:  # noqa: ANN001
        runs.append(1)
        conn.execute(text("CREATE TABLE rtmbot_audit (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO rtmbot_audit VALUES (7)"))
    nxt = newest() + 1
    v2 = MIGRATIONS + (Migration(nxt, "add rtmbot_audit", add_audit_table),)
    with Store.open(store_url, migrations=v2) as store:
        assert store.plugin("p")["k"] == {"v": 1}
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT value FROM rtmbot_meta WHERE name = 'schema_version'")).scalar() \
                == str(nxt)
            assert conn.execute(text("SELECT id FROM rtmbot_audit")).scalar() == 7
    with Store.open(store_url, migrations=v2):
        pass
    assert runs == [1]
    with pytest.raises(StoreVersionError, match=rf"schema version {nxt} .* newer rtmbotd.*up to version {nxt - 1}"):
        Store.open(store_url)


def test_failed_migration_leaves_the_old_version(store_url: str) -> None:
    with Store.open(store_url) as store:
        store.plugin("p")["k"] = 1

    def broken(conn) -> None:  # noqa: ANN001
        conn.execute(text("CREATE TABLE rtmbot_half (id INTEGER)"))
        raise RuntimeError("migration bug")
    with pytest.raises(RuntimeError):
        Store.open(store_url, migrations=MIGRATIONS + (Migration(newest() + 1, "broken", broken),))
    with Store.open(store_url) as store:
        assert store.plugin("p")["k"] == 1
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT value FROM rtmbot_meta WHERE name = 'schema_version'")).scalar() \
                == str(newest())


@pytest.mark.parametrize("compatible_from", ["UPDATE rtmbot_meta SET value = '99' WHERE name = 'compatible_from'",
                                             # as an rtmbotd before rolling upgrades left it:
                                             "DELETE FROM rtmbot_meta WHERE name = 'compatible_from'"])
def test_newer_database_is_refused(store_url: str, compatible_from: str) -> None:
    with Store.open(store_url) as store:
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE rtmbot_meta SET value = '99' WHERE name = 'schema_version'"))
            conn.execute(text(compatible_from))
    with pytest.raises(StoreVersionError, match="schema version 99"):
        Store.open(store_url)


def test_rolling_upgrade_an_additive_migration_leaves_the_database_to_older_code(store_url: str) -> None:
    with Store.open(store_url) as store:
        store.plugin("p")["k"] = 1
    nxt = newest() + 1
    additive = MIGRATIONS + (Migration(nxt, "add rtmbot_extra",
                                       lambda conn: conn.execute(text("CREATE TABLE rtmbot_extra (id INTEGER)")),
                                       compatible=True),)
    Store.open(store_url, migrations=additive).close()
    with Store.open(store_url) as store:          # the older node opens it and works on
        assert store.plugin("p")["k"] == 1
        store.plugin("p")["k"] = 2
    breaking = additive + (Migration(nxt + 1, "rename a column", lambda conn: None),)
    Store.open(store_url, migrations=breaking).close()
    with pytest.raises(StoreVersionError, match=rf"schema version {nxt + 1} .* newer rtmbotd"):
        Store.open(store_url)
    with pytest.raises(StoreVersionError):
        Store.open(store_url, migrations=additive)


# -- read-only, full, corrupt --------------------------------------------------------------

def _refuse_writes_on_new_connections(store: Store) -> Callable[[], None]:
    """Simulate the database turning read-only under a running store; returns an undo."""
    if store.dialect == "sqlite":
        statement, commit = "PRAGMA query_only = ON", False
    else:
        statement, commit = "SET default_transaction_read_only = on", True

    def on_connect(dbapi_conn, record) -> None:  # noqa: ANN001
        dbapi_conn.execute(statement)
        if commit:
            dbapi_conn.commit()
    event.listen(store.engine, "connect", on_connect)
    store.engine.dispose()

    def undo() -> None:
        event.remove(store.engine, "connect", on_connect)
        store.engine.dispose()
    return undo


def test_read_only_database_refuses_writes_and_keeps_data(store: Store, ps: PluginStore,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    ps.update(a=1, n=5)
    store.save_outbox([{"text": "queued"}])
    undo = _refuse_writes_on_new_connections(store)
    try:
        for write in (lambda: ps.__setitem__("b", 2), lambda: ps.incr("n"), lambda: ps.__delitem__("a"),
                      lambda: store.save_outbox([])):
            caplog.clear()
            with pytest.raises(StoreReadOnlyError, match="read-only"):
                write()
            assert any(r.levelno == logging.ERROR and "read-only" in r.getMessage() for r in caplog.records)
        with pytest.raises(StoreReadOnlyError):
            with ps.transaction() as t:
                t["c"] = 3
        assert dict(ps) == {"a": 1, "n": 5}                 # reads still work
    finally:
        undo()
    assert ps.incr("n") == 6 and store.load_outbox() == [{"text": "queued"}]
    if store.dialect == "sqlite":
        assert integrity(Path(store.engine.url.database)) == "ok"


def test_read_only_filesystem_at_open(tmp_path: Path, tmpfs: Callable[[Path, str], str | None]) -> None:
    mnt = tmp_path / "ro"
    why_not = tmpfs(mnt, "size=1m")
    if why_not:
        pytest.skip(f"{why_not} (test_read_only_database_* still covers writes refused at run time)")
    url = f"sqlite:///{mnt}/rtmbot.sqlite"
    with Store.open(url) as store:
        store.plugin("p")["k"] = 1
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    with pytest.raises(StoreReadOnlyError, match=f"{mnt}.*mounted read-only"):
        Store.open(url)
    subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
    with Store.open(url) as store:
        assert store.plugin("p")["k"] == 1


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], str | None]]:
    """mount(path, options) mounts a small tmpfs (needs root) and returns None, or says
    why it could not; whatever it mounted is unmounted afterwards."""
    mounted: list[Path] = []

    def mount(path: Path, options: str) -> str | None:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return "mounting a tmpfs needs root"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            return f"cannot mount a tmpfs: {done.stderr.strip()}"
        mounted.append(path)
        return None
    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)
    for path in mounted:
        if path.name.startswith("rtmbotd-"):
            path.rmdir()


def test_full_disk_refuses_the_write_and_keeps_data(store_url: str, tmpfs: Callable[[Path, str], str | None],
                                                    postgres_url_if_pg: str | None,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A tiny tmpfs holds the SQLite file, or (PostgreSQL) a tablespace the tables live in.
    Without the right to mount, SQLite's max_page_count stands in for the disk's size."""
    mnt = Path(tempfile.mkdtemp(prefix="rtmbotd-full-", dir="/tmp"))   # postgres must reach it
    filler = mnt / "filler"
    page_limit = False
    if postgres_url_if_pg is None:
        page_limit = tmpfs(mnt, "size=512k") is not None
        url = f"sqlite:///{mnt}/rtmbot.sqlite"
        if not page_limit:
            filler.write_bytes(b"\0" * 128 * 1024)      # freed later to show the store recovers
    else:
        why_not = tmpfs(mnt, "size=512k,uid=postgres,gid=postgres,mode=700")
        if why_not:
            os.rmdir(mnt)
            pytest.skip(f"{why_not}: a full tablespace needs a small filesystem")
        space = "ts_" + uuid.uuid4().hex[:12]
        admin = admin_engine(postgres_url_if_pg)
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE TABLESPACE {space} LOCATION '{mnt}'")
        url = with_server_options(store_url, f"-cdefault_tablespace={space}")
    try:
        with Store.open(url) as store:
            undo_limit = _limit_pages(store, extra=60) if page_limit else None
            ps = store.plugin("big")
            written = 0
            with pytest.raises(StoreFullError, match="nothing was written"):
                for written in range(10_000):                   # noqa: B007 - read below
                    ps[f"k{written:05d}"] = os.urandom(2500).hex()
            assert written > 3
            assert any(r.levelno == logging.ERROR and "nothing was written" in r.getMessage()
                       for r in caplog.records)
            with pytest.raises(StoreFullError):
                ps.update({f"more{i}": os.urandom(3000).hex() for i in range(50)})   # 300 kB, not compressible
            acked = [f"k{i:05d}" for i in range(written)]
            assert ps.keys() == acked                           # every acknowledged write, nothing else
            if filler.exists():
                filler.unlink()
            if undo_limit:
                undo_limit()
            if postgres_url_if_pg is None:
                ps["after"] = "space again"                     # the store recovers with the space
        with Store.open(url) as again:
            assert again.plugin("big").keys("k") == acked
        if postgres_url_if_pg is None:
            assert integrity(mnt / "rtmbot.sqlite") == "ok"
    finally:
        if postgres_url_if_pg is not None:
            tables = create_engine(resolve_url(url))
            with tables.begin() as conn:
                names = conn.exec_driver_sql("SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables "
                                             "WHERE schemaname = current_schema() "
                                             "AND starts_with(tablename, 'rtmbot_')").scalar()
                conn.exec_driver_sql(f"DROP TABLE {names}")
            tables.dispose()
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP TABLESPACE {space}")
            admin.dispose()
        elif page_limit:
            shutil.rmtree(mnt)


def _limit_pages(store: Store, extra: int) -> Callable[[], None]:
    """Cap the SQLite file at its current size plus `extra` pages; returns an undo."""
    with store.engine.connect() as conn:
        limit = conn.exec_driver_sql("PRAGMA page_count").scalar() + extra

    def on_connect(dbapi_conn, record) -> None:  # noqa: ANN001
        dbapi_conn.execute(f"PRAGMA max_page_count = {limit}")
    event.listen(store.engine, "connect", on_connect)
    store.engine.dispose()

    def undo() -> None:
        event.remove(store.engine, "connect", on_connect)
        store.engine.dispose()
    return undo


@pytest.fixture
def postgres_url_if_pg(store_url: str, request: pytest.FixtureRequest) -> str | None:
    return None if store_url.startswith("sqlite") else request.getfixturevalue("postgres_url")


def test_garbage_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "rtmbot.sqlite"
    path.write_bytes(b"this is not a database, it is a text file someone copied here\n" * 100)
    with pytest.raises(StoreCorruptError) as info:
        Store.open(f"sqlite:///{path}")
    message = str(info.value)
    assert str(path) in message and "restore a backup" in message and ".recover" in message
    assert path.read_bytes().startswith(b"this is not")      # left alone


def test_damaged_pages_are_found_at_open(tmp_path: Path) -> None:
    path = tmp_path / "rtmbot.sqlite"
    with Store.open(f"sqlite:///{path}") as store:
        store.plugin("p").update({f"key{i:05d}": "v" * 200 for i in range(2000)})
    assert not Path(f"{path}-wal").exists()                   # checkpointed on close
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 40 * page
    rng = random.Random(4)
    for n in range(10, 30):                                    # scribble over b-tree pages
        start = n * page + 100
        data[start:start + 600] = bytes(rng.randrange(256) for _ in range(600))
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match=f"{path}.*damaged.*restore a backup"):
        Store.open(f"sqlite:///{path}")


# -- configuration ---------------------------------------------------------------------------

def test_default_location_and_url_mapping(tmp_path: Path) -> None:
    assert resolve_url(None, tmp_path, env={}).database == str(tmp_path / "rtmbot.sqlite")
    env = {"STATE_DIRECTORY": "/var/lib/rtmbot:/var/lib/other"}
    assert resolve_url(None, tmp_path, env=env).database == "/var/lib/rtmbot/rtmbot.sqlite"
    assert resolve_url("sqlite:///data/x.db", tmp_path, env={}).database == str(tmp_path / "data/x.db")
    assert resolve_url("sqlite:////abs/x.db", tmp_path, env={}).database == "/abs/x.db"
    pg = resolve_url("postgresql://u:pw@db.example/rtm", tmp_path, env={})
    assert pg.drivername == "postgresql+psycopg"
    assert resolve_url("postgres://u@h/d", env={}).drivername == "postgresql+psycopg"
    for bad in ("sqlite://", "sqlite:///:memory:", "not a url"):
        with pytest.raises(StoreError):
            resolve_url(bad, tmp_path, env={})
    with pytest.raises(StoreError, match="STATE_DIRECTORY"):
        resolve_url(None, None, env={})


def test_open_default_file_in_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}:/nonexistent")
    with Store.open(None, base_path="/nonexistent", synchronous="normal") as store:
        store.plugin("p")["k"] = 1
        assert store.describe() == f"sqlite:///{tmp_path}/rtmbot.sqlite (WAL, synchronous=NORMAL)"
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1      # NORMAL
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert (tmp_path / "rtmbot.sqlite").is_file()


@pytest.mark.parametrize("level,number", [("OFF", 0), ("NORMAL", 1), ("FULL", 2), ("EXTRA", 3)])
def test_synchronous_levels(tmp_path: Path, level: str, number: int) -> None:
    with Store.open(f"sqlite:///{tmp_path}/s.sqlite", synchronous=level) as store:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == number


def test_bad_settings_are_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="synchronous"):
        Store.open(f"sqlite:///{tmp_path}/s.sqlite", synchronous="SOMETIMES")
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        Store.open(f"sqlite:///{tmp_path}/missing/s.sqlite")
    with pytest.raises(StoreUnavailableError, match="no store"):
        Store.open(f"sqlite:///{tmp_path}/absent.sqlite", create=False)
    with pytest.raises(StoreUnavailableError, match="cannot reach"):
        Store.open("postgresql://nobody:pw@127.0.0.1:1/none", lock_timeout=2)


def test_describe_never_shows_the_password(postgres_url: str) -> None:
    url = make_url(postgres_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    with Store.open(url) as store:           # trust auth: the password is not checked
        described = store.describe()
    assert "s3cret" not in described and "***" not in described and "PostgreSQL" in described
    with pytest.raises(StoreError) as info:
        Store.open("postgresql://u:s3cret-pw@127.0.0.1:1/none", lock_timeout=2)
    assert "s3cret" not in str(info.value)


def test_closed_store_raises(store: Store) -> None:
    ps = store.plugin("p")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        ps["k"] = 1


def test_driver_errors_map_to_typed_errors() -> None:
    class PgError(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__(f"sqlstate {sqlstate}")
            self.sqlstate = sqlstate
    assert isinstance(translate(PgError("53100"), "db"), StoreFullError)
    assert isinstance(translate(PgError("25006"), "db"), StoreReadOnlyError)
    assert isinstance(translate(PgError("XX001"), "db"), StoreCorruptError)
    assert isinstance(translate(PgError("08006"), "db"), StoreUnavailableError)
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5
    assert isinstance(translate(busy, "db"), StoreBusyError)
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13
    assert isinstance(translate(full, "db"), StoreFullError)


def test_what_reaching_the_server_failed_on_is_told_apart() -> None:
    """Connection failures are StoreUnreachableError (the daemon waits for those); a value
    the driver refuses is not "cannot reach the database"; SQLite is judged by its code."""
    class OperationalError(Exception):                  # PEP 249 names, as psycopg's
        sqlstate = None
        pgconn = None

    class DataError(Exception):
        sqlstate = None

    class PgError(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__(f"sqlstate {sqlstate}")
            self.sqlstate = sqlstate
    refused = translate(OperationalError("connection failed: Connection refused"), "postgresql://u@h/db")
    assert isinstance(refused, StoreUnreachableError) and not refused.password_involved
    assert (refused.where, refused.detail) == ("postgresql://u@h/db", "connection failed: Connection refused")
    for state in ("08006", "57P03", "57P01"):                      # starting up, shutting down
        assert isinstance(translate(PgError(state), "db"), StoreUnreachableError), state
    canceled = translate(PgError("57014"), "db")
    assert isinstance(canceled, StoreUnavailableError) and not isinstance(canceled, StoreUnreachableError)
    nul = translate(DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), "db: plugin 'p' key 'k'")
    assert not isinstance(nul, StoreUnavailableError) and "cannot reach" not in str(nul) and "'k'" in str(nul)

    class PgConn:
        needs_password, used_password = False, True
    login = OperationalError('FATAL:  password authentication failed for user "rtm"')
    login.pgconn = PgConn()
    error = translate(login, "db")
    assert isinstance(error, StoreUnreachableError) and error.password_involved and "password in STORE_URL" in str(error)
    worded = sqlite3.OperationalError("database is locked")      # no sqlite_errorcode: words are not read
    assert type(translate(worded, "db")) is StoreError


def test_a_server_that_is_down_is_unreachable() -> None:
    with pytest.raises(StoreUnreachableError) as info:
        Store.open(f"postgresql://rtm:s3cret-pw@127.0.0.1:{free_port()}/rtmbot")
    assert "s3cret" not in str(info.value) and "s3cret" not in info.value.where
    assert not info.value.password_involved and "refused" in info.value.detail.lower()


def test_a_server_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq waits forever by default: the store gives it CONNECT_TIMEOUT, so a host that
    swallows packets makes the start wait for it, not hang."""
    monkeypatch.setattr(store_engine, "CONNECT_TIMEOUT", 2)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)                              # the kernel accepts; nobody ever answers
    outcome: list[BaseException] = []

    def open_it() -> None:
        try:
            Store.open(f"postgresql://u@127.0.0.1:{silent.getsockname()[1]}/db")
        except BaseException as exc:  # noqa: BLE001 - looked at below
            outcome.append(exc)
    opener = threading.Thread(target=open_it, daemon=True)
    opener.start()
    try:
        wait_until(lambda: not opener.is_alive(), timeout=60, what="Store.open to give up")
    finally:
        silent.close()
    assert len(outcome) == 1 and isinstance(outcome[0], StoreUnreachableError), outcome


def test_a_missing_driver_is_a_store_error_not_a_traceback(tmp_path: Path) -> None:
    for url in ("postgresql+nosuchdriver://u@127.0.0.1/db", "postgresql+pg8000://u@127.0.0.1/db"):
        with pytest.raises(StoreError, match="driver") as info:
            Store.open(url)
        assert not isinstance(info.value, StoreUnavailableError)


def free_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens (for now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_default_store_in_a_folder_whose_name_is_not_utf8(tmp_path: Path) -> None:
    # A BASE_PATH unpacked from a Latin-1 archive: its name comes back surrogate-escaped.
    # Describing the store %-quoted the path and raised UnicodeEncodeError, so every
    # plugin store call failed with it and --check-config printed a traceback.
    folder = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9")
    os.mkdir(folder)
    with Store.open(None, folder) as store:
        store.plugin("p")["k"] = 1
        assert dict(store.plugin("p")) == {"k": 1}
        assert "/caf" in store.describe()
    assert os.path.exists(os.path.join(folder, "rtmbot.sqlite"))
