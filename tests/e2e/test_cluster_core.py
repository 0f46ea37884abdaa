"""Issue 12, the cluster core: three real rtmbotd nodes on one PostgreSQL and one fake Slack.

One leader (STATUS words, `cluster status`), jobs on the leader only, a NODE_NAME in
use refused, `kill -9` then restart at once, failover after SIGKILL and SIGSTOP (the old
leader, continued, runs no job), RTM on the leader only, PostgreSQL stopped and started.
Job outputs are counted at the fake: each says which node ran it.
"""
from __future__ import annotations

import signal

import pytest

from rtmbotd.metrics.address import Address
from tests.e2e.cluster_harness import ROLE, Cluster, PgServer
from tests.e2e.harness import wait_until
from tests.e2e.test_metrics_e2e import free_port, value

TICKER = """
outputs = []
crontable = [[1, "tick"]]

def tick():
    outputs.append(["C1GENERAL", "tick from %s" % config["node"]])
"""

ECHO = """
outputs = []

def process_message(data):
    if data.get("text", "").startswith("ping"):
        outputs.append([data["channel"], "%s from %s" % (data["text"], config["node"])])
"""


@pytest.fixture(scope="module")
def pg():
    return PgServer.from_env()


@pytest.fixture
def cluster(tmp_path, fake, pg):
    made = []

    def make(n: int = 3, mode: str = "socket_mode", **kwargs) -> Cluster:
        extra = kwargs.pop("settings", {})
        root = tmp_path / f"cluster{len(made)}"
        root.mkdir()
        c = Cluster(root, fake, pg.new_database(), n=n, mode=mode, plugins={"ticker": TICKER, "echo": ECHO},
                    settings=lambda name: {"ticker": {"node": name}, "echo": {"node": name},
                                           **(extra(name) if callable(extra) else extra)}, **kwargs)
        made.append(c)
        return c

    yield make
    pg.start()           # a test that stopped it leaves it running for the next
    for c in made:
        c.stop()
        for node in c.nodes:
            if node.proc is not None and node.proc.returncode not in (0, None, -9):
                print(f"--- {node.name} (exit {node.proc.returncode}):\n{node.log()[-4000:]}")


def ticks(fake) -> list[str]:
    """Which node ran each job output, in the order the fake took them."""
    return [m["text"].rsplit(" ", 1)[1] for m in fake.sent_messages("C1GENERAL")
            if (m.get("text") or "").startswith("tick from ")]


def runs(sources: list[str]) -> list[str]:
    """The nodes in the order they ran jobs, one entry per stretch: leaders never interleave."""
    out: list[str] = []
    for name in sources:
        if not out or out[-1] != name:
            out.append(name)
    return out


def wait_ticks(fake, node: str, more: int = 2, timeout: float = 60.0) -> None:
    have = ticks(fake).count(node)
    wait_until(lambda: ticks(fake).count(node) >= have + more, timeout,
               lambda: f"{more} more ticks from {node}; ticks: {runs(ticks(fake))}")


# -- one leader -----------------------------------------------------------------------------------


def test_one_leader_runs_the_jobs_and_status_names_the_roles(cluster, fake):
    c = cluster().start()
    leader = c.wait_leader()
    wait_ticks(fake, leader.name, 3)
    assert set(ticks(fake)) == {leader.name}             # only the leader runs crontable jobs
    for node in c.nodes:
        if node is not leader:
            assert node.status().startswith(f"follower (leader: {leader.name}); connected (socket_mode)")
    assert leader.status().startswith("leader; connected (socket_mode)")

    done = leader.cli("cluster", "status")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NODE", "ROLE", "HOST", "PID", "HEARTBEAT", "SLACK", "VERSION"]
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert set(rows) == {"n1", "n2", "n3"}
    for node in c.nodes:
        role = "leader" if node is leader else "follower"
        assert rows[node.name].split()[1:2] == [role]
        assert f" {node.proc.pid} " in rows[node.name]
        assert "connected (socket_mode)" in rows[node.name]
    assert lines[-1].startswith(f"leader: {leader.name} (epoch ")

    # Socket Mode is active-active: every node holds its own connection.
    assert fake.open_connections("socket_mode") == 3


