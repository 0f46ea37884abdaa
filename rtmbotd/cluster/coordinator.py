"""The cluster coordinator: this node's name lock, heartbeat and leader lease on PostgreSQL.

`register()` runs once at start, on the daemon's thread before anything else reads the
store: a second live process with the same NODE_NAME is refused there. Then one thread
of its own, with its own connection (the name lock lives on it), runs a round every
HEARTBEAT: renew the heartbeat, renew or take the lease, read the members; it posts a
`ClusterState` to the daemon's inbox after every round (also a failed one: PostgreSQL
unreachable), `JobRuns` when this node became the leader, `NodesDead` for nodes whose
heartbeat lapsed and `SessionLost` when its own row was taken over while it was away.
The loop owns all state; it calls `update`, `job_started`, `resign` and `stop`, which
only hand work to the thread.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable

from rtmbotd.cluster import registry
from rtmbotd.cluster.fencing import valid_until
from rtmbotd.cluster.registry import NodeInfo, NodeRow
from rtmbotd.cluster.timing import CONNECT_TIMEOUT, HEARTBEAT, NAME_GRACE, NODE_TTL, STATEMENT_TIMEOUT
from rtmbotd.errors import ConfigError

log = logging.getLogger(__name__)

_STOP = "stop"
_RESIGN = "resign"


class DuplicateNodeError(ConfigError):
    """Another live process holds this NODE_NAME."""


class ForeignNodeError(ConfigError):
    """This node's Slack tokens belong to another team or app than the cluster's."""


@dataclass(frozen=True)
class Member:
    name: str
    session: str            # its process's start: a restarted node is a new member


@dataclass(frozen=True)
class ClusterState:
    """One round's outcome. `lease_until` and `node_until` are local monotonic times: the
    lease (when `role` is leader) and this node's own liveness are trusted until then."""

    role: str                        # "leader" or "follower"
    leader: str | None               # who leads (None: nobody known)
    epoch: int                       # the lease's fencing token when we lead
    lease_until: float
    node_until: float
    members: tuple[Member, ...] = ()
    problem: str | None = None       # e.g. PostgreSQL unreachable: shown in STATUS
    warning: str | None = None       # e.g. plugins differ from another node's

    def leading(self, now: float) -> bool:
        """Lead only on a lease still valid by our own clock, and while nobody can call us dead."""
        return self.role == "leader" and now < self.lease_until and now < self.node_until


@dataclass(frozen=True)
class NodesDead:
    names: tuple[str, ...]


@dataclass(frozen=True)
class SessionLost:
    """Our row was given a new session by another node (it declared us dead while we were hung)."""


@dataclass(frozen=True)
class JobRuns:
    """When each job last started cluster-wide, as seconds before `at` (local monotonic)."""

    ages: dict[str, float]
    at: float


@dataclass(frozen=True)
class ForeignNode:
    reason: str             # this node must not join: its Slack team or app is not the cluster's


def make_engine(url: Any) -> Any:
    """An engine of one connection for the coordinator: short timeouts, TCP keepalives."""
    from sqlalchemy import create_engine

    from rtmbotd.store.url import server_options
    url, options = server_options(url, f"-c statement_timeout={int(STATEMENT_TIMEOUT * 1000)}",
                                  f"-c lock_timeout={int(STATEMENT_TIMEOUT * 1000)}")   # after the URL's own
    connect_args = {"connect_timeout": CONNECT_TIMEOUT, "keepalives": 1, "keepalives_idle": 2,
                    "keepalives_interval": 1, "keepalives_count": 3, "options": options}
    if url.get_backend_name() == "postgresql" and "psycopg" in url.drivername:
        connect_args["tcp_user_timeout"] = int(STATEMENT_TIMEOUT * 1000)
    return create_engine(url, pool_size=1, max_overflow=0, isolation_level="AUTOCOMMIT",
                         connect_args=connect_args)


