"""The cluster core below the process: fencing on an injected clock, the lease and name
lock on a real PostgreSQL (the cluster tests' own server, see tests/e2e/cluster_harness.py),
the scheduler carrying on another node's job runs."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from rtmbotd.cluster import registry
from rtmbotd.cluster.coordinator import ClusterState, Coordinator, DuplicateNodeError, JobRuns, make_engine
from rtmbotd.cluster.fencing import valid_until
from rtmbotd.cluster.registry import NodeInfo
from rtmbotd.cluster.timing import LEASE_DEFER, LEASE_TTL, NODE_TTL
from rtmbotd.runtime.scheduler import Scheduler
from rtmbotd.store import Store
from rtmbotd.store.url import resolve_url
from rtmbotd.testing.waiting import wait_until
from tests.e2e.cluster_harness import PgServer


# -- fencing: pure, on an injected clock --------------------------------------------------------------


def test_a_belief_lapses_at_send_time_plus_what_the_server_granted():
    assert valid_until(100.0, 6.0) == 106.0
    assert valid_until(100.0, None) == 100.0 and valid_until(100.0, -1.0) == 100.0


def test_a_leader_leads_only_inside_its_lease_and_its_own_heartbeat():
    state = ClusterState("leader", "n1", 3, lease_until=106.0, node_until=105.0)
    assert state.leading(104.9)
    assert not state.leading(105.0)          # nobody could call us dead before: past it, someone may
    state = ClusterState("leader", "n1", 3, lease_until=104.0, node_until=110.0)
    assert not state.leading(104.0)          # a process resumed after SIGSTOP: the lease is gone
    assert not ClusterState("follower", "n2", 3, 200.0, 200.0).leading(100.0)


def test_a_job_runs_only_on_a_valid_lease_and_its_outputs_need_the_same_epoch():
    from rtmbotd.cluster.node import ClusterNode
    node = ClusterNode.__new__(ClusterNode)

    class Daemon:
        cluster_state = ClusterState("leader", "n1", 7, lease_until=106.0, node_until=106.0)
    node.daemon = Daemon()
    assert node.jobs_gate(105.0) == 7
    assert node.jobs_gate(106.5) is None
    assert not node.job_fenced(7, 105.0)
    assert node.job_fenced(7, 106.5)          # ran under a lease that lapsed
    Daemon.cluster_state = ClusterState("leader", "n1", 8, lease_until=120.0, node_until=120.0)
    assert node.job_fenced(7, 110.0)          # ran under epoch 7; the lease is another holding now
    assert not node.job_fenced(None, 110.0)   # not a job


def test_a_queued_job_output_goes_only_under_its_lease_and_is_dropped_once_it_is_gone():
    from rtmbotd.cluster.node import ClusterNode
    from rtmbotd.outbox.queue import Message
    node = ClusterNode.__new__(ClusterNode)
    node._job_outputs = {}
    dropped = []

    class Journal:
        queued = {1: ["part1"], 2: ["part2"]}
        holds = queued.__contains__

        def drop(self, seqs):
            return [p for seq in seqs for p in self.queued.pop(seq, [])]

    class Outbox:
        discard = dropped.extend

    class Daemon:
        cluster_state = ClusterState("leader", "n1", 7, lease_until=106.0, node_until=106.0)
        journal, outbox = Journal(), Outbox()
    node.daemon = Daemon()
    fence = node.fence(lambda msg, now: True)
    node.job_output(1, 7)
    job, reply = Message(1, "C1", "tick", "ticker", tag=1), Message(2, "C1", "hi", "echo", tag=2)
    assert fence(job, 105.0) and fence(reply, 105.0)
    assert not fence(job, 106.5) and fence(reply, 106.5)        # resumed after SIGSTOP: the lease lapsed
    lapsed = ClusterState("follower", None, 0, 107.0, 107.0, problem="PostgreSQL unreachable (x)")
    node._drop_fenced_outputs(lapsed, 107.0)                     # unknown: held, not dropped
    assert dropped == [] and node._job_outputs == {1: 7}
    renewed = ClusterState("leader", "n1", 7, lease_until=114.0, node_until=114.0)
    Daemon.cluster_state = renewed
    node._drop_fenced_outputs(renewed, 108.0)
    assert fence(job, 108.0) and dropped == []                 # the same lease again: it goes
    Daemon.cluster_state = follows = ClusterState("follower", "n2", 0, 109.0, 115.0)
    node._drop_fenced_outputs(follows, 109.0)
    assert dropped == ["part1"] and node._job_outputs == {}      # another leads: dropped, never sent


def test_status_words_name_the_own_role_first_and_follow_a_lapse_between_rounds():
    from rtmbotd.cluster.node import ClusterNode
    node = ClusterNode.__new__(ClusterNode)
    node.name = "n1"

    class Coordinator:
        problem = None

    class Daemon:
        cluster_state = None
    node.daemon, node.coordinator = Daemon(), Coordinator()
    assert node.words(100.0) == "follower (joining the cluster)"
    Daemon.cluster_state = ClusterState("leader", "n1", 2, lease_until=106.0, node_until=106.0)
    assert node.words(105.0) == "leader"
    assert node.next_deadline(105.0) == 106.0            # the loop wakes when the lease lapses
    assert node.words(106.0) == "follower (no leader yet)"
    assert node.next_deadline(106.0) is None              # lapsed: nothing to wake for (no busy loop)
    Daemon.cluster_state = ClusterState("follower", "n2", 3, 100.0, 106.0, warning="plugins differ (...)")
    assert node.words(101.0) == "follower (leader: n2); plugins differ (...)"
    Daemon.cluster_state = ClusterState("follower", None, 0, 100.0, 100.0, problem="PostgreSQL unreachable (x)")
    assert node.words(101.0) == "follower (PostgreSQL unreachable (x))"


def test_a_new_leader_carries_the_cluster_schedule_on(monkeypatch):
    """JobRuns' ages (by PostgreSQL's clock, measured at a local monotonic time) become
    the scheduler's wall times: each job runs one interval after it last ran anywhere."""
    from rtmbotd.cluster import node as node_module
    from rtmbotd.cluster.node import ClusterNode
    mono, wall = [1000.0], [50_000.0]
    monkeypatch.setattr(node_module.time, "time", lambda: wall[0])
    scheduler = Scheduler(lambda: mono[0], lambda: wall[0])
    scheduler.add("a", 60, "A", name="p/every_minute")
    scheduler.add("b", 10, "B", name="p/often")
    node = ClusterNode.__new__(ClusterNode)

    class Host:
        pass

    class Daemon:
        clock = staticmethod(lambda: mono[0])
        host = Host()
    Daemon.host.scheduler = scheduler
    node.daemon = Daemon()
    # Measured 2 s ago: every_minute ran 8 s before that (10 s ago now), often 98 s before.
    node.handle_job_runs(JobRuns({"p/every_minute": 8.0, "p/often": 98.0}, at=998.0))
    assert [e.key for e in scheduler.due(1000.0)] == ["b"]        # overdue: at once, once
    mono[0], wall[0] = 1049.9, 50_049.9
    assert [e.key for e in scheduler.due(1049.9)] == []
    mono[0], wall[0] = 1050.0, 50_050.0
    assert [e.key for e in scheduler.due(1050.0)] == ["a"]        # 60 s after it last ran elsewhere


