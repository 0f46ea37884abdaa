"""The outbox's durable rows: what is written when, one row per message, bad items alone."""
from __future__ import annotations

import logging
import threading

import pytest

from rtmbotd.outbox import Outbox
from rtmbotd.outbox.journal import HOLD, Journal
from rtmbotd.outbox.writer import OutboxWriter
from rtmbotd.router import Output
from rtmbotd.store import Store, StoreUnavailableError
from rtmbotd.testing.waiting import wait_until
from tests.test_store import pg_schema_url, postgres_url  # noqa: F401  (fixtures)


class RecordingStore:
    """Stands in for Store below the writer: keeps rows in a dict and counts what each write touched."""

    def __init__(self, rows: dict[int, dict] | None = None, fail: int = 0, read_fail: int = 0) -> None:
        self.rows = dict(rows or {})
        self.read_fail = read_fail
        self.ops: list[str] = []
        self.writes: list[tuple[int, int]] = []     # (rows put, rows deleted) per batch
        self.fail = fail
        self.lock = threading.Lock()
        self.closed = False

    def outbox_rows(self) -> list[tuple[int, dict]]:
        if self.read_fail:
            self.read_fail -= 1
            raise StoreUnavailableError("store down (test)")
        self.ops.append("read")
        return sorted(self.rows.items())

    def write_outbox(self, puts, deletes) -> None:  # noqa: ANN001
        import json
        with self.lock:
            if self.fail:
                self.fail -= 1
                raise StoreUnavailableError("store down (test)")
            for seq in deletes:
                self.rows.pop(seq, None)
            for seq, _channel, record in puts:
                self.rows[seq] = json.loads(record)
            self.writes.append((len(puts), len(deletes)))
            self.ops.append("write")

    def close(self) -> None:
        self.closed = True


def wired(store) -> tuple[Journal, Outbox]:  # noqa: ANN001
    journal = Journal(store)
    box = Outbox(rate=0, burst=1)
    box.on_enqueued, box.on_settled = journal.enqueued, journal.settled
    return journal, box


def queue(journal: Journal, box: Outbox, text: str, now: float, channel: str = "C1") -> list:
    out = journal.track(Output(channel, text, {}, "p"), now)
    return box.enqueue(channel, out.text, out.plugin, now, out.extra, tag=out.tag)


def settle_all(journal: Journal, box: Outbox, now: float) -> None:
    for msg, _ in box.ready(now, socket=False, web=True):
        box.delivered(msg)
    journal.flush(now)


def test_a_reply_delivered_at_once_is_never_written() -> None:
    store = RecordingStore()
    journal, box = wired(store)
    queue(journal, box, "hi", 0.0)
    journal.flush(0.0)
    settle_all(journal, box, 0.01)
    journal.flush(HOLD + 1)
    assert journal.close(5) == 0
    assert store.writes == [] and store.rows == {}


def test_an_output_that_waited_is_written_at_the_next_turn_and_its_row_deleted_once_delivered() -> None:
    store = RecordingStore()
    journal, box = wired(store)
    queue(journal, box, "waits", 0.0)
    assert journal.next_deadline() == pytest.approx(HOLD)
    journal.flush(HOLD / 2)
    assert journal.writer.idle and store.rows == {}
    journal.flush(HOLD)
    wait_until(lambda: len(store.rows) == 1, 10, "the row written")
    assert list(store.rows.values()) == [{"channel": "C1", "text": "waits", "plugin": "p", "extra": {}}]
    assert journal.next_deadline() is None            # written: nothing waits on time
    settle_all(journal, box, HOLD + 0.1)
    wait_until(lambda: store.rows == {}, 10, "the row deleted")
    journal.close(5)
    assert store.closed


def test_settling_one_restored_message_deletes_one_row() -> None:
    """Draining a backlog is linear: each delivery removes its own row and nothing else
    (it used to rewrite the whole remaining outbox per message)."""
    n = 2000
    store = RecordingStore({seq: {"channel": "C1", "text": f"m{seq}", "plugin": "p"} for seq in range(1, n + 1)})
    journal, box = wired(store)
    restored = journal.restore(None)
    assert [o.text for o in restored] == [f"m{i}" for i in range(1, n + 1)]
    for out in restored:
        box.enqueue(out.target, out.text, out.plugin, 0.0, out.extra, tag=out.tag)
    for i in range(n):                                   # one delivery per loop turn
        (msg, _), = box.ready(float(i), socket=False, web=True)
        box.delivered(msg)
        journal.flush(float(i))
    journal.close(10)
    assert store.rows == {}
    assert sum(put for put, _ in store.writes) == 0
    assert sum(deleted for _, deleted in store.writes) == n


def test_new_seqs_sort_after_restored_ones() -> None:
    store = RecordingStore({10**18: {"channel": "C1", "text": "old", "plugin": "p"}})
    journal, box = wired(store)
    journal.restore(None)
    out = journal.track(Output("C1", "new", {}, "p"), 0.0)
    assert out.tag > 10**18


