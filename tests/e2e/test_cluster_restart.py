"""Issue 12, a node restarted while PostgreSQL is down: its own saved outbox (read once
PostgreSQL answers) and the live nodes claiming it (they saw its heartbeat lapse) race
when the server comes back; each saved message must still go out once.
"""
from __future__ import annotations

import signal
import time

from rtmbotd.cluster.timing import NODE_TTL

from tests.e2e.harness import wait_until
from tests.e2e.test_cluster_core import pg  # noqa: F401  (pg: the module's PostgreSQL server fixture)
from tests.e2e.test_cluster_outbox import assert_each_once_in_order, cluster, queued_during_an_outage  # noqa: F401
from tests.e2e.test_cluster_outbox import rows_of, texts


def test_a_node_restarted_while_postgresql_is_down_sends_its_saved_messages_once(cluster, fake, pg):
    c = cluster()
    queued_during_an_outage(fake, pg, c)
    restarted = c["n1"]
    pg.stop()
    stopped = time.monotonic()
    restarted.signal(signal.SIGKILL)
    restarted.wait_exit()
    restarted.settings["queued"]["count"] = 0       # its new run queues nothing of its own
    restarted.write_config()
    restarted.start()
    wait_until(lambda: restarted.status().startswith("follower (PostgreSQL unreachable"), 60,
               lambda: restarted.status())
    # Down longer than NODE_TTL: when it is back the live nodes see n1's heartbeat lapsed
    # and claim its rows while n1 registers again and reads them.
    wait_until(lambda: time.monotonic() > stopped + NODE_TTL + 2, 60, "the outage outlasting NODE_TTL")
    pg.start()
    c.wait_leader(timeout=60)
    fake.set_web_api_down(False)
    fake.wait_for_messages(15, channel="C1GENERAL", timeout=60)
    wait_until(lambda: all(rows_of(pg, c, n.name) == 0 for n in c.nodes), 60, "every row deleted once delivered")
    wait_until(lambda: all(" 0 message(s) queued" in n.status() for n in c.nodes), 60,
               lambda: "nothing queued; " + "; ".join(f"{n.name}: {n.status()!r}" for n in c.nodes))
    assert_each_once_in_order(fake, ["n1", "n2", "n3"])
    assert len([t for t in texts(fake) if t.startswith("queued ")]) == 15
    assert all(n.alive() for n in c.nodes)
    claimed = [n.name for n in c.nodes if "saved by node n1 will be sent" in n.log()]
    print("n1's saved messages were sent by:", claimed or ["n1"])
