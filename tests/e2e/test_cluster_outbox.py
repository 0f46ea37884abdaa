"""Issue 12, nothing lost and the app's rate limit: three real rtmbotd nodes, one PostgreSQL, one fake Slack.

Each node's plugin queues five messages as it loads (each names its node), so every node
has its own outbox. A Slack outage (the fake's Web API answers 503: no link, no send)
makes them rows in the shared PostgreSQL outbox; a node then killed (`kill -9`) or hung
(`kill -STOP`) has its rows claimed by a live one, which delivers them once each when
Slack is back. A cluster-wide burst to one channel stays under the fake's enforced limit.
"""
from __future__ import annotations

import collections
import signal

import pytest

from tests.e2e.cluster_harness import Cluster
from tests.e2e.harness import wait_until
from tests.e2e.test_cluster_core import ECHO, pg  # noqa: F401  (pg: the module's PostgreSQL server fixture)

QUEUED = """
outputs.extend(["C1GENERAL", "queued %d from %s" % (i, config["node"])] for i in range(config["count"]))
"""


@pytest.fixture
def cluster(tmp_path, fake, pg):
    made = []

    def make(count: int = 5, settings: dict | None = None) -> Cluster:
        c = Cluster(tmp_path, fake, pg.new_database(), n=3, mode="socket_mode",
                    plugins={"queued": QUEUED, "echo": ECHO},
                    settings=lambda name: {"queued": {"node": name, "count": count}, "echo": {"node": name},
                                           **(settings or {})})
        made.append(c)
        return c

    yield make
    pg.start()
    for c in made:
        c.stop()


def texts(fake) -> list[str]:
    return [m.get("text") or "" for m in fake.sent_messages("C1GENERAL")]


def rows_of(pg, c: Cluster, owner: str) -> int:
    return pg.query(c.store_url, f"SELECT count(*) FROM rtmbot_outbox_rows WHERE owner = '{owner}'")[0][0]


def session_of(pg, c: Cluster, name: str) -> str:
    return pg.query(c.store_url, f"SELECT session FROM rtmbot_nodes WHERE name = '{name}'")[0][0]


def queued_during_an_outage(fake, pg, c: Cluster) -> None:
    """Slack down, every node up with its five messages saved as rows."""
    fake.set_web_api_down(True)
    c.start()
    c.wait_leader()
    wait_until(lambda: all(rows_of(pg, c, n.name) == 5 for n in c.nodes), 60,
               lambda: "5 rows per node; " + ", ".join(f"{n.name}: {rows_of(pg, c, n.name)}" for n in c.nodes))


def assert_each_once_in_order(fake, names: list[str]) -> None:
    sent = texts(fake)
    counts = collections.Counter(sent)
    want = [f"queued {i} from {name}" for name in names for i in range(5)]
    assert {t: counts[t] for t in want} == {t: 1 for t in want}, sent
    for name in names:                                 # per-channel order, for one node's messages
        mine = [t for t in sent if t.startswith("queued ") and t.endswith(" from " + name)]
        assert mine == [f"queued {i} from {name}" for i in range(5)]


def test_a_killed_nodes_queued_replies_are_delivered_once_each_by_the_others(cluster, fake, pg):
    c = cluster()
    queued_during_an_outage(fake, pg, c)
    dead = c["n1"]
    dead.signal(signal.SIGKILL)
    dead.wait_exit()
    wait_until(lambda: rows_of(pg, c, "n1") == 0, 60, "n1's rows claimed by a live node")
    assert session_of(pg, c, "n1").startswith("claimed by n")
    fake.set_web_api_down(False)
    fake.wait_for_messages(15, channel="C1GENERAL", timeout=30)   # the bound: 30 s after Slack is back
    wait_until(lambda: all(rows_of(pg, c, n.name) == 0 for n in c.nodes), 30, "every row deleted once delivered")
    assert_each_once_in_order(fake, ["n1", "n2", "n3"])


def test_a_hung_node_whose_rows_were_claimed_sends_none_of_them_after_sigcont(cluster, fake, pg):
    c = cluster()
    queued_during_an_outage(fake, pg, c)
    hung = c["n1"]
    hung.signal(signal.SIGSTOP)
    wait_until(lambda: session_of(pg, c, "n1").startswith("claimed by"), 60, "n1's rows claimed")
    fake.set_web_api_down(False)
    fake.wait_for_messages(15, channel="C1GENERAL", timeout=30)
    hung.signal(signal.SIGCONT)
    wait_until(lambda: not session_of(pg, c, "n1").startswith("claimed by"), 60, "n1 joined again")
    # n1 answers in C1GENERAL: its queue there is first in, first out, so any of its old
    # messages it still held would have gone out before this answer.
    pings = iter(range(1000))

    def n1_answered() -> bool:
        if any(t.startswith("ping ") and t.endswith(" from n1") for t in texts(fake)):
            return True
        fake.message(f"ping {next(pings)}", channel="C1GENERAL")
        return False
    wait_until(n1_answered, 60, "an answer from n1", interval=0.5)
    assert rows_of(pg, c, "n1") == 0
    assert_each_once_in_order(fake, ["n1", "n2", "n3"])
    hung.wait_log(r"another node's to send now", timeout=30)     # it knew its rows were taken
    assert hung.alive()


def test_a_burst_from_three_nodes_to_one_channel_keeps_slacks_limit(cluster, fake, pg):
    fake.enforce_rate_limit(1.0, 5)
    c = cluster(count=4, settings={"RATE_LIMIT": 1, "RATE_BURST": 4}).start()
    fake.wait_for_messages(12, channel="C1GENERAL", timeout=90)
    assert fake.rate_limit_violations() == 0
    assert len(texts(fake)) == 12


def test_postgresql_stopped_replies_still_go_at_the_local_share(cluster, fake, pg):
    c = cluster(count=0, settings={"RATE_LIMIT": 1, "RATE_BURST": 4}).start()
    c.wait_leader()
    pg.stop()
    wait_until(lambda: all(n.status().startswith("follower (PostgreSQL unreachable") for n in c.nodes), 60,
               lambda: "; ".join(f"{n.name}: {n.status()!r}" for n in c.nodes))
    before = len(fake.sent_messages("C1GENERAL"))
    fake.message("ping outage", channel="C1GENERAL")
    fake.wait_for_messages(before + 1, channel="C1GENERAL", timeout=30)
    assert all(n.alive() for n in c.nodes)