def test_a_split_message_keeps_only_its_undelivered_parts() -> None:
    store = RecordingStore()
    journal, box = wired(store)
    text = "\n".join(("line %d " % i) * 300 for i in range(3))       # three parts of ~2,100 chars
    parts = queue(journal, box, text, 0.0)
    assert len(parts) == 3
    journal.flush(HOLD)
    wait_until(lambda: len(store.rows) == 1, 10, "the row written")
    (msg, _), = box.ready(HOLD, socket=False, web=True)          # a web send waits for its answer
    box.delivered(msg)
    journal.flush(HOLD)
    wait_until(lambda: journal.writer.idle and list(store.rows.values())[0]["text"] != text, 10, "row rewritten")
    assert list(store.rows.values())[0]["text"] == "\n".join(p.text for p in parts[1:])
    journal.close(5)


def test_store_down_keeps_the_changes_and_writes_them_when_it_is_back(caplog: pytest.LogCaptureFixture) -> None:
    store = RecordingStore(fail=2)
    journal, box = wired(store)
    for i in range(5):
        queue(journal, box, f"m{i}", 0.0)
    journal.flush(HOLD)
    wait_until(lambda: len(store.rows) == 5, 20, "rows written once the store is back")
    assert sorted(r["text"] for r in store.rows.values()) == [f"m{i}" for i in range(5)]
    assert "kept in memory" in caplog.text and "works again" in caplog.text
    journal.close(5)


def test_a_deletion_queued_while_the_store_is_down_wins_over_the_failed_write() -> None:
    store = RecordingStore(fail=1)
    writer = OutboxWriter(store)
    writer.submit({1: {"channel": "C1", "text": "a"}, 2: {"channel": "C1", "text": "b"}})
    wait_until(lambda: store.fail == 0, 10, "the first write failed")
    writer.submit({1: None})
    assert writer.close(10)
    assert store.rows == {2: {"channel": "C1", "text": "b"}}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:  # noqa: ANN001
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/rtmbot.sqlite"
    return request.getfixturevalue("pg_schema_url")


