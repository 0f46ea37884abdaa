"""Cluster-wide claims of Socket Mode events (rtmbotd.cluster.claims): the loop's queue
without threads, the worker against a real PostgreSQL (schemas of test_store's fixtures)."""
from __future__ import annotations

import os
import queue
import signal
import socket
import time
import uuid

import pytest
from sqlalchemy import create_engine, text

from rtmbotd.cluster import claims as claims_module
from rtmbotd.cluster.claims import (KEEP_FOR, UNCHECKED_KEPT, ClaimAnswer, ClaimQueue, ClaimsDown, ClaimsUp,
                                    ClaimWorker, EventClaims, claims_engine)
from rtmbotd.slack.protocol import Event
from rtmbotd.store import Store
from rtmbotd.store.url import resolve_url
from rtmbotd.testing.waiting import wait_until
from tests.test_store import pg_schema_url, postgres_url  # noqa: F401  (fixtures)

T = 30.0


def event(n: int, event_id: str | None = "auto") -> Event:
    return Event("message", {"text": f"m{n}"}, f"env{n}", f"Ev{n}" if event_id == "auto" else event_id)


class Sent:
    def __init__(self) -> None:
        self.claims: list[tuple[int, str]] = []
        self.probes = 0
        self.late: list[list[str]] = []

    def claim(self, ticket: int, event_id: str) -> None:
        self.claims.append((ticket, event_id))

    def probe(self) -> None:
        self.probes += 1

    def claim_late(self, event_ids: list[str]) -> None:
        self.late.append(event_ids)


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def q(sent: Sent) -> ClaimQueue:
    return ClaimQueue(sent.claim, sent.probe, timeout=1.0, late=sent.claim_late)


# -- the loop's queue -------------------------------------------------------------------------

def test_an_event_waits_for_its_claim_and_goes_only_when_this_node_took_it(q, sent):
    assert q.admit(event(1), now=10.0) == []
    assert q.admit(event(2), now=10.1) == []
    (t1, id1), (t2, id2) = sent.claims
    assert (id1, id2) == ("Ev1", "Ev2") and len(q) == 2
    assert q.next_deadline() == 11.0
    assert q.answered(ClaimAnswer(t1, False)) == []          # another node has it
    assert q.answered(ClaimAnswer(t2, True)) == [event(2)]
    assert len(q) == 0 and q.next_deadline() is None and q.problem is None


def test_events_without_an_event_id_are_not_claimed_but_keep_their_place(q, sent):
    assert q.admit(event(1, event_id=None), now=0.0) == [event(1, None)]   # a slash command: at once
    assert q.admit(event(2), now=0.0) == []
    assert q.admit(event(3, event_id=None), now=0.1) == []                # behind the one being claimed
    assert [i for _, i in sent.claims] == ["Ev2"]
    assert q.answered(ClaimAnswer(sent.claims[0][0], True)) == [event(2), event(3, None)]


def test_no_answer_in_time_dispatches_unchecked_and_opens_the_breaker(q, sent, caplog):
    q.admit(event(1), now=0.0)
    q.admit(event(2), now=0.5)
    assert q.tick(0.99) == []
    assert q.tick(1.0) == [event(1)] and q.next_deadline() == 1.5
    assert sent.probes == 1 and q.problem == "event dedup off (PostgreSQL unreachable)"
    assert q.answered(ClaimAnswer(sent.claims[0][0], False)) == []        # too late: ignored
    assert q.admit(event(3), now=1.2) == []                               # behind event 2, not claimed
    assert len(sent.claims) == 2
    assert q.tick(1.5) == [event(2), event(3)]
    assert sent.probes == 2
    q.admit(event(4), now=2.0)
    assert [r.getMessage() for r in caplog.records].count(
        "event claims: PostgreSQL unreachable (no answer within 1 s): Socket Mode events are handled without the "
        "cluster-wide check until it answers again (a Slack retry may be answered twice)") == 1    # once per outage
    assert q.worker_up() == [] and q.problem is None
    assert q.admit(event(5), now=3.0) == [] and sent.claims[-1][1] == "Ev5"


