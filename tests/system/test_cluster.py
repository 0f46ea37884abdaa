"""Two nodes of one bot in two containers (issue #12), one PostgreSQL and one fake Slack on the host.

Two bookworm containers (machines rtmbotd-node1 and rtmbotd-node2: the one cached tree, each
under its own --volatile=overlay) install the .deb and run the packaged unit in Socket Mode
with CLUSTER: true, their own NODE_NAME, the shared STORE_URL and the `tick` plugin
(`crontable = [[1, "tick"]]`, each output naming the node that ran it). The containers share
the host's loopback, so both reach the host's PostgreSQL (tests/system/postgres.py) and the
fake Slack on 127.0.0.1. Checked: exactly one leader, by `rtmbotd cluster status` in each
container and by each unit's StatusText; `systemctl kill -s KILL rtmbotd` in the leader's
container moves the jobs to the other node, no tick runs twice, and systemd restarts the
killed node, which comes back as a follower. Durations are printed, never asserted (the
failover times are bench/cluster.py's); waits have generous deadlines.
"""
from __future__ import annotations

import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # whatever pytest's import mode, the helpers sit beside this file

import postgres  # noqa: E402
from checks import expect, say, step  # noqa: E402
from nspawn import Container, ContainerError, wait_until  # noqa: E402
from service import (CONF, STAGE, UNIT, add_plugin, apt_install, config_text,  # noqa: E402
                     pings, restarted, settle, show, write_config)

NODES = ("node1", "node2")
DATABASE = "rtmbotd_system_cluster"
CLUSTER_PLUGINS = ("ping", "tick")
TICKS = "C1GENERAL"                    # where the tick plugin posts
TICK = re.compile(r"^tick (\S+) (\d+(?:\.\d+)?)$")
ROLE = re.compile(r"\b(leader|follower)\b")
# Two runs of the job closer than this are one tick run twice: the job runs every second
# at fixed deadlines, so even a run the loop started late is ~1 s from the next one.
TWICE = 0.5


@dataclass(frozen=True)
class Tick:
    node: str
    at: float              # the node's wall clock when the job ran (the host's clock)
    received_at: float     # the fake's monotonic clock when the message arrived


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_url() -> str:
    """A fresh database on the host's PostgreSQL, as the nodes reach it (127.0.0.1)."""
    try:
        url = postgres.server_url()
        return postgres.fresh_database(url, DATABASE)
    except Exception as exc:  # noqa: BLE001 - one line in the report, not a traceback
        pytest.fail(f"PostgreSQL for the cluster test unavailable: {exc}", pytrace=False)


def cluster_config(fake_url: str, name: str, store_url: str) -> str:
    return config_text(fake_url, socket_mode=True,
                       extra=(f"CLUSTER: true\nNODE_NAME: {name}\nSTORE_URL: \"{store_url}\"\n"
                              f"{CLUSTER_PLUGINS[1]}:\n  node: {name}\n"))


def prepare(c: Container, name: str, fake_url: str, store_url: str) -> str:
    """Boot to running, install the .deb, configure node `name`, restart the unit into it."""
    started = time.monotonic()
    state = c.wait_running(timeout=120)
    booted = time.monotonic() - started
    # The tree's /etc/hostname is the host's: give each node its own, for `cluster status`.
    c.write_file("/etc/hostname", f"rtmbotd-{name}\n")
    c.run("hostname", f"rtmbotd-{name}")
    proc = apt_install(c)
    if proc.returncode != 0:
        raise ContainerError(f"{name}: apt-get install exited {proc.returncode}:\n"
                             f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    installed = time.monotonic() - started
    write_config(c, cluster_config(fake_url, name, store_url))
    for plugin in CLUSTER_PLUGINS:
        add_plugin(c, plugin)
    c.run("systemctl", "restart", UNIT, timeout=90)
    return f"{name}: {state} in {booted:.0f}s, installed at {installed:.0f}s, started at " \
           f"{time.monotonic() - started:.0f}s"


@pytest.fixture(scope="module")
def nodes(rootfs: Path, stage: Path, fake: Any, store_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Container]]:
    """Both containers booted, installed and running their node, torn down at the end."""
    consoles = tmp_path_factory.mktemp("nspawn-cluster")
    with ExitStack() as stack:
        started = time.monotonic()
        containers = {}
        for name in NODES:
            containers[name] = stack.enter_context(
                Container(rootfs, bind_ro={stage: STAGE}, log_path=consoles / f"{name}.log",
                          machine=f"rtmbotd-{name}"))
        with ThreadPoolExecutor(len(NODES)) as pool:   # the two installs overlap
            done = [pool.submit(prepare, c, name, fake.url, store_url)
                    for name, c in containers.items()]
            lines = [future.result() for future in done]
        say(f"\n  two containers ready in {time.monotonic() - started:.0f}s ("
            + "; ".join(lines) + ")")
        yield containers