# -- on PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg():
    return PgServer.from_env()


@pytest.fixture
def url(pg):
    u = pg.new_database()
    Store.open(u).close()               # the schema, as the daemon's store makes it
    return resolve_url(u)


def info(name: str, **kw) -> NodeInfo:
    return NodeInfo(name, "box", 4242, "0.1.0", 3, **kw)


def test_the_name_lock_refuses_a_second_live_holder_and_goes_with_its_connection(url):
    engine = make_engine(url)
    other = make_engine(url)
    try:
        with engine.connect() as a:
            assert registry.lock_name(a, "n1")
            with other.connect() as b:
                assert not registry.lock_name(b, "n1")
                assert registry.lock_name(b, "n2")
            a.invalidate()                   # the holder's connection is gone (kill -9)
        with other.connect() as b:           # its backend ends (and frees the lock) a moment later
            wait_until(lambda: registry.lock_name(b, "n1"), 30, "the lock freed with its connection")
    finally:
        engine.dispose()
        other.dispose()


def test_the_lease_is_taken_only_when_lapsed_and_each_new_holder_gets_a_new_epoch(url):
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            first = registry.take_lease(conn, "n1", "s1")
            assert first.holder == "n1" and 0 < first.remaining <= LEASE_TTL
            assert registry.take_lease(conn, "n2", "s2") == registry.LeaseRound("n1", first.epoch, None)
            renewed = registry.take_lease(conn, "n1", "s1")
            assert renewed.epoch == first.epoch
            conn.execute(text("UPDATE rtmbot_lease SET expires_at = expires_at - 60"))   # n1 hung past it
            second = registry.take_lease(conn, "n2", "s2")
            assert (second.holder, second.epoch) == ("n2", first.epoch + 1)
            assert registry.take_lease(conn, "n1", "s1").holder == "n2"     # resumed: a follower
            registry.release(conn, "n2", "s2", stopped=False)
            assert registry.take_lease(conn, "n3", "s3").epoch == first.epoch + 2   # at once after a release
    finally:
        engine.dispose()


