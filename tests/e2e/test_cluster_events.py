"""Socket Mode events in a cluster: three real rtmbotd nodes (CLUSTER, distinct NODE_NAMEs)
on one fake Slack and a real PostgreSQL; every event is answered once cluster-wide, also
when Slack retries it on another node's connection, a node is SIGSTOPped holding it, or
PostgreSQL is stopped and started again.

The nodes and the server come from tests/e2e/cluster_harness.py: the cluster tests' own
PostgreSQL server (`pg`), a fresh database per test, so stopping it disturbs no other test.
"""
from __future__ import annotations

import os
import signal
from collections import Counter

import pytest

from tests.e2e.cluster_harness import Cluster
from tests.e2e.harness import wait_until
from tests.e2e.test_cluster_core import pg  # noqa: F401  (the cluster tests' PostgreSQL server)

NODES = ("n1", "n2", "n3")
T = 60.0
ECHO = """
outputs = []

def process_message(data):
    text = data.get("text", "")
    if text.startswith("echo "):
        outputs.append([data["channel"], "%s: %s" % (config["node"], text[5:])])
"""
TAKEN = r"already handled in the cluster"


class EventsCluster(Cluster):
    """The harness's cluster of echo nodes, with what these tests read of it."""

    def __init__(self, tmp_path, fake, pg) -> None:  # noqa: F811
        super().__init__(tmp_path, fake, pg.new_database(), n=len(NODES), mode="socket_mode", plugins={"echo": ECHO},
                         settings=lambda name: {"DEBUG": True, "echo": {"node": name}})
        self.fake, self.pg = fake, pg

    def start(self) -> "EventsCluster":
        super().start()
        self.fake.wait_for_connections(len(self.nodes), "socket_mode", timeout=T)
        return self

    def answers(self) -> list[str]:
        return [m["text"] for m in self.fake.sent_messages()]

    def taken(self) -> int:
        """Events some node read and left alone: another node (or an earlier try) had them."""
        return sum(node.log().count(TAKEN) for node in self.nodes)

    def alive(self) -> bool:
        return all(node.alive() for node in self.nodes)

    def claimed(self) -> dict[str, str]:
        return dict(self.pg.query(self.store_url, "SELECT event_id, node FROM rtmbot_events"))


@pytest.fixture
def cluster(tmp_path, fake, pg):  # noqa: F811
    fake.echo_own_messages = False        # only the users' events travel (the bot's echoes are claimed too)
    nodes = EventsCluster(tmp_path, fake, pg)
    yield nodes
    pg.start()           # a test that stopped it leaves it running for the next
    nodes.stop()
    for node in nodes.nodes:
        if node.proc is not None and node.proc.returncode not in (0, None):
            print(f"--- {node.name} (exit {node.proc.returncode}):\n{node.log()[-5000:]}")


def event_ids(fake, text: str) -> list[str]:
    return [e["payload"]["event_id"] for e in fake.envelopes_sent()
            if e["retry_attempt"] == 0 and e["payload"]["event"].get("text") == text]


def assert_answered_once(answers: list[str], texts: list[str]) -> Counter:
    """Each of `texts` answered exactly once (by whichever node); the nodes that answered."""
    by_text = Counter(a.partition(": ")[2] for a in answers)
    assert {t: by_text[t] for t in texts} == {t: 1 for t in texts}, answers
    assert sum(by_text.values()) == len(texts), answers
    return Counter(a.partition(": ")[0] for a in answers)


def test_events_spread_over_the_nodes_and_retries_on_other_nodes_are_answered_once(cluster, fake):
    cluster.start()
    texts = [f"hello {n}" for n in range(9)]
    for t in texts:
        fake.message("echo " + t)
    fake.wait_for_messages(len(texts), timeout=T)
    by_node = assert_answered_once(cluster.answers(), texts)
    assert set(by_node) == set(NODES)                  # active-active: each node handled its share
    assert {c for d in fake.deliveries() for c in [d["connection"]]} == set(fake.connection_ids())

    # Slack retries each event (retry_attempt 1) on another node's connection: read, acked, not answered.
    retried = [event_ids(fake, "echo " + t)[0] for t in texts]
    for event_id in retried:
        fake.redeliver(event_id, reason="timeout")
    wait_until(lambda: cluster.taken() >= len(retried), T, "every retry found claimed")
    for event_id in retried:
        first, retry = fake.deliveries(event_id)
        assert retry["retry_attempt"] == 1 and retry["connection"] != first["connection"]
    wait_until(lambda: not fake.unacked(), T, "every envelope acked")
    fake.message("echo after")                          # one more, to see nothing else was coming
    fake.wait_for_messages(len(texts) + 1, timeout=T)
    assert_answered_once(cluster.answers(), texts + ["after"])
    claimed = cluster.claimed()
    assert set(retried) <= set(claimed) and set(claimed.values()) <= set(NODES)
    assert cluster.alive()


