"""The shared outbox of a cluster: a dead node's rows claimed by a live one, the fence.

Two Store objects on one PostgreSQL database stand for two nodes; the rtmbot_nodes rows
the coordinator would keep are written by `register` below.
"""
from __future__ import annotations

import logging
import threading

import pytest
from sqlalchemy import text

from rtmbotd.outbox import Outbox
from rtmbotd.outbox.journal import HOLD, Journal
from rtmbotd.router import Output
from rtmbotd.store import Store
from rtmbotd.store.errors import OutboxTakenError, StoreBusyError
from rtmbotd.store.values import to_json
from rtmbotd.testing.waiting import wait_until
from tests.test_store import pg_schema_url, postgres_url  # noqa: F401  (fixtures)


def register(store: Store, name: str, session: str, *, age: float = 0.0, role: str = "follower") -> None:
    """What the coordinator writes: node `name`'s row, its heartbeat `age` s old by the server's clock."""
    with store.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO rtmbot_nodes (name, session, host, pid, version, schema_version, started_at, heartbeat_at, "
            "role, link, plugins) VALUES (:name, :session, 'h', 1, 'test', 3, 0, "
            "extract(epoch from clock_timestamp()) - :age, :role, '', '[]') "
            "ON CONFLICT (name) DO UPDATE SET session = :session, role = :role, "
            "heartbeat_at = extract(epoch from clock_timestamp()) - :age"), {"name": name, "session": session,
                                                                            "age": age, "role": role})


def session_of(store: Store, name: str) -> str:
    with store.engine.connect() as conn:
        return conn.execute(text("SELECT session FROM rtmbot_nodes WHERE name = :n"), {"n": name}).scalar()


def row(seq: int, channel: str, words: str) -> tuple[int, str, str]:
    return (seq, channel, '{"channel": "%s", "text": "%s", "plugin": "p", "extra": {}}' % (channel, words))


@pytest.fixture
def nodes(pg_schema_url: str):  # noqa: F811, ANN201
    one = Store.open(pg_schema_url, outbox_owner="n1")
    two = Store.open(pg_schema_url, outbox_owner="n2")
    register(one, "n1", "s1")
    register(two, "n2", "s2")
    yield one, two
    one.close()
    two.close()


def texts(rows: list[tuple[int, dict]]) -> list[str]:
    return [record["text"] for _, record in rows]


def test_a_dead_nodes_rows_move_to_the_claimer_in_order_once(nodes) -> None:  # noqa: ANN001
    one, two = nodes
    one.write_outbox([row(10, "C1", "a"), row(11, "C2", "b"), row(12, "C1", "c")], session="s1")
    register(one, "n1", "s1", age=7.0)                          # its heartbeat lapsed: dead
    moved = two.claim_outbox("n1", "n2", "s2")
    assert texts(moved) == ["a", "b", "c"] and [seq for seq, _ in moved] == [10, 11, 12]
    assert texts(two.outbox_rows("s2")) == ["a", "b", "c"]
    assert one.outbox_rows() == []
    assert session_of(one, "n1") == "claimed by n2"
    assert two.claim_outbox("n1", "n2", "s2") == []            # taken already: nobody takes it twice


def test_a_live_node_keeps_its_rows(nodes) -> None:  # noqa: ANN001
    one, two = nodes
    one.write_outbox([row(1, "C1", "mine")], session="s1")
    register(one, "n1", "s1", age=3.0)                          # late, but within NODE_TTL
    assert two.claim_outbox("n1", "n2", "s2") == []
    assert texts(one.outbox_rows("s1")) == ["mine"] and session_of(one, "n1") == "s1"


def test_a_hung_node_whose_rows_were_claimed_writes_nothing_more(nodes) -> None:  # noqa: ANN001
    one, two = nodes
    one.write_outbox([row(1, "C1", "old")], session="s1")
    register(one, "n1", "s1", age=7.0)
    two.claim_outbox("n1", "n2", "s2")
    with pytest.raises(OutboxTakenError):
        one.write_outbox([row(2, "C1", "new")], [1], session="s1")
    with pytest.raises(OutboxTakenError):
        one.outbox_rows("s1")
    assert one.outbox_rows() == [] and texts(two.outbox_rows()) == ["old"]


def test_colliding_seqs_are_renumbered_after_the_claimers_own(nodes) -> None:  # noqa: ANN001
    one, two = nodes
    two.write_outbox([row(5, "C1", "two's")], session="s2")
    one.write_outbox([row(5, "C1", "x"), row(6, "C1", "y")], session="s1")
    register(one, "n1", "s1", age=7.0)
    moved = two.claim_outbox("n1", "n2", "s2")
    assert [seq for seq, _ in moved] == [7, 8]
    assert texts(two.outbox_rows()) == ["two's", "x", "y"]