def test_a_lapsed_lease_goes_to_the_older_live_node_first_a_newer_one_takes_it_after_the_deferral(url):
    engine = make_engine(url)
    lapse = "UPDATE rtmbot_lease SET expires_at = extract(epoch from clock_timestamp()) - :ago, session = :old"
    try:
        with engine.connect() as conn:
            registry.register(conn, info("n1"), "s1")
            registry.register(conn, info("n2"), "s0")
            assert registry.take_lease(conn, "n2", "s0").holder == "n2"
            registry.register(conn, info("n2"), "s2")        # n2 killed -9 and restarted at once
            conn.execute(text("UPDATE rtmbot_nodes SET started_at = started_at + 100 WHERE name = 'n2'"))
            conn.execute(text(lapse), {"ago": 0.1, "old": "s0"})
            assert registry.take_lease(conn, "n2", "s2") == registry.LeaseRound(None, 1, None)   # n1 is older
            taken = registry.take_lease(conn, "n1", "s1")
            assert (taken.holder, taken.epoch) == ("n1", 2)
            registry.release(conn, "n1", "s1", stopped=False)  # the holder resigning: n2 need not wait
            assert registry.take_lease(conn, "n2", "s2").holder == "n2"
            conn.execute(text(lapse), {"ago": LEASE_DEFER + 0.5, "old": "s9"})   # n1 live but not taking it
            assert registry.take_lease(conn, "n2", "s2").epoch == 4                # nobody waits forever
    finally:
        engine.dispose()


def test_a_heartbeat_finds_its_session_replaced(url):
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert 0 < registry.register(conn, info("n1"), "s1") <= NODE_TTL
            assert registry.heartbeat(conn, info("n1"), "s1", "follower") is not None
            registry.register(conn, info("n1"), "s2")
            assert registry.heartbeat(conn, info("n1"), "s1", "follower") is None
    finally:
        engine.dispose()


def test_a_coordinator_round_on_an_injected_clock(url):
    posted = []
    clock = [500.0]
    a = Coordinator(make_engine(url), info("n1", plugins=("x", "y")), posted.append, clock=lambda: clock[0])
    assert a.register()
    a._round(clock[0])
    runs, state = posted[-2:]
    assert isinstance(runs, JobRuns) and runs.at == 500.0
    assert state.role == "leader" and state.leading(501.0)
    assert not state.leading(500.0 + LEASE_TTL)          # resumed past the lease: acts on nothing
    b = Coordinator(make_engine(url), info("n1"), posted.append, clock=lambda: clock[0])
    b.name_wait = 0.5           # `a` heartbeats only when this test says: refused before it looks dead
    with pytest.raises(DuplicateNodeError, match=r"NODE_NAME n1 is in use by another live node \(host box, pid 4242\)"):
        b.register()
    c = Coordinator(make_engine(url), info("n2", plugins=("x", "z")), posted.append, clock=lambda: clock[0])
    assert c.register()
    c._round(clock[0])
    state = posted[-1]
    assert (state.role, state.leader) == ("follower", "n1")
    assert {m.name for m in state.members} == {"n1", "n2"}
    assert state.warning == "plugins differ from node n1's (only here: z; only there: y)"
    a.stop()
    c._round(clock[0])
    assert (posted[-1].role, posted[-1].leader) == ("leader", "n2")     # a clean stop hands over at once
    c.stop()


# -- rolling upgrade: an incompatible migration waits for the older nodes ----------------------------


def test_an_incompatible_migration_waits_while_older_nodes_live(url):
    from rtmbotd.store.errors import StoreSchemaWaitError
    from rtmbotd.store.lazy import RetryingStore
    from rtmbotd.store.schema import MIGRATIONS, Migration, newest
    engine = make_engine(url)
    nxt = newest() + 1
    applied = []
    breaking = MIGRATIONS + (Migration(nxt, "rework the outbox", lambda conn: applied.append(nxt)),)
    try:
        with engine.connect() as conn:
            registry.register(conn, info("old1"), "s1")          # a live node of this (older) schema
            with pytest.raises(StoreSchemaWaitError, match=f"waiting for nodes of schema {newest()} to stop "
                                                           rf"\(old1\) before upgrading to version {nxt}"):
                Store.open(url, migrations=breaking)
            assert applied == []
            try:
                Store.open(url, migrations=breaking)
            except StoreSchemaWaitError as exc:           # the daemon waits for it and says so
                retrying = RetryingStore(lambda: Store.open(url, migrations=breaking), exc)
                assert retrying.problem.startswith(f"store: waiting for nodes of schema {newest()} to stop")
                retrying.close()
            registry.release(conn, "old1", "s1", stopped=True)
            with Store.open(url, migrations=breaking) as store:
                assert applied == [nxt]
                with store.engine.connect() as c:
                    assert c.execute(text("SELECT value FROM rtmbot_meta WHERE name = 'compatible_from'")).scalar() \
                        == str(nxt)
    finally:
        engine.dispose()