def test_one_lone_surrogate_is_refused_alone(store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Slack's escaped half emoji ("\\ud83d") in one output's blocks used to make the save
    fail for every queued message; now only that one stays out of the store, named."""
    with Store.open(store_url) as store:
        journal, box = wired(store)
        for i in range(7):
            extra = {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "half \ud83d"}}]} if i == 3 else {}
            out = journal.track(Output("C1GENERAL", f"m{i}", extra, "emoji" if i == 3 else "p"), 0.0)
            box.enqueue("C1GENERAL", out.text, out.plugin, 0.0, out.extra, tag=out.tag)
        caplog.set_level(logging.ERROR)
        journal.flush(HOLD)
        journal.writer.close(10)
        assert [r["text"] for r in store.load_outbox()] == ["m0", "m1", "m2", "m4", "m5", "m6"]
    bad = [r.getMessage() for r in caplog.records if "cannot be kept" in r.getMessage()]
    assert len(bad) == 1 and "plugin emoji" in bad[0] and "C1GENERAL" in bad[0] and "surrogate" in bad[0]


def test_without_a_link_an_output_is_written_at_the_end_of_its_turn() -> None:
    store = RecordingStore()
    journal = Journal(store)
    journal.track(Output("C1", "outage", {}, "p"), 5.0, stuck=True)
    assert journal.next_deadline() == 5.0
    journal.flush(5.0)
    wait_until(lambda: len(store.rows) == 1, 10, "the row written")
    journal.close(5)


class CountingStore:
    """A real Store that counts the outbox rows each write touches."""

    def __init__(self, real: Store) -> None:
        self.real = real
        self.rows_touched = 0

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.real, name)

    def save_outbox(self, records: list) -> None:
        self.rows_touched += len(records)
        self.real.save_outbox(records)

    def write_outbox(self, puts, deletes) -> None:  # noqa: ANN001
        self.rows_touched += len(puts) + len(deletes)
        self.real.write_outbox(puts, deletes)


def test_draining_a_saved_backlog_touches_each_row_once(tmp_path) -> None:  # noqa: ANN001
    """Each delivered restored message used to rewrite the whole remaining saved outbox
    on the loop's thread: n²/2 rows for n messages (1,000 took 9.5 s, 4,000 took 124 s)."""
    import asyncio
    import signal

    import yaml

    from rtmbotd.config import load_config
    from rtmbotd.daemon import Daemon
    from rtmbotd.testing.fakeslack import FakeSlack

    n = 300
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with Store.open(url) as seed:
        seed.save_outbox([{"channel": "C1GENERAL", "text": f"saved {i}", "plugin": "p"} for i in range(n)])
    with FakeSlack() as fake:
        (tmp_path / "plugins").mkdir()
        conf = tmp_path / "rtmbot.conf"
        conf.write_text(yaml.safe_dump({"SLACK_TOKEN": "xoxb-test", "SLACK_API_URL": fake.url, "RATE_LIMIT": 0,
                                        "BASE_PATH": str(tmp_path), "STORE_URL": url}))
        store = CountingStore(Store.open(url))
        daemon = Daemon(load_config(conf, env={}), install_signals=False, store=store)
        thread = threading.Thread(target=lambda: asyncio.run(daemon.run()), daemon=True)
        thread.start()
        try:
            msgs = fake.wait_for_messages(n, timeout=120)
            assert [m["text"] for m in msgs] == [f"saved {i}" for i in range(n)]
            with Store.open(url) as check:
                wait_until(lambda: check.load_outbox() == [], 60, "every saved row deleted")
        finally:
            daemon.send_signal(signal.SIGTERM)
            thread.join(30)
    assert store.rows_touched <= n + 10, f"{store.rows_touched} rows written to drain {n} saved messages"


def test_a_store_unreadable_at_start_is_read_before_any_write_and_its_rows_come_later(
        caplog: pytest.LogCaptureFixture) -> None:
    store = RecordingStore({1: {"channel": "C1", "text": "old", "plugin": "p"}}, read_fail=2)
    journal = Journal(store)
    later: list = []
    assert journal.restore(later.append) == []
    assert "cannot read the saved outbox" in caplog.text
    journal.track(Output("C1", "new", {}, "p"), 0.0, stuck=True)
    journal.flush(0.0)
    wait_until(lambda: later and "write" in store.ops, 20, "the rows read, then the new one written")
    assert store.ops[:2] == ["read", "write"]
    assert [o.text for o in journal.adopt(later[0])] == ["old"]
    journal.close(5)


def test_the_stop_writes_at_once_when_the_store_is_back_during_a_long_backoff(monkeypatch) -> None:  # noqa: ANN001
    """The writer slept out its whole backoff (up to 30 s) before the stop's last write:
    with the store back, the stop's 5 s passed and the rows were not written."""
    import rtmbotd.outbox.writer as writer_module
    monkeypatch.setattr(writer_module, "RETRY_BASE", 600.0)
    store = RecordingStore(fail=1)
    writer = OutboxWriter(store)
    writer.submit({1: {"channel": "C1", "text": "a"}})
    wait_until(lambda: store.fail == 0, 10, "the first write failed")
    assert writer.close(5)
    assert store.rows == {1: {"channel": "C1", "text": "a"}}


def test_a_saved_row_that_is_not_a_message_is_skipped_alone(store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A damaged or hand-edited row (not JSON, not a dict, no target) used to raise out of the
    start: the daemon exited with a traceback at every start, and sent none of the others."""
    from sqlalchemy import text
    with Store.open(store_url) as store:
        store.save_outbox([{"channel": "C1", "text": f"m{i}", "plugin": "p"} for i in range(5)])
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE rtmbot_outbox_rows SET record = '{not json' WHERE seq = 1"))
            conn.execute(text("UPDATE rtmbot_outbox_rows SET record = '[1, 2]' WHERE seq = 2"))
            conn.execute(text("UPDATE rtmbot_outbox_rows SET record = '{\"channel\": 5, \"text\": \"x\"}' WHERE seq = 3"))
        journal = Journal(store)
        outputs = journal.restore(lambda rows: None)
        assert [(o.target, o.text) for o in outputs] == [("C1", "m3"), ("C1", "m4")]
        assert "outbox row 1 is not JSON" in caplog.text
        assert "saved message 2 is not a message" in caplog.text and "saved message 3 is not" in caplog.text


def test_while_the_store_is_down_a_delivered_message_leaves_nothing_in_memory() -> None:
    """Each message delivered after its put was queued left a deletion waiting for the store:
    memory grew by one row change per message for as long as the store was down."""
    store = RecordingStore(fail=10**9)
    writer = OutboxWriter(store)
    for seq in range(1, 201):
        writer.submit({seq: {"channel": "C1", "text": f"m{seq}"}})
    wait_until(lambda: store.fail < 10**9, 10, "a write failed")
    for seq in range(1, 201):
        writer.submit({seq: None})
    wait_until(lambda: writer.waiting == 0, 10, "no row change left waiting")
    writer.close(0)


def test_deleting_a_row_that_is_in_the_store_waits_for_the_store() -> None:
    store = RecordingStore(rows={5: {"channel": "C1", "text": "saved"}})
    writer = OutboxWriter(store)
    writer.submit({6: {"channel": "C1", "text": "new"}})
    wait_until(lambda: 6 in store.rows and writer.idle, 10, "row 6 written")
    store.fail = 10**9
    writer.exists([5])                                   # read at start
    writer.submit({5: None, 6: None})
    wait_until(lambda: store.fail < 10**9 and writer.waiting == 2, 10, "both deletions kept after a failed write")
    store.fail = 0
    assert writer.close(10)
    assert store.rows == {}