def test_the_claimers_journal_hands_out_the_seqs(nodes) -> None:  # noqa: ANN001
    one, two = nodes
    one.write_outbox([row(5, "C1", "x"), row(6, "C1", "y")], session="s1")
    register(one, "n1", "s1", age=7.0)
    asked = []
    moved = two.claim_outbox("n1", "n2", "s2", seqs=lambda n: asked.append(n) or 1000)
    assert asked == [2] and [seq for seq, _ in moved] == [1000, 1001]


def test_a_node_stopped_cleanly_with_nothing_left_is_not_claimed(nodes) -> None:  # noqa: ANN001
    one, two = nodes
    register(one, "n1", "s1", age=60.0, role="stopped")
    assert two.claim_outbox("n1", "n2", "s2") == []
    assert session_of(one, "n1") == "s1"


def test_a_node_inside_its_own_outbox_write_is_skipped_not_waited_for(nodes) -> None:  # noqa: ANN001
    one, two = nodes
    one.write_outbox([row(1, "C1", "held")], session="s1")
    register(one, "n1", "s1", age=7.0)
    with one._backend.transaction(one._outbox_lock()):           # n1 hung mid-write (SIGSTOP)
        with pytest.raises(StoreBusyError):
            two.claim_outbox("n1", "n2", "s2")
    assert texts(two.claim_outbox("n1", "n2", "s2")) == ["held"]


def test_a_claimer_that_lost_its_own_session_claims_nothing(nodes) -> None:  # noqa: ANN001
    one, two = nodes
    one.write_outbox([row(1, "C1", "x")], session="s1")
    register(one, "n1", "s1", age=7.0)
    register(two, "n2", "s2-new")
    with pytest.raises(OutboxTakenError):
        two.claim_outbox("n1", "n2", "s2")
    assert texts(one.outbox_rows()) == ["x"]


def test_the_restore_holds_the_nodes_row_so_a_claim_waits_or_skips(nodes) -> None:  # noqa: ANN001
    """The restore at start reads under this node's own row lock: a claimer skips it."""
    one, two = nodes
    one.write_outbox([row(1, "C1", "x")], session="s1")
    register(one, "n1", "s1", age=7.0)                # (a restarted node re-registers first; here: a race)
    with one._backend.transaction("other") as conn:
        conn.execute(text("SELECT 1 FROM rtmbot_nodes WHERE name = 'n1' FOR UPDATE"))
        with pytest.raises(StoreBusyError):                  # SKIP LOCKED: no wait, try later
            two.claim_outbox("n1", "n2", "s2")
    assert texts(one.outbox_rows("s1")) == ["x"]


# -- the journal and its writer: committed rows, the takeover, the fence ---------------------

def wired(store: Store, owner: str, session: str) -> tuple[Journal, Outbox]:
    journal = Journal(store, owner=owner, session=session)
    box = Outbox(0, 1)
    box.on_enqueued, box.on_settled, box.fence = journal.enqueued, journal.settled, journal.may_send
    return journal, box


def track(journal: Journal, box: Outbox, words: str, now: float, channel: str = "C1") -> None:
    out = journal.track(Output(channel, words, {}, "p"), now)
    box.enqueue(channel, out.text, out.plugin, now, out.extra, tag=out.tag)


def test_a_node_claims_through_its_writer_and_routes_the_rows_after_its_own(nodes) -> None:  # noqa: ANN001
    one, two = nodes
    one.write_outbox([row(1, "C1", "dead's")], session="s1")
    register(one, "n1", "s1", age=7.0)
    journal, box = wired(two, "n2", "s2")
    journal.node_until = float("inf")
    track(journal, box, "own", 0.0)
    got = []
    journal.writer.claim("n1", lambda name, rows: got.append((name, rows)))
    wait_until(lambda: got, 20, "the claim")
    [(name, rows)] = got
    outputs = journal.adopt(rows, whose="node " + name)
    assert [o.text for o in outputs] == ["dead's"] and outputs[0].tag > journal.reserve(0) - 2
    for out in outputs:
        box.enqueue(out.target, out.text, out.plugin, 1.0, out.extra, tag=out.tag)
    sent = [m.text for m, _ in box.ready(1.0, socket=False, web=True)]
    assert sent == ["own"]                                       # one at a time over the Web API
    journal.close(5)