def test_cluster_status_exit_codes(cluster, tmp_path, pg):
    c = cluster(n=1)
    node = c.nodes[0]
    node.settings["CLUSTER"] = False
    node.write_config()
    done = node.cli("cluster", "status")
    assert done.returncode == 78 and "CLUSTER" in done.stderr and len(done.stderr.splitlines()) == 1
    node.settings.update(CLUSTER=True, STORE_URL="postgresql://postgres@127.0.0.1:9/nothing")
    node.write_config()
    done = node.cli("cluster", "status")
    assert done.returncode == 69, done.stderr
    assert "cannot reach PostgreSQL" in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_node_name_in_use_is_refused_and_a_killed_node_restarts_at_once(cluster, fake, tmp_path):
    c = cluster(n=1).start()
    first = c.nodes[0]
    c.wait_leader()
    twin = cluster(n=1)            # another process, same NODE_NAME "n1", same database
    twin.nodes[0].settings["STORE_URL"] = c.store_url
    twin.nodes[0].write_config()
    twin.nodes[0].start(wait_ready=False)
    assert twin.nodes[0].wait_exit(60) == 78
    err = twin.nodes[0].log().strip().splitlines()
    assert len(err) >= 1 and "NODE_NAME n1 is in use" in err[-1] and f"pid {first.proc.pid}" in err[-1], err

    first.signal(signal.SIGKILL)
    first.wait_exit()
    first.start()                  # at once: the name lock went with the killed process's connection
    assert first.alive()
    c.wait_leader()


# -- failover -----------------------------------------------------------------------------------


def test_sigkill_of_the_leader_moves_the_jobs(cluster, fake):
    c = cluster().start()
    old = c.wait_leader()
    wait_ticks(fake, old.name, 2)
    old.signal(signal.SIGKILL)
    old.wait_exit()
    new = c.wait_leader(timeout=60)
    assert new is not old
    wait_ticks(fake, new.name, 3)
    assert runs(ticks(fake)) == [old.name, new.name]     # one leader at a time, never interleaved

    def row(name: str) -> list[str]:
        out = new.cli("cluster", "status").stdout.splitlines()
        return next((line.split() for line in out if line.startswith(name + " ")), [])
    wait_until(lambda: row(old.name)[1:2] == ["dead"], 30, lambda: f"{old.name} marked dead: {row(old.name)}")


def test_a_leader_killed_and_restarted_at_once_leaves_the_lease_to_the_other_node(cluster, fake):
    # The system test's bug: systemd restarts a node killed with -9 within a second, well
    # inside LEASE_TTL; when the lease lapsed the restarted node raced the live follower
    # for it and won in 2 of 5 runs, so the jobs never moved.
    c = cluster(n=2).start()
    leader = c.wait_leader()
    for _ in range(4):
        other = next(n for n in c.nodes if n is not leader)
        wait_ticks(fake, leader.name, 1)
        leader.signal(signal.SIGKILL)
        leader.wait_exit()
        seen = len(leader.notify)
        leader.start()                # at once, the same NODE_NAME, like systemd's Restart=
        wait_until(lambda: other.role() == "leader", 60,
                   lambda: f"{other.name} leads; {other.name}: {other.status()!r}, {leader.name}: {leader.status()!r}")
        wait_ticks(fake, other.name, 2)
        mine = [s for s in leader.notify.statuses()[seen:] if ROLE.search(s)]
        assert mine and all(ROLE.search(s).group(1) == "follower" for s in mine), mine
        leader = other
    assert len(runs(ticks(fake))) == 5, runs(ticks(fake))     # the jobs moved at every kill


def test_sigstop_of_the_leader_then_sigcont_runs_no_job_on_the_old_one(cluster, fake):
    c = cluster().start()
    old = c.wait_leader()
    wait_ticks(fake, old.name, 2)
    old.signal(signal.SIGSTOP)
    new = c.wait_leader(timeout=60, other_than=old)
    wait_ticks(fake, new.name, 2)
    statuses = len(old.notify)
    old.signal(signal.SIGCONT)
    wait_until(lambda: any(s.startswith(f"follower (leader: {new.name})") for s in old.notify.statuses()[statuses:]),
               60, lambda: f"{old.name} says it follows; it says {old.status()!r}")
    wait_ticks(fake, new.name, 3)
    assert runs(ticks(fake)) == [old.name, new.name]     # the old leader ran nothing after it continued
    c.wait_leader()
    assert old.alive()


