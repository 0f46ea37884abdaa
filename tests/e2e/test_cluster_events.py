"""Socket Mode events in a cluster: three real rtmbotd nodes (CLUSTER, distinct NODE_NAMEs)
on one fake Slack and a real PostgreSQL; every event is answered once cluster-wide, also
when Slack retries it on another node's connection, a node is SIGSTOPped holding it, or
PostgreSQL is stopped and started again.

(A minimal local helper starts the nodes; the cluster core's tests/e2e/cluster_harness.py
does the same for the leader tests.)
"""
from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from rtmbotd.store.url import resolve_url
from tests.e2e.harness import REPO, Rtmbotd, wait_until
from tests.test_store import pg_schema_url, postgres_url  # noqa: F401  (fixtures)

NODES = ("node1", "node2", "node3")
T = 60.0
ECHO = """
outputs = []

def process_message(data):
    text = data.get("text", "")
    if text.startswith("echo "):
        outputs.append([data["channel"], "%s: %s" % (config["node"], text[5:])])
"""
TAKEN = r"already handled in the cluster"


class Cluster:
    """Three nodes of one bot, each in its own folder with its own config and log."""

    def __init__(self, tmp_path: Path, fake, store_url: str) -> None:
        self.fake = fake
        self.store_url = store_url
        self.nodes: dict[str, Rtmbotd] = {}
        for name in NODES:
            folder = tmp_path / name
            folder.mkdir()
            self.nodes[name] = Rtmbotd(folder, fake, mode="socket_mode", plugins={"echo": ECHO}, settings={
                "CLUSTER": True, "NODE_NAME": name, "STORE_URL": store_url, "DEBUG": True, "echo": {"node": name}})

    def start(self) -> "Cluster":
        for node in self.nodes.values():
            node.start()
        self.fake.wait_for_connections(len(self.nodes), "socket_mode", timeout=T)
        return self

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)       # a stopped node cannot stop
            node.stop()

    def answers(self) -> list[str]:
        return [m["text"] for m in self.fake.sent_messages()]

    def taken(self) -> int:
        """Events some node read and left alone: another node (or an earlier try) had them."""
        return sum(node.log().count(TAKEN) for node in self.nodes.values())

    def alive(self) -> bool:
        return all(node.proc.poll() is None for node in self.nodes.values())

    def claimed(self) -> dict[str, str]:
        engine = create_engine(resolve_url(self.store_url))
        try:
            with engine.connect() as conn:
                return dict(conn.execute(text("SELECT event_id, node FROM rtmbot_events")).all())
        finally:
            engine.dispose()


@pytest.fixture
def cluster(tmp_path, fake, pg_schema_url):  # noqa: F811
    fake.echo_own_messages = False        # only the users' events travel (the bot's echoes are claimed too)
    nodes = Cluster(tmp_path, fake, pg_schema_url)
    yield nodes
    nodes.stop()
    for name, node in nodes.nodes.items():
        if node.proc is not None and node.proc.returncode not in (0, None):
            print(f"--- {name} ---\n{node.log()[-5000:]}")


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
    stopped = cluster.nodes["node1"]
    fake.ack_timeout = 2.0
    stopped.signal(signal.SIGSTOP)
    texts = [f"while stopped {n}" for n in range(3)]     # round robin: one of them reaches node1
    for t in texts:
        fake.message("echo " + t)
    fake.wait_for_messages(len(texts), timeout=T)        # node1's one: retried on another node after 2 s
    [held] = [r for r in fake.redeliveries()]
    by_node = assert_answered_once(cluster.answers(), texts)
    assert "node1" not in by_node
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


class PostgresServer:
    """The test PostgreSQL, stopped and started with scripts/postgres-test-server (its own data dir)."""

    def __init__(self, url: str) -> None:
        self.env = dict(os.environ, RTMBOTD_PG_PORT=str(make_url(url).port or 5432))

    def _run(self, *args: str) -> None:
        subprocess.run(["bash", str(REPO / "scripts" / "postgres-test-server"), *args], env=self.env,
                       check=True, capture_output=True, timeout=300)

    def stop(self) -> None:
        self._run("stop")

    def start(self) -> None:
        self._run()