def test_a_node_stopped_holding_an_envelope_does_not_answer_it_after_the_retry(cluster, fake):
    cluster.start()
    stopped = cluster["n1"]
    fake.ack_timeout = 2.0
    stopped.signal(signal.SIGSTOP)
    texts = [f"while stopped {n}" for n in range(3)]     # round robin: one of them reaches node1
    for t in texts:
        fake.message("echo " + t)
    fake.wait_for_messages(len(texts), timeout=T)        # node1's one: retried on another node after 2 s
    [held] = [r for r in fake.redeliveries()]
    by_node = assert_answered_once(cluster.answers(), texts)
    assert "n1" not in by_node
    [held_event] = [d["event_id"] for d in fake.deliveries() if d["envelope_id"] == held["envelope_id"]]
    first, retry = fake.deliveries(held_event)
    assert (first["retry_attempt"], retry["retry_attempt"]) == (0, 1) and first["connection"] != retry["connection"]

    stopped.signal(signal.SIGCONT)                       # it reads the original now: acks it, finds it claimed
    wait_until(lambda: held["envelope_id"] in [a["envelope_id"] for a in fake.acks()], T, "the original acked")
    stopped.wait_log(TAKEN, timeout=T)
    fake.message("echo later")
    fake.wait_for_messages(len(texts) + 1, timeout=T)
    assert_answered_once(cluster.answers(), texts + ["later"])        # exactly one answer each in total
    assert cluster.alive()


def test_postgresql_stopped_events_are_still_answered_and_claims_resume_once_it_is_back(
        cluster, fake, pg):  # noqa: F811
    server = pg
    cluster.start()
    fake.message("echo before")
    fake.wait_for_messages(1, timeout=T)
    server.stop()
    try:
        texts = [f"no database {n}" for n in range(6)]
        for t in texts:
            fake.message("echo " + t)
        fake.wait_for_messages(1 + len(texts), timeout=T)         # unchecked, not lost
        for node in cluster.nodes:
            wait_until(lambda: any("event dedup off (PostgreSQL unreachable)" in s for s in node.notify.statuses()),
                       T, "STATUS says the events are not checked")
            assert node.log().count("event claims: PostgreSQL unreachable") <= 1     # once per outage
        assert cluster.alive()
    finally:
        server.start()
    for node in cluster.nodes:
        node.wait_log("event claims: PostgreSQL answers again", timeout=T)
    fake.message("echo back")
    fake.wait_for_messages(2 + len(texts), timeout=T)
    [back] = event_ids(fake, "echo back")
    wait_until(lambda: back in cluster.claimed(), T, "the claim written again")
    taken = cluster.taken()
    fake.redeliver(back)
    wait_until(lambda: cluster.taken() > taken, T, "the retry found claimed")
    assert_answered_once(cluster.answers(), ["before", *texts, "back"])

    # The events answered unchecked during the outage are claimed once it is back: Slack's
    # later retries of them (it retries for minutes) are not answered a second time.
    during = [event_ids(fake, "echo " + t)[0] for t in texts]
    wait_until(lambda: set(during) <= set(cluster.claimed()), T, "the outage's events claimed afterwards")
    taken = cluster.taken()
    for event_id in during:
        fake.redeliver(event_id)
    wait_until(lambda: cluster.taken() >= taken + len(during), T, "every late retry found claimed")
    fake.message("echo last")
    fake.wait_for_messages(3 + len(texts), timeout=T)
    assert_answered_once(cluster.answers(), ["before", *texts, "back", "last"])
    assert cluster.alive()
    for node in cluster.nodes:
        wait_until(lambda: "event dedup off" not in node.notify.statuses()[-1], T, "STATUS without it again")