BURST = """
outputs = []
crontable = [[0.2, "burst"]]
count = [0]

def burst():
    count[0] += 1
    outputs.append([config["channel"], "burst %d from %s" % (count[0], config["node"])])
"""


def test_job_outputs_queued_when_the_leader_hung_are_not_sent_by_it_after_sigcont(cluster, fake, pg):
    # RATE_LIMIT 3 and a job every 0.2 s (with the ticker, 6 outputs a second): the leader's
    # channel always has job outputs waiting, the newest not yet saved as rows (so no other
    # node can claim them); the claimer still drains the saved ones beside its own ticks.
    c = cluster(n=2, settings=lambda name: {"RATE_LIMIT": 3, "RATE_BURST": 1, "burst": {
        "node": name, "channel": "C1GENERAL" if name == "n1" else "D1ALICE"}})
    old, new = c["n1"], c["n2"]
    for node in c.nodes:
        node.write_plugin("burst", BURST)
    old.start()
    wait_until(lambda: old.role() == "leader", 60, lambda: old.status())
    new.start()
    assert c.wait_leader() is old

    def bursts() -> list[str]:
        return [m["text"] for m in fake.sent_messages("C1GENERAL") if m["text"].startswith("burst ")]
    wait_until(lambda: len(bursts()) >= 3, 60, lambda: f"3 job outputs from n1: {bursts()}")
    old.signal(signal.SIGSTOP)
    wait_until(lambda: new.role() == "leader", 60, lambda: new.status())

    def claimed_and_sent() -> bool:
        [(session,)] = pg.query(c.store_url, "SELECT session FROM rtmbot_nodes WHERE name = 'n1'")
        [(left,)] = pg.query(c.store_url, "SELECT count(*) FROM rtmbot_outbox_rows WHERE record LIKE '%from n1%'")
        if session.startswith("claimed by"):
            return left == 0
        # Stopped inside its own outbox write, n1 holds its rows: nobody claims them (by
        # design) and, continued, it must send none of its job outputs either.
        return new.log().count("node 'n1' is writing its outbox; claiming it waits") >= 4
    wait_until(claimed_and_sent, 120, lambda: "n1's saved job outputs claimed and sent by n2, or held by n1")
    before = len(bursts())
    seen = len(old.notify)
    old.signal(signal.SIGCONT)
    wait_until(lambda: any(s.startswith("follower (leader: n2)") for s in old.notify.statuses()[seen:]), 60,
               lambda: f"n1 says it follows; it says {old.status()!r}")
    pings = iter(range(1000))

    def n1_answered() -> bool:     # its queue to C1GENERAL is FIFO: anything it held went first
        if any(m["text"].startswith("ping ") and m["text"].endswith(" from n1") for m in fake.sent_messages("C1GENERAL")):
            return True
        fake.message(f"ping {next(pings)}", channel="C1GENERAL")
        return False
    wait_until(n1_answered, 90, "an answer from n1", interval=1.0)
    assert bursts()[before:] == []          # the hung leader's queued job outputs: none sent after it continued
    old.wait_log(r"queued job output\(s\) dropped: the lease they ran under is gone", timeout=30)


# -- RTM: only the leader connects ------------------------------------------------------------------------


def test_rtm_connects_from_the_leader_only(cluster, fake):
    c = cluster(mode="rtm").start()
    leader = c.wait_leader()
    wait_until(lambda: fake.open_connections("rtm") == 1, 60, "one RTM socket")
    for node in c.nodes:
        if node is not leader:
            assert "standing by (RTM connects from the leader only)" in node.status()
    before = len(fake.sent_messages("D1ALICE"))
    fake.message("ping 1")
    fake.wait_for_messages(before + 1, channel="D1ALICE", timeout=30)
    wait_ticks(fake, leader.name, 2)
    assert [m["text"] for m in fake.sent_messages("D1ALICE")[before:]] == [f"ping 1 from {leader.name}"]

    leader.signal(signal.SIGKILL)
    leader.wait_exit()
    new = c.wait_leader(timeout=60)
    wait_until(lambda: new.status().startswith("leader; connected (rtm)"), 60, lambda: new.status())
    wait_until(lambda: fake.open_connections("rtm") == 1, 60, "one RTM socket, from the new leader")
    before = len(fake.sent_messages("D1ALICE"))
    fake.message("ping 2")
    fake.wait_for_messages(before + 1, channel="D1ALICE", timeout=30)
    wait_ticks(fake, new.name, 2)
    assert [m["text"] for m in fake.sent_messages("D1ALICE")[before:]] == [f"ping 2 from {new.name}"]


