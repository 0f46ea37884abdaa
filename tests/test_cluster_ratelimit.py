"""The cluster-wide per-channel rate limit: GCRA slots in rtmbot_rate on PostgreSQL's clock."""
from __future__ import annotations

import math
import queue

import pytest
from sqlalchemy import create_engine, text

from rtmbotd.cluster.ratelimit import FALLBACK_FOR, SharedRate, SlotReserved, slot_wait
from rtmbotd.outbox import RATE_MARGIN, Outbox
from rtmbotd.store import Store
from rtmbotd.store.url import resolve_url
from tests.test_store import pg_schema_url, postgres_url  # noqa: F401  (fixtures)


def test_slot_wait_is_gcra_with_a_burst() -> None:
    # rate 2/s (interval 0.5), burst 3: tolerance 1.0; the 1st..3rd reservation at once, then 0.5 apart.
    now = 100.0
    tats = [now + 0.5 * k for k in range(1, 7)]
    assert [slot_wait(t, now, 2.0, 3) for t in tats] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5]


@pytest.fixture
def schema(pg_schema_url: str) -> str:  # noqa: F811
    Store.open(pg_schema_url).close()          # creates the tables
    return pg_schema_url


def engine_of(url: str):  # noqa: ANN201 - the test schema's search_path kept (make_engine sets its own options)
    return create_engine(resolve_url(url), pool_size=1, max_overflow=0, isolation_level="AUTOCOMMIT")


def db_now(url: str) -> float:
    engine = engine_of(url)
    try:
        with engine.connect() as conn:
            return float(conn.execute(text("SELECT extract(epoch from clock_timestamp())")).scalar())
    finally:
        engine.dispose()


def test_three_nodes_share_one_schedule_per_channel(schema: str) -> None:
    """Reservations from three SharedRate objects interleave on one schedule: together they
    keep the rate and the burst (by the server's clock), and other channels are apart."""
    clock = [0.0]
    nodes = [SharedRate(schema, lambda item: None, clock=lambda: clock[0], engine=engine_of(schema)) for _ in range(3)]
    start = db_now(schema)
    waits = [nodes[k % 3].reserve("C1", 10.0, 2).at for k in range(9)]
    took = db_now(schema) - start
    # Slots by the server's clock: 2 at once, then 0.1 s apart; `at` is on each node's own
    # (here frozen) clock, so it is the wait from the answer: never less than the schedule's.
    for k, at in enumerate(waits):
        assert at >= max(0.0, 0.1 * (k - 1) - took) - 1e-6
    assert waits[-1] == pytest.approx(0.7, abs=took + 0.01)
    assert nodes[0].reserve("C2", 10.0, 2).at == 0.0              # another channel: its own schedule
    for node in nodes:
        node.close()


def test_the_outbox_waits_for_its_slot_and_sends_at_it() -> None:
    asked: queue.SimpleQueue = queue.SimpleQueue()
    shared = SharedRate("postgresql://unused/", lambda item: None)
    shared.ask = lambda channel, rate, burst: asked.put((channel, rate, burst))   # type: ignore[method-assign]
    box = Outbox(1, 4)
    box.limiter_for = shared.limiter_for
    box.enqueue("C1", "a", "p", 0.0)
    box.enqueue("C1", "b", "p", 0.0)
    assert box.ready(0.0, socket=True, web=True) == []             # no slot yet: asked for one
    assert asked.get_nowait() == ("C1", 1 * RATE_MARGIN, 4) and asked.empty()
    assert box.next_deadline(0.0, socket=True, web=True) is None   # the answer wakes the loop
    shared.granted(SlotReserved("C1", 0.5))
    assert box.next_deadline(0.0, socket=True, web=True) == 0.5
    assert [m.text for m, _ in box.ready(0.5, socket=True, web=True)] == ["a"]
    assert asked.get_nowait()[0] == "C1"                           # the next slot is asked for at once


def test_an_unused_slot_lapses() -> None:
    shared = SharedRate("postgresql://unused/", lambda item: None)
    asks = []
    shared.ask = lambda channel, rate, burst: asks.append(channel)   # type: ignore[method-assign]
    slots = shared.limiter_for("C1", 0.0, 1.0, 4)
    shared.prefetch("C1")
    shared.granted(SlotReserved("C1", 1.0))
    assert slots.next_allowed(1.5) == 1.0
    assert slots.next_allowed(2.5) == math.inf and asks == ["C1", "C1"]   # too old: a fresh one


def test_postgresql_unreachable_means_the_local_share() -> None:
    got: list[SlotReserved] = []
    shared = SharedRate("postgresql://postgres@127.0.0.1:1/none", got.append, clock=lambda: 50.0)
    item = shared.reserve("C1", 3.0, 4)
    assert item.at is None and item.fallback_until == 50.0 + FALLBACK_FOR
    shared.set_members(3)
    slots = shared.limiter_for("C1", 50.0, 3.0, 4)
    shared.granted(item)
    # Its share: 1/s with a burst of max(1, 4 // 3) = 1, starting empty.
    assert slots.next_allowed(50.0) == pytest.approx(51.0)
    slots.take(51.0)
    assert slots.next_allowed(51.0) == pytest.approx(52.0)
    assert slots.next_allowed(50.0 + FALLBACK_FOR) == math.inf      # the database is tried again


def test_postgresql_failing_mid_burst_never_lets_the_nodes_exceed_the_limit_together() -> None:
    """Three nodes spent the shared burst; PostgreSQL fails at once: their local shares
    together stay within RATE_LIMIT / RATE_BURST (full buckets would send another burst)."""
    rate, burst, nodes = 1.0, 4, 3
    sent = [0.0] * burst                                           # the shared schedule's burst, at t=0
    failed = SlotReserved("C1", None, 0.0 + 60.0)
    limiters = []
    for _ in range(nodes):
        shared = SharedRate("postgresql://unused/", lambda item: None)
        shared.ask = lambda channel, rate, burst: None             # type: ignore[method-assign]
        shared.set_members(nodes)
        slots = shared.limiter_for("C1", 0.0, rate, burst)
        shared.granted(failed)
        limiters.append(slots)
    for step in range(1, 2001):                                    # 20 s in steps of 10 ms
        now = step / 100
        for slots in limiters:
            if slots.next_allowed(now) <= now:
                slots.take(now)
                sent.append(now)
    assert len(sent) > burst + 10                                  # the share does send
    for i, at in enumerate(sent):                                  # a token bucket of rate, burst holds
        assert i + 1 <= burst + at * rate + 1e-9, (i, at, sent[:12])


def test_a_failed_round_keeps_the_last_member_count_for_the_local_share() -> None:
    """While PostgreSQL is unreachable the coordinator's state lists no members: each
    node must keep dividing the limit by the last count, not take all of it."""
    from types import SimpleNamespace

    from rtmbotd.cluster.coordinator import ClusterState, Member
    from rtmbotd.cluster.outbox import SharedOutbox

    shared = SharedOutbox.__new__(SharedOutbox)
    shared.name = "n1"
    shared.daemon = SimpleNamespace(journal=SimpleNamespace(session="s1", node_until=0.0))
    shared.rate = SharedRate("postgresql://unused/", lambda item: None)
    members = tuple(Member(f"n{i}", f"s{i}") for i in (1, 2, 3))
    shared.handle_state(ClusterState("follower", "n2", 0, 0.0, 5.0, members))
    assert shared.rate.members == 3
    shared.handle_state(ClusterState("follower", None, 0, 6.0, 6.0, (), "PostgreSQL unreachable (x), retrying"))
    assert shared.rate.members == 3