def test_a_failed_claim_dispatches_and_opens_the_breaker_until_the_worker_is_back(q, sent):
    q.admit(event(1), now=0.0)
    assert q.answered(ClaimAnswer(sent.claims[0][0], None, "OperationalError: server closed")) == [event(1)]
    assert q.down == "OperationalError: server closed"
    assert q.admit(event(2), now=0.1) == [event(2)] and len(sent.claims) == 1
    q.worker_up()
    q.worker_down(ClaimsDown("refused"))
    assert q.admit(event(3), now=0.2) == [event(3)] and len(sent.claims) == 1


def test_events_dispatched_unchecked_are_claimed_once_the_worker_is_back(q, sent):
    q.admit(event(1), now=0.0)
    q.admit(event(2), now=0.5)
    assert q.tick(1.0) == [event(1)]                                  # no answer in time
    q.answered(ClaimAnswer(sent.claims[1][0], None, "OperationalError: gone"))   # failed
    q.admit(event(3), now=1.2)                                        # the breaker is open
    q.admit(event(4, event_id=None), now=1.3)                         # nothing to claim
    assert sent.late == []
    q.worker_up()
    assert sent.late == [["Ev1", "Ev2", "Ev3"]]
    q.worker_up()                                                     # once
    assert len(sent.late) == 1


def test_the_ids_kept_for_a_late_claim_are_bounded(q, sent):
    q.worker_down(ClaimsDown("refused"))
    for n in range(UNCHECKED_KEPT + 5):
        q.admit(event(n), now=0.0)
    q.worker_up()
    [late] = sent.late
    assert len(late) == UNCHECKED_KEPT and late[-1] == f"Ev{UNCHECKED_KEPT + 4}"


def test_flush_hands_over_everything_waiting(q, sent):
    q.admit(event(1), now=0.0)
    q.admit(event(2), now=0.0)
    q.answered(ClaimAnswer(sent.claims[1][0], False))
    assert q.flush() == [event(1)] and len(q) == 0
    assert q.answered(ClaimAnswer(sent.claims[0][0], True)) == []


# -- the worker against PostgreSQL -----------------------------------------------------------

@pytest.fixture
def cluster_url(pg_schema_url):  # noqa: F811
    Store.open(pg_schema_url, lock_timeout=30).close()        # schema v3: rtmbot_events
    return pg_schema_url


class Posted:
    def __init__(self) -> None:
        self.items: queue.Queue = queue.Queue()
        self.seen: list = []

    def __call__(self, item) -> None:
        self.items.put(item)

    def next(self, kind: type, timeout: float = T):
        deadline = time.monotonic() + timeout
        while True:
            item = self.items.get(timeout=max(0.01, deadline - time.monotonic()))
            self.seen.append(item)
            if isinstance(item, kind):
                return item


@pytest.fixture
def workers():
    started: list[ClaimWorker] = []

    def start(url: str, node: str) -> tuple[ClaimWorker, Posted]:
        posted = Posted()
        worker = ClaimWorker(resolve_url(url), node, posted).start()
        started.append(worker)
        return worker, posted
    yield start
    for worker in started:
        worker.close()


def rows(url: str) -> dict[str, tuple[str, float]]:
    engine = create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            return {e: (n, s) for e, n, s in conn.execute(text("SELECT event_id, node, seen_at FROM rtmbot_events"))}
    finally:
        engine.dispose()


def two_nodes(url: str, workers) -> tuple[ClaimWorker, Posted, ClaimWorker, Posted]:
    """Workers of node-a and node-b, both connected."""
    a, posted_a = workers(url, "node-a")
    b, posted_b = workers(url, "node-b")
    posted_a.next(ClaimsUp)
    posted_b.next(ClaimsUp)
    return a, posted_a, b, posted_b


def test_one_event_id_is_taken_by_exactly_one_node(cluster_url, workers):
    a, posted_a, b, posted_b = two_nodes(cluster_url, workers)
    a.claim(1, "EvSAME")
    assert posted_a.next(ClaimAnswer) == ClaimAnswer(1, True)
    b.claim(7, "EvSAME")
    assert posted_b.next(ClaimAnswer) == ClaimAnswer(7, False)
    a.claim(2, "EvSAME")                  # its own earlier claim (a node resumed after SIGSTOP)
    assert posted_a.next(ClaimAnswer) == ClaimAnswer(2, False)
    b.claim(8, "EvOTHER")
    assert posted_b.next(ClaimAnswer) == ClaimAnswer(8, True)
    found = rows(cluster_url)
    assert {e: n for e, (n, _) in found.items()} == {"EvSAME": "node-a", "EvOTHER": "node-b"}
    assert all(abs(s - time.time()) < 600 for _, s in found.values())     # Unix seconds (PostgreSQL's clock)