# -- PostgreSQL outage -------------------------------------------------------------------------------


def test_postgresql_stopped_and_started(cluster, fake, pg):
    c = cluster().start()
    old = c.wait_leader()
    wait_ticks(fake, old.name, 2)
    pg.stop()
    wait_until(lambda: all(n.status().startswith("follower (PostgreSQL unreachable") for n in c.nodes), 60,
               lambda: "; ".join(f"{n.name}: {n.status()!r}" for n in c.nodes))
    stopped_at = len(ticks(fake))
    # Socket Mode events are still answered by plugins that need no store.
    before = len(fake.sent_messages("D1ALICE"))
    fake.message("ping outage")
    fake.wait_for_messages(before + 1, channel="D1ALICE", timeout=30)
    pg.start()
    new = c.wait_leader(timeout=60)
    wait_ticks(fake, new.name, 2)
    assert all(n.alive() for n in c.nodes)
    # Nobody ran a job while nobody could hold a lease (at most one in flight at the stop).
    assert len(ticks(fake)) >= stopped_at
    sources = runs(ticks(fake))
    assert len(sources) <= 2 and sources[0] == old.name, sources


# -- the leader gauge --------------------------------------------------------------------------------


def test_cluster_leader_gauge_follows_a_failover(cluster, fake):
    addresses = {f"n{i}": Address("127.0.0.1", free_port()) for i in (1, 2)}
    c = cluster(n=2, settings=lambda name: {"METRICS": str(addresses[name])}).start()
    old = c.wait_leader()
    wait_until(lambda: value(addresses[old.name], "rtmbotd_cluster_leader") == 1, 30, "leader gauge 1")
    other = next(n for n in c.nodes if n is not old)
    assert value(addresses[other.name], "rtmbotd_cluster_leader") == 0
    old.signal(signal.SIGKILL)
    old.wait_exit()
    c.wait_leader(timeout=60)
    wait_until(lambda: value(addresses[other.name], "rtmbotd_cluster_leader") == 1, 60, "new leader gauge 1")


def test_a_clean_stop_hands_the_lease_over_and_marks_the_node_stopped(cluster, fake, pg):
    c = cluster(n=2).start()
    old = c.wait_leader()
    old.stop()
    assert old.proc.returncode == 0
    [(holder, live)] = pg.query(c.store_url, "SELECT holder, expires_at > extract(epoch from clock_timestamp()) "
                                             "FROM rtmbot_lease")
    assert holder != old.name or not live            # released at the stop, not left to lapse
    new = c.wait_leader(timeout=30)
    assert new is not old
    done = new.cli("cluster", "status")
    row = next(line for line in done.stdout.splitlines() if line.startswith(old.name + " "))
    assert row.split()[1] == "stopped"


# -- bad input and operations ------------------------------------------------------------------------


def test_a_node_with_other_plugins_joins_with_a_warning(cluster, fake):
    c = cluster(n=2)
    c["n2"].write_plugin("extra", "outputs = []\n")
    c.start()
    c.wait_leader()
    c["n2"].wait_log(r"plugins differ from node n1's \(only here: extra; only there: none\)", timeout=60)
    wait_until(lambda: "plugins differ from node n1's" in c["n2"].status(), 30, lambda: c["n2"].status())
    assert c["n2"].alive()


def test_a_node_of_another_slack_team_refuses_to_join(cluster, fake, monkeypatch):
    c = cluster(n=2)
    first = c["n1"].start()
    c.wait_leader()
    wait_until(lambda: "connected" in first.status(), 30, lambda: first.status())
    import rtmbotd.testing.fakeslack.webapi as webapi
    first.wait_log(r"cluster: node n1 leads now")
    monkeypatch.setattr(webapi, "TEAM_ID", "T0OTHER")        # n2's auth.test answers another team
    c["n2"].start(wait_ready=False)
    assert c["n2"].wait_exit(60) == 78
    assert "this node's Slack tokens belong to team T0OTHER, the cluster's (node n1) to T0TEAM" in c["n2"].log()
    assert first.alive() and first.role() == "leader"