def stall_claims(cluster: EventsCluster, names) -> list[int]:
    """SIGSTOP the server processes of the nodes' claims connections (a stalled database)."""
    wanted = ", ".join(f"'rtmbotd-claims {n}'" for n in names)
    pids = [pid for (pid,) in cluster.pg.query(cluster.store_url, "SELECT pid FROM pg_stat_activity WHERE "
                                               f"datname = current_database() AND application_name IN ({wanted})")]
    assert len(pids) == len(names), pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def resume(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


def test_an_event_acked_while_its_claim_is_out_is_answered_by_a_stopping_node(cluster, fake):
    cluster.nodes = cluster.nodes[:1]           # one node: n1
    cluster.start()
    node = cluster["n1"]
    pids = stall_claims(cluster, ["n1"])
    try:
        fake.message("echo just before the stop")
        wait_until(lambda: fake.acks() and not fake.unacked(), T, "the envelope acked")
        node.signal(signal.SIGTERM)                # before the claim's 1 s ran out
        fake.wait_for_messages(1, timeout=T)
        assert node.wait_exit(T) == 0
    finally:
        resume(pids)
    assert cluster.answers() == ["n1: just before the stop"]


def test_a_stalled_postgresql_costs_an_event_one_second_not_its_answer(cluster, fake):
    """The claims connections' server processes SIGSTOPped (a stalled database): each node
    answers unchecked after the 1 s wait, the events after that at once; continued, claims resume."""
    cluster.start()
    pids = stall_claims(cluster, NODES)
    try:
        texts = [f"stalled {n}" for n in range(6)]
        for t in texts:
            fake.message("echo " + t)
        fake.wait_for_messages(len(texts), timeout=T)
        assert_answered_once(cluster.answers(), texts)
        for node in cluster.nodes:
            node.wait_log(r"event claims: PostgreSQL unreachable \(no answer within 1 s\)", timeout=T)
    finally:
        resume(pids)
    for node in cluster.nodes:
        node.wait_log("event claims: PostgreSQL answers again", timeout=T)
    fake.message("echo resumed")
    fake.wait_for_messages(len(texts) + 1, timeout=T)
    [resumed] = event_ids(fake, "echo resumed")
    wait_until(lambda: resumed in cluster.claimed(), T, "claims written again")
    assert cluster.alive()


def test_rtm_claims_nothing_and_a_reload_to_socket_mode_starts_the_claims(fake, pg, tmp_path):  # noqa: F811
    """Over RTM only the leader connects: no claims thread or connection (nor an `event dedup
    off` in STATUS while PostgreSQL is away); a reload to Socket Mode starts them."""
    c = Cluster(tmp_path, fake, pg.new_database(), n=1, mode="rtm", plugins={"echo": ECHO},
                settings={"echo": {"node": "n1"}})
    try:
        node = c.start()["n1"]
        c.wait_leader()
        fake.wait_for_connections(1, "rtm", timeout=T)
        backends = f"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() " \
                   f"AND application_name = 'rtmbotd-claims n1'"
        assert node.say("echo over rtm") == ["n1: over rtm"]
        assert pg.query(c.store_url, backends)[0][0] == 0
        node.settings.update({"SLACK_APP_TOKEN": "xapp-e2e", "CONNECTION": "socket_mode"})
        node.write_config()
        node.signal(signal.SIGHUP)
        fake.wait_for_connections(1, "socket_mode", timeout=T)
        wait_until(lambda: pg.query(c.store_url, backends)[0][0] == 1, T, "the claims connection")
        fake.message("echo over socket mode")
        wait_until(lambda: "n1: over socket mode" in [m["text"] for m in fake.sent_messages()], T, "the answer")
        [event_id] = event_ids(fake, "echo over socket mode")
        wait_until(lambda: pg.query(c.store_url, f"SELECT node FROM rtmbot_events WHERE event_id = '{event_id}'")
                   == [("n1",)], T, "its claim")
    finally:
        c.stop()