@pytest.fixture(autouse=True)
def _diagnose_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a failed check: each node's unit, journal, and what the nodes wrote to PostgreSQL."""
    say("")
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed or "nodes" not in request.fixturenames:
        return
    for name, c in request.getfixturevalue("nodes").items():
        if c.pid is None:
            continue
        status = c.run("systemctl", "status", "--no-pager", "-n", "0", UNIT, check=False).stdout
        journal = c.run("journalctl", "-u", UNIT, "--no-pager", "-n", "40", "-o",
                        "short-monotonic", check=False).stdout
        say(f"\n  --- {name}: systemctl status {UNIT}\n{status}\n  --- {name}: journal\n{journal}")
    url = request.getfixturevalue("store_url")
    for table in ("rtmbot_nodes", "rtmbot_lease", "rtmbot_jobs"):
        try:
            say(f"  --- {table}: {postgres.query(url, f'SELECT * FROM {table}')}")
        except Exception as exc:  # noqa: BLE001 - diagnosis only
            say(f"  --- {table}: {exc}")


# -- reading the nodes -----------------------------------------------------------------------------


def role(c: Container) -> str | None:
    """The node's own role: the first of the words leader/follower in its STATUS."""
    found = ROLE.search(show(c, "StatusText")["StatusText"])
    return found.group(1) if found else None


def roles(nodes: dict[str, Container]) -> dict[str, str | None]:
    return {name: role(c) for name, c in nodes.items()}


def one_leader(nodes: dict[str, Container], timeout: float = 90) -> tuple[str, str]:
    """(leader, follower) once every node's STATUS names a role and exactly one leads."""
    def settled() -> tuple[str, str] | None:
        now = roles(nodes)
        leaders = [n for n, r in now.items() if r == "leader"]
        followers = [n for n, r in now.items() if r == "follower"]
        if len(leaders) == 1 and len(followers) == len(nodes) - 1:
            return leaders[0], followers[0]
        return None
    try:
        return wait_until(settled, timeout=timeout, interval=0.5,
                          what=lambda: f"one leader, the other a follower; STATUS roles {roles(nodes)}")
    except TimeoutError as exc:
        expect(False, "exactly one leader by STATUS", str(exc))
        raise


def cluster_status(c: Container) -> dict[str, str]:
    """`rtmbotd -c CONF cluster status` inside the container: each node listed and its role."""
    proc = c.run("rtmbotd", "-c", CONF, "cluster", "status", check=False, timeout=60)
    out = proc.stdout + proc.stderr
    expect(proc.returncode == 0, "rtmbotd cluster status exits 0",
           f"exit {proc.returncode}: {out.strip()[-500:]}")
    listed: dict[str, str] = {}
    for line in proc.stdout.splitlines():   # NODE ROLE HOST PID HEARTBEAT SLACK VERSION
        words = line.split()
        if len(words) >= 2 and words[0] in NODES:
            listed[words[0]] = words[1]
    say("    cluster status:\n" + "\n".join(f"      {line}" for line in proc.stdout.splitlines()))
    return listed


def expect_listed(c: Container, roles: dict[str, str], what: str) -> None:
    listed = cluster_status(c)
    expect(listed == roles, what, str(listed))


def ticks(fake: Any, since: int = 0) -> list[Tick]:
    found = []
    for m in fake.sent_messages(TICKS)[since:]:
        match = TICK.match(m.get("text") or "")
        if match:
            found.append(Tick(match.group(1), float(match.group(2)), m["received_at"]))
    return found


def ticks_from(fake: Any, node: str, n: int, since: int, timeout: float = 60) -> list[Tick]:
    """The first `n` ticks `node` ran after message `since` in #general, waited for."""
    def enough() -> list[Tick] | None:
        mine = [t for t in ticks(fake, since) if t.node == node]
        return mine[:n] if len(mine) >= n else None
    try:
        return wait_until(enough, timeout=timeout, interval=0.2,
                          what=lambda: f"{n} ticks from {node}; since then: "
                                       f"{[(t.node, t.at) for t in ticks(fake, since)][-10:]}")
    except TimeoutError as exc:
        expect(False, f"{node} runs the jobs", str(exc))
        raise


def closest_pair(found: list[Tick]) -> tuple[float, Tick, Tick] | None:
    ordered = sorted(found, key=lambda t: t.at)
    pairs = [(b.at - a.at, a, b) for a, b in zip(ordered, ordered[1:])]
    return min(pairs, key=lambda p: p[0], default=None)