def test_postgresql_unreachable_at_start_then_the_node_joins(cluster, fake, pg):
    c = cluster(n=1)
    node = c.nodes[0]
    pg.stop()
    node.start()                      # READY without PostgreSQL: it says so and retries
    wait_until(lambda: node.status().startswith("follower (PostgreSQL unreachable"), 60, lambda: node.status())
    before = len(ticks(fake))
    pg.start()
    c.wait_leader(timeout=60)
    wait_ticks(fake, "n1", 2)
    assert before == 0                 # no job before it registered


def test_a_reload_changes_that_node_only(cluster, fake):
    c = cluster(n=2).start()
    c.wait_leader()
    n2 = c["n2"]
    n2.settings["echo"] = {"node": "n2-reloaded"}
    n2.settings["NODE_NAME"] = "renamed"
    n2.write_config()
    seen = len(n2.notify)
    n2.signal(signal.SIGHUP)
    n2.notify.wait_for("READY", "1", after=seen, timeout=60)
    n2.wait_log(r"CLUSTER / NODE_NAME changed: takes effect at the next restart")
    assert n2.role() in ("leader", "follower")
    done = n2.cli("cluster", "status")
    assert {line.split()[0] for line in done.stdout.splitlines()[1:3]} == {"n1", "n2"}, done.stdout
    assert "reload" not in c["n1"].log().lower()


@pytest.mark.parametrize("holder", ["idle", "inside a statement"])
def test_a_node_whose_name_lock_outlived_its_host_starts_again(cluster, fake, pg, holder):
    # Power loss: no FIN reaches the server, which keeps the dead host's connection, and
    # with it the NODE_NAME lock, until TCP keepalive gives up (hours). Here a connection
    # of the test's holds the lock, idle, after n1 was killed, as that backend would.
    from sqlalchemy import create_engine, text

    from rtmbotd.cluster.registry import _NAME_LOCK_NAMESPACE, _name_key
    from rtmbotd.cluster.timing import NODE_TTL
    c = cluster(n=1).start()
    node = c.nodes[0]
    c.wait_leader()
    node.signal(signal.SIGKILL)
    node.wait_exit()
    engine = create_engine(c.store_url.replace("postgresql://", "postgresql+psycopg://", 1),
                           isolation_level="AUTOCOMMIT")
    lingering = engine.connect()
    try:
        assert lingering.execute(text("SELECT pg_try_advisory_lock(:ns, :key)"),
                                 {"ns": _NAME_LOCK_NAMESPACE, "key": _name_key("n1")}).scalar()
        [(pid,)] = lingering.execute(text("SELECT pg_backend_pid()")).all()
        if holder != "idle":      # a backend waiting in a statement does not notice its client is gone
            import threading
            threading.Thread(target=lambda: _quietly(lingering.execute, text("SELECT pg_sleep(120)")),
                             daemon=True).start()

        def stale() -> bool:
            [(idle, beat)] = pg.query(c.store_url, "SELECT extract(epoch from clock_timestamp() - state_change),"
                                      " extract(epoch from clock_timestamp()) - (SELECT heartbeat_at FROM"
                                      f" rtmbot_nodes WHERE name = 'n1') FROM pg_stat_activity WHERE pid = {pid}")
            return idle > NODE_TTL + 1 and beat > NODE_TTL + 1
        wait_until(stale, 60, "the lingering connection idle and n1's heartbeat lapsed")
        seen = len(node.notify)
        node.start()                      # refused with exit 78 before: "NODE_NAME n1 is in use"
        wait_until(lambda: any(s.startswith("leader") for s in node.notify.statuses()[seen:]), 60,
                   lambda: node.status())
        node.wait_log(r"NODE_NAME n1 was still locked by a connection of a node that stopped heartbeating", timeout=30)
        assert node.alive()
        assert not pg.query(c.store_url, f"SELECT 1 FROM pg_stat_activity WHERE pid = {pid}")
    finally:
        lingering.invalidate()
        engine.dispose()


def _quietly(fn, *args):
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - the test ends this backend on purpose
        pass