def test_postgresql_stopped_events_are_still_answered_and_claims_resume_once_it_is_back(
        cluster, fake, postgres_url):  # noqa: F811
    server = PostgresServer(postgres_url)
    cluster.start()
    fake.message("echo before")
    fake.wait_for_messages(1, timeout=T)
    server.stop()
    try:
        texts = [f"no database {n}" for n in range(6)]
        for t in texts:
            fake.message("echo " + t)
        fake.wait_for_messages(1 + len(texts), timeout=T)         # unchecked, not lost
        for node in cluster.nodes.values():
            wait_until(lambda: any("event dedup off (PostgreSQL unreachable)" in s for s in node.notify.statuses()),
                       T, "STATUS says the events are not checked")
            assert node.log().count("event claims: PostgreSQL unreachable") <= 1     # once per outage
        assert cluster.alive()
    finally:
        server.start()
    for node in cluster.nodes.values():
        node.wait_log("event claims: PostgreSQL answers again", timeout=T)
    fake.message("echo back")
    fake.wait_for_messages(2 + len(texts), timeout=T)
    [back] = event_ids(fake, "echo back")
    wait_until(lambda: back in cluster.claimed(), T, "the claim written again")
    taken = cluster.taken()
    fake.redeliver(back)
    wait_until(lambda: cluster.taken() > taken, T, "the retry found claimed")
    assert_answered_once(cluster.answers(), ["before", *texts, "back"])
    assert cluster.alive()
    for node in cluster.nodes.values():
        wait_until(lambda: "event dedup off" not in node.notify.statuses()[-1], T, "STATUS without it again")


def stall_claims(store_url: str, names) -> list[int]:
    """SIGSTOP the server processes of the nodes' claims connections (a stalled database)."""
    engine = create_engine(resolve_url(store_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE application_name = ANY(:names)"),
                            {"names": [f"rtmbotd-claims {n}" for n in names]}).scalars().all()
    engine.dispose()
    assert len(pids) >= len(names)          # (a backend of an earlier test's node may still be leaving)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def resume(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


def test_an_event_acked_while_its_claim_is_out_is_answered_by_a_stopping_node(cluster, fake):
    del cluster.nodes["node2"], cluster.nodes["node3"]
    cluster.start()
    node = cluster.nodes["node1"]
    pids = stall_claims(cluster.store_url, ["node1"])
    try:
        fake.message("echo just before the stop")
        wait_until(lambda: fake.acks() and not fake.unacked(), T, "the envelope acked")
        node.signal(signal.SIGTERM)                # before the claim's 1 s ran out
        fake.wait_for_messages(1, timeout=T)
        assert node.wait_exit(T) == 0
    finally:
        resume(pids)
    assert cluster.answers() == ["node1: just before the stop"]


def test_a_stalled_postgresql_costs_an_event_one_second_not_its_answer(cluster, fake):
    """The claims connections' server processes SIGSTOPped (a stalled database): each node
    answers unchecked after the 1 s wait, the events after that at once; continued, claims resume."""
    cluster.start()
    pids = stall_claims(cluster.store_url, NODES)
    try:
        texts = [f"stalled {n}" for n in range(6)]
        for t in texts:
            fake.message("echo " + t)
        fake.wait_for_messages(len(texts), timeout=T)
        assert_answered_once(cluster.answers(), texts)
        for node in cluster.nodes.values():
            node.wait_log(r"event claims: PostgreSQL unreachable \(no answer within 1 s\)", timeout=T)
    finally:
        resume(pids)
    for node in cluster.nodes.values():
        node.wait_log("event claims: PostgreSQL answers again", timeout=T)
    fake.message("echo resumed")
    fake.wait_for_messages(len(texts) + 1, timeout=T)
    [resumed] = event_ids(fake, "echo resumed")
    wait_until(lambda: resumed in cluster.claimed(), T, "claims written again")
    assert cluster.alive()