def _detail(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


class Coordinator:
    def __init__(self, engine: Any, info: NodeInfo, post: Callable[[Any], None], *,
                 clock: Callable[[], float] = time.monotonic, where: str = "PostgreSQL") -> None:
        self._engine = engine
        self._info = info
        self._post = post
        self._clock = clock
        self.where = where
        self.session = uuid.uuid4().hex
        self._conn: Any = None
        self._role = "follower"
        self._resigned = False
        self._reported_dead: set[tuple[str, str]] = set()
        self._warned: str | None = None
        self._checked: set[str] = set()     # team, app: compared with the cluster's
        self._info_lock = threading.Lock()
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.problem: str | None = None

    # -- from the loop ----------------------------------------------------------------
    def register(self) -> bool:
        """Take the name and write this node's row (at start, before the saved outbox is
        read). Raises DuplicateNodeError; False when PostgreSQL cannot be reached now
        (the thread keeps trying; nothing leads or runs a job before it succeeds)."""
        from sqlalchemy.exc import DBAPIError
        try:
            self._connect(fresh=True)
        except DBAPIError as exc:
            self._disconnect()
            self.problem = f"PostgreSQL unreachable ({_detail(exc)}), retrying"
            log.warning("cluster: cannot register node %s: %s; retrying every %g s", self._info.name,
                        _detail(exc), HEARTBEAT)
            return False
        log.info("cluster: node %s registered (session %s)", self._info.name, self.session[:8])
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rtmbotd-cluster", daemon=True)
        self._thread.start()

    def update(self, **changes: Any) -> None:
        """What the next heartbeat writes (plugins, link, team_id, app_id)."""
        with self._info_lock:
            self._info = replace(self._info, **changes)

    def job_started(self, job: str) -> None:
        self._work.put(("job", job))

    def resign(self) -> None:
        """Stopping: give the lease up now and never take it again."""
        self._work.put(_RESIGN)

    def stop(self, timeout: float = 5.0) -> None:
        """Release the lease, mark the row stopped, close (blocks: run it off the loop)."""
        if self._thread is not None and self._thread.is_alive():
            self._work.put(_STOP)
            self._thread.join(timeout)
        else:
            self._finish()
        self._engine.dispose()

    # -- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        next_round = self._clock()
        while True:
            try:
                item = self._work.get(timeout=max(0.0, next_round - self._clock()))
            except queue.Empty:
                item = None
            if item == _STOP:
                self._finish()
                return
            if item == _RESIGN:
                self._resigned = True
                self._release(stopped=False)
                continue
            if item is not None:
                self._record_job(item[1])
                continue
            started = self._clock()
            try:
                self._round(started)
            except Exception as exc:  # noqa: BLE001 - the thread must live on: PostgreSQL comes back
                self._failed(exc, started)
            next_round = started + HEARTBEAT

    def _info_now(self) -> NodeInfo:
        with self._info_lock:
            return self._info

    name_wait = NODE_TTL + NAME_GRACE     # s a start tries for a NODE_NAME that is locked

    def _lock_name(self, conn, name: str) -> bool:
        """The name lock. Its holder may be a process just killed: its backend frees the
        lock a moment after the socket closes, or, stuck in a statement or cut off with its
        host, only when ended. So: try for NODE_TTL + NAME_GRACE, ending the holder once
        its node's heartbeat is older than NODE_TTL; a live node with this name keeps its
        heartbeat fresh, and the name stays refused."""
        deadline = time.monotonic() + self.name_wait
        while not registry.lock_name(conn, name):
            if time.monotonic() >= deadline:
                return False
            if registry.evict_stale_holder(conn, name):
                log.warning("cluster: NODE_NAME %s was still locked by a connection of a node that stopped "
                            "heartbeating (killed, or its host lost power); the server ended that connection", name)
            else:
                time.sleep(0.2)
        return True

    def _connect(self, fresh: bool) -> None:
        """Open the connection, take the name lock, and make the row ours."""
        conn = self._conn = self._engine.connect()
        info = self._info_now()
        if not self._lock_name(conn, info.name):
            other = next((r for r in registry.nodes(conn) if r.name == info.name), None)
            self._disconnect()
            where = f" (host {other.host}, pid {other.pid})" if other else ""
            raise DuplicateNodeError(f"NODE_NAME {info.name} is in use by another live node{where}; "
                                     "give each node its own NODE_NAME")
        if fresh or registry.heartbeat(conn, info, self.session, self._role) is None:
            if not fresh:
                self._post(SessionLost())
                self.session = uuid.uuid4().hex
            self._role = "follower"
            registry.register(conn, info, self.session)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        registry.drop_connection(conn)

    def _round(self, sent: float) -> None:
        if self._conn is None:
            self._connect(fresh=False)
            log.info("cluster: node %s is back in the cluster", self._info.name)
        conn, info = self._conn, self._info_now()
        remaining = registry.heartbeat(conn, info, self.session, self._role)
        if remaining is None:           # declared dead while away: we are a new member now
            log.warning("cluster: node %s was declared dead by another node; joining again", info.name)
            self._post(SessionLost())
            self.session = uuid.uuid4().hex
            self._role = "follower"
            remaining = registry.register(conn, info, self.session)
        node_until = valid_until(sent, remaining)
        lease = registry.take_lease(conn, info.name, self.session, want=not self._resigned)
        rows = registry.nodes(conn)
        leader = lease.holder == info.name and lease.remaining is not None
        if leader and self._role != "leader":
            self._post(JobRuns(registry.job_ages(conn), sent))
            log.info("cluster: node %s leads now (epoch %d)", info.name, lease.epoch)
        elif not leader and self._role == "leader":
            log.info("cluster: node %s no longer leads (leader: %s)", info.name, lease.holder or "none")
        self._role = "leader" if leader else "follower"
        self.problem = None
        self._check_dead(rows)
        for what, mine in (("team", info.team_id), ("app", info.app_id)):
            # Each checked once, when this node first knows it: the nodes already there
            # stay, the one joining with another bot's tokens is refused.
            if mine and what not in self._checked:
                self._checked.add(what)
                foreign = _foreign(info.name, what, mine, rows)
                if foreign:
                    self._post(ForeignNode(foreign))
        self._post(ClusterState(
            self._role, lease.holder, lease.epoch, valid_until(sent, lease.remaining) if leader else sent,
            node_until, tuple(Member(r.name, r.session) for r in rows if r.alive), None,
            self._plugins_warning(info, rows)))

    def _failed(self, exc: Exception, sent: float) -> None:
        from sqlalchemy.exc import DBAPIError
        self._disconnect()
        if isinstance(exc, DuplicateNodeError):
            problem = f"{exc}; retrying"
        elif isinstance(exc, DBAPIError):
            problem = f"PostgreSQL unreachable ({_detail(exc)}), retrying"
        else:
            log.exception("cluster: round failed unexpectedly")
            problem = f"cluster round failed ({type(exc).__name__}: {exc}), retrying"
        if problem != self.problem:
            log.warning("cluster: %s; node %s leads nothing and runs no job until it answers",
                        problem, self._info.name)
        self.problem = problem
        self._role = "follower"
        self._post(ClusterState("follower", None, 0, sent, sent, (), problem))

    def _check_dead(self, rows: list[NodeRow]) -> None:
        dead = [r for r in rows if r.role != "stopped" and not r.alive and r.name != self._info.name
                and (r.name, r.session) not in self._reported_dead]
        if dead:
            self._reported_dead.update((r.name, r.session) for r in dead)
            log.warning("cluster: node(s) %s stopped heartbeating", ", ".join(r.name for r in dead))
            self._post(NodesDead(tuple(r.name for r in dead)))

    def _plugins_warning(self, info: NodeInfo, rows: list[NodeRow]) -> str | None:
        warning = None
        if info.plugins:
            mine = set(info.plugins)
            for row in rows:
                if row.name == info.name or not row.alive or not row.plugins or set(row.plugins) == mine:
                    continue
                only_here = ", ".join(sorted(mine - set(row.plugins))) or "none"
                only_there = ", ".join(sorted(set(row.plugins) - mine)) or "none"
                warning = (f"plugins differ from node {row.name}'s (only here: {only_here}; "
                           f"only there: {only_there})")
                break
        if warning and warning != self._warned:
            log.warning("cluster: %s", warning)
        self._warned = warning
        return warning

    def _record_job(self, job: str) -> None:
        if self._conn is None:
            return
        try:
            registry.record_job(self._conn, job, self._info.name)
        except Exception as exc:  # noqa: BLE001 - the next round reconnects
            log.warning("cluster: cannot record job %s: %s", job, _detail(exc))
            self._disconnect()

    def _finish(self) -> None:
        """The clean stop: the lease released (a follower leads at once), the row `stopped`."""
        if self._release(stopped=True):
            log.info("cluster: node %s left the cluster", self._info.name)
        self._disconnect()

    def _release(self, stopped: bool) -> bool:
        if self._conn is None:
            return False
        try:
            registry.release(self._conn, self._info.name, self.session, stopped=stopped)
        except Exception as exc:  # noqa: BLE001 - the lease lapses on its own
            log.warning("cluster: cannot release the lease: %s", _detail(exc))
            self._disconnect()
            return False
        self._role = "follower"
        return True


def _foreign(me: str, what: str, mine: str, rows: list[NodeRow]) -> str | None:
    """Why this node is not of the cluster (another Slack team or app), or None."""
    for row in rows:
        theirs = row.team_id if what == "team" else row.app_id
        if row.name != me and row.alive and theirs and theirs != mine:
            return (f"this node's Slack tokens belong to {what} {mine}, the cluster's (node {row.name}) to "
                    f"{theirs}: a cluster is one bot; fix SLACK_TOKEN / SLACK_APP_TOKEN or STORE_URL")
    return None