def test_after_a_takeover_committed_rows_are_dropped_and_unwritten_ones_kept(nodes) -> None:  # noqa: ANN001
    one, two = nodes
    journal, box = wired(one, "n1", "s1")
    journal.node_until = float("inf")
    track(journal, box, "committed", 0.0)
    journal.flush(HOLD)
    wait_until(lambda: journal.writer.idle and one.outbox_rows(), 20, "the row committed")
    register(one, "n1", "s1", age=7.0)                             # n1 hung; n2 takes its rows
    assert texts(two.claim_outbox("n1", "n2", "s2")) == ["committed"]
    track(journal, box, "later", HOLD)                            # n1 resumes: its session is gone
    journal.flush(2 * HOLD)                                       # fenced: nothing more is written
    wait_until(lambda: journal.writer._taken, 20, "the writer fenced")
    register(one, "n1", "s1b")                                    # n1 joins again as a new session
    done: list = []
    journal.session_lost("s1b", lambda seqs: done.append(seqs))
    assert [m.text for m, _ in box.ready(3.0, socket=False, web=True)] == []    # suspect until told
    wait_until(lambda: done, 20, "the takeover")
    box.discard(journal.taken(done[0]))
    wait_until(lambda: journal.writer.idle and texts(one.outbox_rows("s1b")) == ["later"], 20, "the new row")
    assert [m.text for m, _ in box.ready(3.0, socket=False, web=True)] == ["later"]
    assert texts(two.outbox_rows()) == ["committed"]
    journal.close(5)


def test_the_fence_holds_a_saved_message_past_node_until_and_lets_an_unsaved_one_go() -> None:
    journal = Journal(store=None, writer=_NullWriter(), session="s")
    box = Outbox(0, 1)
    box.on_enqueued, box.on_settled, box.fence = journal.enqueued, journal.settled, journal.may_send
    journal.node_until = 10.0
    track(journal, box, "saved", 0.0, "C1")
    journal.flush(HOLD)                                   # handed to the writer: it may have a row
    track(journal, box, "fresh", 10.0, "C2")
    assert [m.text for m, _ in box.ready(10.0, socket=False, web=True)] == ["fresh"]
    assert box.next_deadline(10.0, socket=False, web=True) is None    # no busy wake-ups while fenced
    journal.node_until = 12.0                              # a heartbeat answered
    assert [m.text for m, _ in box.ready(11.0, socket=False, web=True)] == ["saved"]


class _NullWriter:
    """The writer's interface, writing nothing (the fence alone is under test)."""

    def __init__(self) -> None:
        self.changes: list = []
        self.lock = threading.Lock()

    def submit(self, changes: dict) -> None:
        self.changes.append(changes)

    def exists(self, seqs) -> None:  # noqa: ANN001
        pass

    def may_exist(self, seq: int) -> bool:
        return True


def test_the_writer_tries_a_busy_claim_again(nodes, monkeypatch, caplog) -> None:  # noqa: ANN001
    """A node hung inside its own write (its lock held) is claimed once the lock goes."""
    monkeypatch.setattr("rtmbotd.outbox.writer.RETRY_BASE", 0.05)
    one, two = nodes
    one.write_outbox([row(1, "C1", "late")], session="s1")
    register(one, "n1", "s1", age=7.0)
    journal = Journal(two, owner="n2", session="s2")
    got = []
    caplog.set_level(logging.INFO, "rtmbotd.outbox.writer")
    with one._backend.transaction(one._outbox_lock()):
        journal.writer.claim("n1", lambda name, rows: got.append(rows))
        wait_until(lambda: caplog.text.count("is writing its outbox") >= 2, 20, "two tries while n1 writes")
        assert got == []
    wait_until(lambda: got, 20, "the claim once n1's write ended")
    assert texts(got[0]) == ["late"]
    journal.close(5)


def test_a_claim_kept_waiting_by_a_hung_node_does_not_hold_back_the_claimers_own_rows(nodes) -> None:  # noqa: ANN001
    """n1 hung (SIGSTOP) inside its own outbox write keeps its locks: n2's claim of it waits,
    but n2's own rows are still written and, once delivered, deleted (a bench found a
    delivered message's row left behind, so sent again after a restart)."""
    one, two = nodes
    register(one, "n1", "s1", age=7.0)
    journal, box = wired(two, "n2", "s2")
    journal.node_until = float("inf")
    claimed: list = []
    with one._backend.transaction(one._outbox_lock()) as conn:     # n1 stopped mid-write, its row held
        conn.execute(text("SELECT 1 FROM rtmbot_nodes WHERE name = 'n1' FOR SHARE"))
        journal.writer.claim("n1", lambda name, rows: claimed.append(rows))
        track(journal, box, "own", 0.0)
        journal.flush(HOLD)
        wait_until(lambda: texts(two.outbox_rows("s2")) == ["own"], 20, "n2's own row written meanwhile")
        [(msg, _)] = box.ready(1.0, socket=False, web=True)
        box.delivered(msg)
        journal.flush(1.0)
        wait_until(lambda: two.outbox_rows("s2") == [], 20, "the delivered message's row deleted meanwhile")
        assert claimed == []
    wait_until(lambda: claimed, 20, "the claim once n1's transaction ended")
    journal.close(5)