def test_a_late_claim_writes_the_ids_and_leaves_another_nodes_alone(cluster_url, workers):
    a, posted_a, b, posted_b = two_nodes(cluster_url, workers)
    b.claim(1, "EvB")
    posted_b.next(ClaimAnswer)
    a.late(["EvA1", "EvB", "EvA2"])              # handled unchecked by node-a during an outage
    wait_until(lambda: {"EvA1", "EvA2"} <= set(rows(cluster_url)), T, "the late claims written")
    assert {e: n for e, (n, _) in rows(cluster_url).items()} == {"EvA1": "node-a", "EvA2": "node-a", "EvB": "node-b"}
    b.claim(2, "EvA1")                           # Slack's retry of it, on another node
    assert posted_b.next(ClaimAnswer) == ClaimAnswer(2, False)


def purging(url: str, workers, rows_sql: str) -> tuple[ClaimWorker, Posted]:
    """Rows inserted (`rows_sql`, `:age` an age past KEEP_FOR), then a worker started: it purges at once."""
    engine = create_engine(resolve_url(url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO rtmbot_events " + rows_sql), {"age": KEEP_FOR + 60})
    engine.dispose()
    worker, posted = workers(url, "node-a")
    posted.next(ClaimsUp)
    return worker, posted


def test_rows_older_than_an_hour_are_deleted_by_any_node(cluster_url, workers):
    worker, posted = purging(cluster_url, workers, "VALUES ('EvOLD', 'gone', extract(epoch from now()) - :age), "
                                                   "('EvNEW', 'gone', extract(epoch from now()) - 60)")
    wait_until(lambda: "EvOLD" not in rows(cluster_url), T, "the old row deleted")
    assert "EvNEW" in rows(cluster_url)
    worker.claim(1, "EvOLD")              # forgotten: a very late retry is handled again
    assert posted.next(ClaimAnswer) == ClaimAnswer(1, True)


def test_a_backlog_of_old_rows_is_purged_in_batches_one_after_another(cluster_url, workers, monkeypatch):
    monkeypatch.setattr(claims_module, "PURGE_BATCH", 2)
    purging(cluster_url, workers, "SELECT 'EvOLD' || n, 'gone', extract(epoch from now()) - :age "
                                  "FROM generate_series(1, 5) AS n")
    # (all five within T, less than PURGE_EVERY: the batches after a full one come a second apart)
    wait_until(lambda: not rows(cluster_url), T, "every old row deleted, two at a time")


def test_a_purge_skips_rows_another_node_is_deleting_and_never_opens_the_breaker(cluster_url, workers):
    """Every node purges once a minute: one waiting on another's row locks must not run into
    its statement_timeout, which took the worker down and sent the next events unchecked."""
    engine = create_engine(resolve_url(cluster_url))
    try:
        with engine.connect() as other:            # another node's purge, in the middle of its DELETE
            other.execute(text("INSERT INTO rtmbot_events VALUES ('EvOLD', 'gone', extract(epoch from now()) - :age),"
                               " ('EvOLD2', 'gone', extract(epoch from now()) - :age)"), {"age": KEEP_FOR + 60})
            other.commit()
            other.execute(text("SELECT 1 FROM rtmbot_events WHERE event_id = 'EvOLD' FOR UPDATE"))
            worker, posted = workers(cluster_url, "node-a")          # purges at once
            posted.next(ClaimsUp)
            wait_until(lambda: "EvOLD2" not in rows(cluster_url), T, "the unlocked old row deleted")
            worker.claim(1, "EvNEW")
            assert posted.next(ClaimAnswer) == ClaimAnswer(1, True)
            assert not [item for item in posted.seen if isinstance(item, ClaimsDown)]
            other.rollback()
    finally:
        engine.dispose()


def test_without_the_table_claims_go_unchecked_and_resume_once_it_is_there(pg_schema_url, workers):  # noqa: F811
    worker, posted = workers(pg_schema_url, "node-a")       # the store never migrated this schema yet
    down = posted.next(ClaimsDown)
    assert "rtmbot_events" in down.error
    started = time.monotonic()
    worker.claim(1, "Ev1")
    assert posted.next(ClaimAnswer) == ClaimAnswer(1, None, "PostgreSQL unreachable")
    assert time.monotonic() - started < T        # answered from the breaker, not after a timeout
    Store.open(pg_schema_url, lock_timeout=30).close()
    posted.next(ClaimsUp)                        # its retry every RETRY_EVERY reached the table
    worker.claim(2, "Ev2")
    assert posted.next(ClaimAnswer) == ClaimAnswer(2, True)


def test_a_server_that_is_not_there_is_reported_down_at_start(workers):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]               # nothing listens on it once closed
    worker, posted = workers(f"postgresql://postgres@127.0.0.1:{port}/nothing", "node-a")
    assert "OperationalError" in posted.next(ClaimsDown).error
    worker.claim(1, "Ev1")
    assert posted.next(ClaimAnswer).first is None


def test_the_engine_fails_fast(postgres_url):  # noqa: F811
    engine = claims_engine(resolve_url(postgres_url + "?options=-csearch_path%3Dx"))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "1s"
            assert conn.exec_driver_sql("SHOW search_path").scalar() == "x"
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
        assert engine.pool.size() == 1
    finally:
        engine.dispose()


def test_the_coordinators_engine_keeps_the_urls_server_options(postgres_url):  # noqa: F811
    """A STORE_URL's `options` (a schema of the bot's own: -csearch_path) hold for the
    cluster's own connections too, or heartbeat and lease go to another schema's tables
    than the outbox's (its rows then "belong to another process")."""
    from rtmbotd.cluster.coordinator import STATEMENT_TIMEOUT, make_engine
    engine = make_engine(resolve_url(postgres_url + "?options=-csearch_path%3Dx"))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW search_path").scalar() == "x"
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == f"{STATEMENT_TIMEOUT:g}s"
    finally:
        engine.dispose()


def test_event_claims_wire_the_queue_to_its_worker(cluster_url):
    posted = Posted()
    claims = EventClaims(resolve_url(cluster_url), "node-a", posted)
    try:
        assert claims.handle(posted.next(ClaimsUp)) == []
        assert claims.admit(event(1), now=time.monotonic()) == []
        assert claims.handle(posted.next(ClaimAnswer)) == [event(1)]
        assert claims.admit(event(1), now=time.monotonic()) == []        # the same event_id once more
        assert claims.handle(posted.next(ClaimAnswer)) == []
    finally:
        claims.close()


def test_a_hung_server_costs_one_timeout_then_claims_resume(cluster_url):
    """The claims connection's backend SIGSTOPped (a stalled server): the event goes unchecked
    after the timeout, the next ones at once; resumed, the worker reports back."""
    posted = Posted()
    node = "hung-" + uuid.uuid4().hex[:8]
    claims = EventClaims(resolve_url(cluster_url), node, posted)
    admin = create_engine(resolve_url(cluster_url), isolation_level="AUTOCOMMIT")
    stopped: list[int] = []
    try:
        claims.handle(posted.next(ClaimsUp))
        with admin.connect() as conn:
            [pid] = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                                 {"name": "rtmbotd-claims " + node}).scalars().all()
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        now = time.monotonic()
        assert claims.admit(event(1), now) == []
        assert claims.tick(now + claims.timeout - 0.01) == []
        assert claims.tick(now + claims.timeout) == [event(1)]           # unchecked, not lost
        assert claims.problem is not None
        assert claims.admit(event(2), now + 1.1) == [event(2)]           # the breaker: no wait
        os.kill(pid, signal.SIGCONT)
        stopped.clear()
        deadline = time.monotonic() + T
        while claims.problem is not None:                                # the probe after the stall
            claims.handle(posted.items.get(timeout=max(0.01, deadline - time.monotonic())))
        assert claims.admit(event(3), time.monotonic()) == []
        while True:
            due = claims.handle(posted.next(ClaimAnswer))
            if due:
                assert due == [event(3)]
                break
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        claims.close()
        admin.dispose()
