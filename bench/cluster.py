"""The cluster's bar (issue #12): real `rtmbotd` nodes on one PostgreSQL and the fake Slack.

    .venv/bin/python bench/cluster.py [--quick] [--rounds N] [--no-pin] [--keep]

Side by side in one run, one table: failover time (SIGKILL of the leader → the first job
output of the new leader, and SIGSTOP → the same; median and max of N rounds) in a cluster
of 3; the latency a Socket Mode event pays in a cluster against one node without CLUSTER
(median, p99; goal ≤ 1 ms more at the median); replies/s and CPU per reply with 1, 2 and 3
nodes. PostgreSQL is scripts/postgres-test-server's (STORE_TEST_POSTGRES_URL when set);
every system gets a fresh database. Numbers come from this run only.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from children import REPO, BenchError, RtmbotdProcess, pin_cpus, rtmbotd_argv  # noqa: E402
from procstat import CpuUse, cpu_seconds  # noqa: E402
from report import Latency, Table, machine_lines, median, ms, num  # noqa: E402
from workload import Burst, burst_run, latency_run  # noqa: E402
from results import RESULTS, write_section  # noqa: E402

from rtmbotd import __version__  # noqa: E402
from rtmbotd.testing.fakeslack import FakeSlack  # noqa: E402
from rtmbotd.testing.waiting import wait_until  # noqa: E402

REPEAT = REPO / "plugins" / "repeat"
# The system test's job plugin: `crontable = [[1, "tick"]]`, posting `tick NODE UNIXTIME`.
TICK = REPO / "tests" / "system" / "plugins" / "tick"
TICKS = "C1GENERAL"
SIZES = (1, 2, 3)
FAILOVER_NODES = 3
SINGLE = "one node"
# The columns of the latency and burst parts: (label, nodes, CLUSTER on).
SYSTEMS = [(SINGLE, 1, False)] + [(f"cluster of {n}", n, True) for n in SIZES]
GOAL_KILL = 10.0         # s: the "another node leads and runs the jobs within 10 s"
GOAL_STOP = 20.0         # s: "Leader hung: another leads within 20 s"
GOAL_EXTRA_LATENCY = 0.001   # s more at the median than one node: at most one PostgreSQL round trip
TWICE = 0.5              # two job outputs closer than this (a 1 s job) are one tick run twice
SETTLE = 1.0


@dataclass(frozen=True)
class Plan:
    failovers: int           # rounds of each kind
    latency_events: int
    warmup: int
    rounds: int
    round_warmup: int
    burst_events: int
    burst_deadline: float
    idle_s: float


FULL = Plan(failovers=10, latency_events=500, warmup=20, rounds=10, round_warmup=5,
            burst_events=2000, burst_deadline=120.0, idle_s=10.0)
QUICK = Plan(failovers=2, latency_events=60, warmup=10, rounds=3, round_warmup=3,
             burst_events=300, burst_deadline=30.0, idle_s=3.0)


# -- PostgreSQL -------------------------------------------------------------------------------------


def postgres_server() -> str:
    """The test server's URL: STORE_TEST_POSTGRES_URL, else scripts/postgres-test-server's last line."""
    if os.environ.get("STORE_TEST_POSTGRES_URL"):
        return os.environ["STORE_TEST_POSTGRES_URL"]
    out = subprocess.run(["bash", str(REPO / "scripts" / "postgres-test-server")], text=True,
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=300)
    last = out.stdout.strip().splitlines()[-1:] or [""]
    if out.returncode != 0 or "=" not in last[0]:
        raise BenchError(f"scripts/postgres-test-server exited {out.returncode}")
    return last[0].split("=", 1)[1]


def fresh_database(server: str, name: str) -> str:
    """Database `name` dropped and made again on `server`; its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(server)
    engine = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def backend_pids(database: str) -> list[int]:
    """PostgreSQL's server processes for `database` (their title names it: `postgres: user db ...`)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().decode("utf-8", "replace").split()
        except OSError:
            continue
        if len(title) >= 3 and title[0] == "postgres:" and title[2] == database:
            pids.append(int(entry))
    return pids


def _cpu_of(pids: list[int]) -> dict[int, float]:
    seen = {}
    for pid in pids:
        try:
            seen[pid] = cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return seen


# -- a cluster --------------------------------------------------------------------------------------


class Nodes:
    """`size` rtmbotd nodes of one bot (Socket Mode) on one fake Slack and one fresh database;
    `cluster=False` is one node without CLUSTER on the same kind of store, the baseline.
    Duck-types the `Child` that bench/workload.py's runs take (name, proc, check_alive)."""

    def __init__(self, label: str, workdir: Path, server: str, size: int, plugin_dirs: list[Path],
                 cluster: bool = True) -> None:
        self.label = label
        self.name = label
        self.cluster = cluster
        self.database = "rtmbotd_bench_" + label.replace(" ", "_")
        store_url = fresh_database(server, self.database)
        self.fake = FakeSlack().start()
        self.fake.echo_own_messages = False     # no self-answers to filter; every reply is the bot's
        self.nodes: list[RtmbotdProcess] = []
        for i in range(1, size + 1):
            settings = {"STORE_URL": store_url}
            if cluster:
                node = f"node{i}"
                settings.update({"CLUSTER": True, "NODE_NAME": node, "tick": {"node": node}})
            self.nodes.append(RtmbotdProcess(workdir / f"node{i}", self.fake.url, "socket_mode",
                                             plugin_dirs, settings=settings, name=f"node{i}"))

    # -- what bench/workload.py reads --
    @property
    def proc(self) -> subprocess.Popen | None:
        exited = [n.proc for n in self.nodes if n.proc is not None and n.proc.poll() is not None]
        return exited[0] if exited else self.nodes[0].proc

    def check_alive(self) -> None:
        for node in self.nodes:
            node.check_alive()

    # -- life --
    def start(self) -> None:
        opened = self.fake.connections_opened
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready(timeout=60)
        wait_until(lambda: self.check_alive() or self.fake.connections_opened >= opened + len(self.nodes),
                   60, f"{self.label}: a Socket Mode connection per node", changes=self.fake.journal,
                   interval=0.5)
        if self.cluster:
            self.wait_one_leader()

    def restart(self, node: RtmbotdProcess) -> None:
        """Start `node` again after it was killed; returns once it is READY."""
        mark = len(node.notify)
        node.start()
        node.notify.wait_for("READY", "1", after=mark, timeout=60)

    def stop(self) -> None:
        for node in self.nodes:
            try:
                os.kill(node.pid, signal.SIGCONT)   # a stopped node cannot handle SIGTERM
            except (ProcessLookupError, BenchError):
                pass
            node.stop()
        self.fake.stop()

    # -- roles --
    @staticmethod
    def role(node: RtmbotdProcess) -> str | None:
        """The role word first in the node's last STATUS (`leader; ...`, `follower (leader: x)`)."""
        statuses = node.notify.statuses()
        if not statuses:
            return None
        words = [w.strip(";,()") for w in statuses[-1].split()]
        return next((w for w in words if w in ("leader", "follower")), None)

    def roles(self) -> dict[str, str | None]:
        return {n.name: self.role(n) for n in self.nodes}

    def wait_one_leader(self, timeout: float = 60) -> RtmbotdProcess:
        """The one node whose STATUS says leader while every other says follower."""
        def one() -> RtmbotdProcess | None:
            self.check_alive()
            live = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
            leaders = [n for n in live if self.role(n) == "leader"]
            followers = [n for n in live if self.role(n) == "follower"]
            return leaders[0] if len(leaders) == 1 and len(followers) == len(live) - 1 else None
        try:
            return wait_until(one, timeout, "one leader", interval=0.1)
        except TimeoutError:
            raise BenchError(f"{self.label}: no single leader within {timeout:g} s: {self.roles()}") from None

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: each node's, and PostgreSQL's server processes for this database."""
        nodes = sum(cpu_seconds(n.pid) for n in self.nodes)
        return {"nodes": nodes, **{f"pg{pid}": s for pid, s in _cpu_of(backend_pids(self.database)).items()}}


def cpu_between(before: dict[str, float], after: dict[str, float]) -> tuple[float, float]:
    """(nodes', PostgreSQL's) CPU seconds from `before` to `after`; a backend new since counts whole."""
    nodes = after["nodes"] - before["nodes"]
    pg = sum(s - before.get(key, 0.0) for key, s in after.items() if key != "nodes")
    return nodes, pg


# -- failover ---------------------------------------------------------------------------------------


@dataclass
class Failover:
    kill: list[float] = field(default_factory=list)     # SIGKILL → first job output elsewhere, s
    stop: list[float] = field(default_factory=list)     # SIGSTOP → the same
    stale: int = 0        # job outputs of a stopped leader that arrived after its SIGCONT
    close: list[str] = field(default_factory=list)     # pairs of job outputs closer than TWICE
    ticks: int = 0
    errors: list[str] = field(default_factory=list)


def tick_messages(fake: FakeSlack, since: int = 0) -> list[tuple[str, float, float]]:
    """(node, its wall time, fake's received_at) of each job output in #general after `since`."""
    found = []
    for m in fake.sent_messages(TICKS)[since:]:
        parts = (m.get("text") or "").split()
        if len(parts) == 3 and parts[0] == "tick":
            found.append((parts[1], float(parts[2]), m["received_at"]))
    return found


def first_tick_from(cluster: Nodes, since: int, other_than: str, timeout: float = 60) -> float:
    """The fake's received_at of the first job output after `since` by a node other than `other_than`."""
    def found() -> tuple[float] | None:
        for node, _, received_at in tick_messages(cluster.fake, since):
            if node != other_than:
                return (received_at,)
        return None
    try:
        return wait_until(found, timeout, "a job output from another node",
                          changes=cluster.fake.journal, interval=0.5)[0]
    except TimeoutError:
        raise BenchError(f"no job output from a node other than {other_than} within {timeout:g} s; "
                         f"roles {cluster.roles()}") from None


def failover_round(cluster: Nodes, how: signal.Signals, result: Failover) -> None:
    leader = cluster.wait_one_leader()
    name = leader.name
    since = len(cluster.fake.sent_messages(TICKS))
    wait_until(lambda: any(n == name for n, _, _ in tick_messages(cluster.fake, since)), 30,
               f"{name} running the jobs", changes=cluster.fake.journal, interval=0.5)
    since = len(cluster.fake.sent_messages(TICKS))
    sent_at = time.monotonic()
    os.kill(leader.pid, how)
    first = first_tick_from(cluster, since, name)
    (result.kill if how == signal.SIGKILL else result.stop).append(first - sent_at)
    if how == signal.SIGKILL:
        leader.proc.wait(10)
        cluster.restart(leader)
    else:
        mark = len(cluster.fake.sent_messages(TICKS))
        os.kill(leader.pid, signal.SIGCONT)
        wait_until(lambda: cluster.role(leader) == "follower", 30, f"{name} to see it follows",
                   changes=leader.notify, interval=0.5)
        time.sleep(SETTLE)      # a fixed window after SIGCONT: its job outputs in it are the measure
        result.stale += sum(1 for n, _, _ in tick_messages(cluster.fake, mark) if n == name)
    cluster.wait_one_leader()


def measure_failover(workdir: Path, server: str, plan: Plan) -> Failover:
    result = Failover()
    cluster = Nodes(f"failover of {FAILOVER_NODES}", workdir, server, FAILOVER_NODES, [TICK])
    try:
        cluster.start()
        for how in (signal.SIGKILL, signal.SIGSTOP):
            for k in range(plan.failovers):
                print(f"failover: {how.name} of the leader, round {k + 1}/{plan.failovers}",
                      file=sys.stderr, flush=True)
                failover_round(cluster, how, result)
        ordered = sorted(tick_messages(cluster.fake), key=lambda t: t[1])
        result.ticks = len(ordered)
        result.close = [f"{a[0]} at {a[1]:.3f} and {b[0]} at {b[1]:.3f} ({b[1] - a[1]:.3f} s apart)"
                        for a, b in zip(ordered, ordered[1:]) if b[1] - a[1] < TWICE]
    except Exception as exc:  # noqa: BLE001 - shown in the table, the other parts still run
        result.errors.append(f"{type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
    finally:
        cluster.stop()
    return result


# -- latency, idle CPU, bursts ---------------------------------------------------------------------


@dataclass
class Load:
    label: str
    size: int
    samples: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    idle: CpuUse | None = None
    burst: Burst | None = None
    burst_cpu: tuple[float, float] | None = None     # nodes', PostgreSQL's CPU seconds in the burst
    errors: list[str] = field(default_factory=list)

    @property
    def latency(self) -> Latency | None:
        return Latency(tuple(self.samples)) if self.samples else None


def measure_load(workdir: Path, server: str, plan: Plan) -> list[Load]:
    """One node and clusters of 1, 2, 3 all running: idle CPU in one window, latency in rounds
    taking turns, then a burst for each, one at a time (the others idle)."""
    loads = [Load(label, size) for label, size, _ in SYSTEMS]
    running: dict[str, Nodes] = {}
    try:
        for (label, size, cluster), load in zip(SYSTEMS, loads):
            print(f"[{label}] starting", file=sys.stderr, flush=True)
            try:
                system = Nodes(label, workdir / label.replace(" ", "-"), server, size, [REPEAT],
                               cluster=cluster)
                running[label] = system
                system.start()
            except Exception as exc:  # noqa: BLE001 - shown in its column
                load.errors.append(f"{type(exc).__name__}: {exc}")
                traceback.print_exc(file=sys.stderr)
        live = [(load, running[load.label]) for load in loads if not load.errors]
        time.sleep(SETTLE)
        print(f"idle CPU of all for {plan.idle_s:g} s", file=sys.stderr, flush=True)
        before = {load.label: (sum(cpu_seconds(n.pid) for n in s.nodes), time.monotonic())
                  for load, s in live}
        time.sleep(plan.idle_s)
        for load, system in live:
            cpu0, t0 = before[load.label]
            load.idle = CpuUse(sum(cpu_seconds(n.pid) for n in system.nodes) - cpu0,
                               time.monotonic() - t0)
        per_round = math.ceil(plan.latency_events / plan.rounds)
        for k in range(plan.rounds):
            print(f"latency round {k + 1}/{plan.rounds}: {per_round} events each", file=sys.stderr,
                  flush=True)
            turn = [(ld, s) for ld, s in live if not ld.errors]
            for load, system in turn[k % len(turn):] + turn[:k % len(turn)] if turn else []:
                try:
                    batch = latency_run(system.fake, system, per_round,
                                        plan.warmup if k == 0 else plan.round_warmup)
                    load.samples.extend(batch.samples)
                    load.round_medians.append(batch.median)
                except Exception as exc:  # noqa: BLE001
                    load.errors.append(f"{type(exc).__name__}: {exc}")
        for load, system in [(ld, s) for ld, s in live if not ld.errors]:
            print(f"[{load.label}] burst: {plan.burst_events} events", file=sys.stderr, flush=True)
            try:
                cpu0 = system.cpu()
                load.burst = burst_run(system.fake, system, plan.burst_events, plan.burst_deadline)
                load.burst_cpu = cpu_between(cpu0, system.cpu())
            except Exception as exc:  # noqa: BLE001
                load.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        for system in running.values():
            system.stop()
    return loads


# -- the table ---------------------------------------------------------------------------------------


def mark(value: float | None, goal: float) -> str:
    if value is None or math.isnan(value):
        return ""
    return " ok" if value <= goal else " MISSED"


def seconds(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{median(values):.2f} s / {max(values):.2f} s"


def build_table(failover: Failover, loads: list[Load], plan: Plan) -> Table:
    columns = [load.label for load in loads]
    table = Table(columns + ["goal"], notes_column=True)
    three = columns.index(f"cluster of {FAILOVER_NODES}")

    def only_three(text: str) -> list[str]:
        return [text if i == three else "" for i in range(len(columns))]

    def row(metric: str, cells: list[str], goal: str = "") -> None:
        table.add(metric, [*cells, goal])

    def each(fn: Callable[[Load], str]) -> list[str]:
        return [fn(load) for load in loads]

    table.section(f"failover, {FAILOVER_NODES} nodes, a job every 1 s: median / max of "
                  f"{len(failover.kill)} and {len(failover.stop)}")
    kill_max = max(failover.kill, default=None)
    stop_max = max(failover.stop, default=None)
    row("  SIGKILL of the leader → first job output of the new one",
        only_three(seconds(failover.kill) + mark(kill_max, GOAL_KILL)), f"≤ {GOAL_KILL:g} s")
    row("  SIGSTOP of the leader → first job output of the new one",
        only_three(seconds(failover.stop) + mark(stop_max, GOAL_STOP)), f"≤ {GOAL_STOP:g} s")
    row(f"  job outputs of the old leader within {SETTLE:g} s after SIGCONT",
        only_three(f"{failover.stale}" + (" ok" if failover.stale == 0 else " MISSED")), "0")
    row(f"  ticks run twice (two outputs < {TWICE:g} s apart), of all",
        only_three(f"{len(failover.close)} of {failover.ticks}" + (" ok" if not failover.close else " MISSED")),
        "0")

    base = loads[0].latency
    table.section(f"Socket Mode event→reply latency, {plan.latency_events} sequential events in "
                  f"{plan.rounds} rounds taking turns (+{plan.warmup}, then +{plan.round_warmup} warm-up)")
    for attr in ("median", "p90", "p99", "max"):
        row(f"  {attr}", each(lambda ld: ms(getattr(ld.latency, attr)) if ld.latency else "-"))

    def extra(ld: Load) -> str:
        if ld is loads[0] or not ld.latency or not base:
            return ""
        more = ld.latency.median - base.median
        return f"{more * 1000:+.2f} ms" + mark(more, GOAL_EXTRA_LATENCY)
    row(f"  median − {SINGLE}'s", each(extra), "≤ +1 ms")
    row("  round medians, lowest–highest",
        each(lambda ld: f"{ms(min(ld.round_medians))}–{ms(max(ld.round_medians))}"
             if ld.round_medians else "-"))

    table.section(f"burst of {plan.burst_events:,} events pushed at once, spread over the nodes' "
                  "connections")

    def burst(fn: Callable[[Load], str]) -> list[str]:
        return each(lambda ld: fn(ld) if ld.burst else "-")
    row("  replies/s (first push → last reply)", burst(lambda ld: num(ld.burst.replies_per_s)))
    row("  replies lost / duplicated", burst(
        lambda ld: f"{ld.burst.missing} / {ld.burst.duplicates}"
        + (" ok" if ld.burst.missing == 0 and ld.burst.duplicates == 0 else " MISSED")), "0 / 0")
    row("  CPU per reply: the nodes", burst(
        lambda ld: ms(ld.burst_cpu[0] / ld.burst.answered) if ld.burst.answered else "-"))
    row("  CPU per reply: PostgreSQL's server processes", burst(
        lambda ld: ms(ld.burst_cpu[1] / ld.burst.answered) if ld.burst.answered else "-"))

    table.section(f"idle, {plan.idle_s:g} s")
    row("  CPU of all the nodes, % of one core",
        each(lambda ld: num(ld.idle.percent_of_core, "%", 3) if ld.idle else "-"))
    return table


def describe(title: str, server: str, placement: str, took: float) -> list[str]:
    """What ran, where, and how it was measured: the lines above the table."""
    where = server.rsplit("@", 1)[-1].rsplit("/", 1)[0]
    return [
        f"rtmbotd {__version__} cluster benchmark: {title}, took {took:.0f} s",
        *machine_lines(),
        f"setup:   real rtmbotd processes ({' '.join(rtmbotd_argv())}), Socket Mode, RATE_LIMIT: 0,",
        "         each system on its own fake Slack in this process (envelopes round robin over the",
        "         nodes' connections, own messages not echoed); STORE_URL a fresh database each on",
        f"         the PostgreSQL at {where}; '{SINGLE}' runs without CLUSTER",
        "failover: tests/system/plugins/tick (a job every 1 s); time from the signal to the fake's",
        "         received_at of the first job output from another node; a killed node is",
        "         started again, a stopped one continued, before the next round",
        "latency: plugins/repeat; fake's received_at of the reply − its time.monotonic() once it",
        "         wrote the event; CPU: the nodes' threads plus PostgreSQL's processes for that database",
        f"cpus:    {placement} (PostgreSQL unpinned)",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (smaller counts)")
    parser.add_argument("--rounds", type=int, help="failover rounds of each kind (default 10, quick 2)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs)")
    parser.add_argument("--only", choices=("failover", "load"), help="run one part only")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the benchmark and the nodes to separate CPUs")
    parser.add_argument("--write-results", action="store_true",
                        help=f"also write this run's output as the cluster section of {RESULTS.relative_to(REPO)}")
    args = parser.parse_args(argv)
    if args.write_results and (args.quick or args.no_pin or args.only):
        parser.error("--write-results records a full, pinned run of both parts; drop --quick / --no-pin / --only")
    placement = pin_cpus(not args.no_pin)
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = dataclasses.replace(plan, failovers=args.rounds)
    workroot = Path(tempfile.mkdtemp(prefix="rtmbotd-bench-cluster-"))
    began = time.monotonic()
    server = postgres_server()
    failover = measure_failover(workroot / "failover", server, plan) if args.only != "load" else Failover()
    loads = (measure_load(workroot / "load", server, plan) if args.only != "failover"
             else [Load(label, size) for label, size, _ in SYSTEMS])
    title = "bench/cluster.py" + (" --quick (QUICK: smoke-test counts, not the bar)" if args.quick else "")
    out = describe(title, server, placement, time.monotonic() - began)
    out += [build_table(failover, loads, plan).render(), ""]
    out += [f"job outputs closer than {TWICE:g} s: {pair}" for pair in failover.close]
    errors = [f"failover: {e}" for e in failover.errors]
    errors += [f"{load.label}: {e}" for load in loads for e in load.errors]
    out += [f"ERROR {line}" for line in errors]
    text = "\n".join(out)
    print(text)
    if args.write_results:
        write_section("cluster", "A cluster on PostgreSQL (bench/cluster.py)", "bench/cluster.py --write-results", text)
        print(f"\nwrote {RESULTS}")
    keep = args.keep or bool(errors)
    print(f"work folder {workroot}" + ("" if keep else " (removed)"))
    if not keep:
        shutil.rmtree(workroot, ignore_errors=True)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