def expect_no_tick_twice(found: list[Tick], what: str) -> None:
    closest = closest_pair(found)
    ok = closest is None or closest[0] >= TWICE
    detail = (f"{len(found)} ticks, closest two {closest[0]:.3f}s apart "
              f"({closest[1].node} at {closest[1].at:.3f}, {closest[2].node} at {closest[2].at:.3f})"
              if closest else f"{len(found)} ticks")
    expect(ok, what, detail)


def holds(predicate: Callable[[], Any], what: str, detail: Callable[[Any], str],
          timeout: float = 60) -> Any:
    """Wait (generously) for `predicate`, then print the check `what` with `detail` of it."""
    try:
        found = wait_until(predicate, timeout=timeout, interval=0.5, what=what)
    except TimeoutError as exc:
        expect(False, what, str(exc))
        raise
    expect(True, what, detail(found))
    return found


# -- the checks ------------------------------------------------------------------------------------


def test_both_nodes_reach_postgres_and_slack(nodes: dict[str, Container], fake: Any,
                                             store_url: str) -> None:
    for name, c in nodes.items():
        proc = c.run("runuser", "-u", "rtmbot", "--", "/opt/venvs/rtmbotd/bin/python", "-c",
                     "import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=10)"
                     ".execute('SELECT 1')", store_url, check=False)
        expect(proc.returncode == 0, f"{name}: the host's PostgreSQL answers user rtmbot over "
               "127.0.0.1", (proc.stdout + proc.stderr).strip()[-500:])
        props = settle(c)
        expect(props["ActiveState"] == "active", f"{name}: service active",
               f"{props['ActiveState']}/{props['SubState']} status={props['StatusText']!r}")
    try:
        fake.wait_for_connections(len(NODES), mode="socket_mode", timeout=60)
        connected = fake.open_connections("socket_mode")
    except TimeoutError as exc:
        connected = str(exc)
    expect(connected == len(NODES), "each node holds its own Socket Mode connection",
           f"open: {connected}")
    for _ in NODES:  # the fake hands envelopes round robin: these reach both nodes
        pings(fake, "the bot answers", timeout=60)


def test_exactly_one_leader(nodes: dict[str, Container], fake: Any) -> None:
    leader, follower = one_leader(nodes)
    expect(True, "exactly one leader by STATUS (systemctl show -p StatusText)",
           f"{leader} leads, {follower} follows")
    for name, c in nodes.items():
        expect_listed(c, {leader: "leader", follower: "follower"},
                      f"rtmbotd cluster status in {name}'s container lists both, {leader} the leader")
    since = len(fake.sent_messages(TICKS))
    ticks_from(fake, leader, 3, since)
    found = ticks(fake, since)
    others = [t for t in found if t.node != leader]
    expect(not others, f"only the leader {leader} runs the jobs",
           f"{len(found)} ticks, {len(others)} from others")
    expect_no_tick_twice(found, "no tick ran twice")


def test_kill_leader_moves_jobs(nodes: dict[str, Container], fake: Any) -> None:
    leader, follower = one_leader(nodes)
    c = nodes[leader]
    before = len(fake.sent_messages(TICKS))
    ticks_from(fake, leader, 2, before)
    props = show(c, "MainPID", "NRestarts")
    pid, restarts = props["MainPID"], int(props["NRestarts"])
    since = len(fake.sent_messages(TICKS))
    step(f"systemctl kill -s KILL {UNIT} in {leader}'s container (pid {pid})")
    killed_at = time.time()
    c.run("systemctl", "kill", "-s", "KILL", UNIT)
    first = ticks_from(fake, follower, 1, since, timeout=90)[0]
    expect(True, f"the jobs moved to {follower}",
           f"its first tick {first.at - killed_at:.1f}s after the kill (issue: within 10 s)")
    holds(restarted(c, pid, restarts), f"systemd restarted {leader}",
          lambda props: f"MainPID {pid} -> {props['MainPID']}")
    holds(lambda: roles(nodes) == {leader: "follower", follower: "leader"},
          f"{leader} came back as a follower, {follower} still leads", lambda _: str(roles(nodes)))
    expect_listed(nodes[follower], {leader: "follower", follower: "leader"},
                  f"rtmbotd cluster status lists {follower} as the leader, {leader} as a follower")
    after = len(fake.sent_messages(TICKS))
    ticks_from(fake, follower, 3, after)
    found = ticks(fake, before)
    late = [t for t in found if t.node == leader and t.at > first.at]
    expect(not late, f"{leader} ran no job once {follower} took over",
           f"{len(late)} ticks from {leader} after {first.at:.3f}")
    expect_no_tick_twice(found, "no tick ran twice across the failover")