def test_a_claimed_row_is_passed_on_whole_with_its_method_and_callback(nodes) -> None:  # noqa: ANN001
    """Web API write outputs save "method" and "callback": a claim moves the record as it is,
    and the claimer routes it as that write, with that callback."""
    from rtmbotd.outbox.journal import record_of

    one, two = nodes
    out = Output("C1", None, {"name": "eyes", "timestamp": "1.2"}, "p", method="reactions.add",
                 callback={"callback": "done", "output": {"channel": "C1", "method": "reactions.add", "x": [1, None]}})
    record = record_of(out)
    one.write_outbox([(1, "C1", to_json(record, "the message"))], session="s1")
    register(one, "n1", "s1", age=7.0)
    [(_, claimed)] = two.claim_outbox("n1", "n2", "s2")
    assert claimed == record
    journal = Journal(two, owner="n2", session="s2")
    [routed] = journal.adopt([(5, claimed)], whose="node n1")
    assert (routed.method, routed.callback, routed.extra) == (out.method, out.callback, out.extra)
    assert journal._entries[5].record == record                     # kept whole while it is tracked
    journal.close(5)


def test_a_taken_message_waiting_in_the_router_is_not_sent_after_the_takeover(nodes) -> None:  # noqa: ANN001
    """n1 hung while a saved message waited for the directory (a #name); n2 took the row
    and sends it: once n1's directory lists, n1 must not send it too."""
    from types import SimpleNamespace

    from rtmbotd.cluster.outbox import OutboxTaken, SharedOutbox
    from rtmbotd.router import Router
    from rtmbotd.slack.directory import Directory

    one, two = nodes
    journal, box = wired(one, "n1", "s1")
    journal.node_until = float("inf")
    directory = Directory()
    router = Router(box, directory, open_dm=lambda user: None)
    router.route(journal.track(Output("#general", "waits for the listing", {}, "p"), 0.0), 0.0)
    journal.flush(HOLD)
    wait_until(lambda: journal.writer.idle and one.outbox_rows(), 20, "the row committed")
    register(one, "n1", "s1", age=7.0)                              # n1 hung; n2 takes its row
    assert texts(two.claim_outbox("n1", "n2", "s2")) == ["waits for the listing"]
    register(one, "n1", "s1b")                                      # n1 back as a new session
    done: list = []
    journal.session_lost("s1b", lambda seqs: done.append(seqs))
    wait_until(lambda: done, 20, "the takeover")
    shared = SharedOutbox.__new__(SharedOutbox)
    shared.daemon = SimpleNamespace(journal=journal, outbox=box, router=router)
    shared.handle_taken(OutboxTaken(frozenset(done[0])))
    directory.load([{"id": "C1", "name": "general"}], [])
    router.directory_loaded(1.0)
    assert [m.text for m, _ in box.ready(1.0, socket=False, web=True)] == []
    journal.close(5)


def test_a_claimer_whose_own_heartbeat_is_old_claims_later_not_never(nodes, monkeypatch, caplog) -> None:  # noqa: ANN001
    """A claim tried while the claimer's own heartbeat looks stale (PostgreSQL slow, the
    node just resumed) must be tried again, not taken as done: else nobody delivers the rows."""
    monkeypatch.setattr("rtmbotd.outbox.writer.RETRY_BASE", 0.05)
    one, two = nodes
    one.write_outbox([row(1, "C1", "dead's")], session="s1")
    register(one, "n1", "s1", age=20.0)
    register(two, "n2", "s2", age=7.0)                   # the claimer's own heartbeat is old for now
    with pytest.raises(StoreBusyError):
        two.claim_outbox("n1", "n2", "s2")
    journal = Journal(two, owner="n2", session="s2")
    got: list = []
    caplog.set_level(logging.INFO, "rtmbotd.outbox.writer")
    journal.writer.claim("n1", lambda name, rows: got.append(rows))
    wait_until(lambda: got or "too old" in caplog.text, 20, "a first try while n2's heartbeat is old")
    register(two, "n2", "s2")                            # its next heartbeat
    wait_until(lambda: got, 20, "the claim once n2's heartbeat is fresh")
    assert texts(got[0]) == ["dead's"]
    journal.close(5)
