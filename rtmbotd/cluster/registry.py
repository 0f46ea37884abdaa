"""The cluster's statements on PostgreSQL: the name lock, a node's row, the leader lease.

Every time is PostgreSQL's (`clock_timestamp()`), never a node's: clocks of hosts differ,
and a lease must mean the same to every node. Each function runs on a connection in
autocommit mode (each statement is its own transaction) and raises SQLAlchemy's
DBAPIError when the server cannot answer; the coordinator's thread alone calls them.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

from sqlalchemy import Connection, text

from rtmbotd.cluster.timing import LEASE_DEFER, LEASE_TTL, NODE_TTL

NOW = "CAST(extract(epoch from clock_timestamp()) AS double precision)"
LEASE_NAME = "leader"
_NAME_LOCK_NAMESPACE = 0x72746D6E     # "rtmn": advisory locks on node names (the store's are "rtmb")


@dataclass(frozen=True)
class NodeInfo:
    """What a node says about itself in rtmbot_nodes."""

    name: str
    host: str
    pid: int
    version: str
    schema_version: int
    plugins: tuple[str, ...] = ()
    link: str = "starting"
    team_id: str | None = None
    app_id: str | None = None


@dataclass(frozen=True)
class NodeRow:
    """One row of rtmbot_nodes as `cluster status` and the coordinator read it."""

    name: str
    session: str
    host: str
    pid: int
    version: str
    schema_version: int
    age: float               # seconds since its last heartbeat, by PostgreSQL's clock
    role: str
    link: str
    plugins: tuple[str, ...]
    team_id: str | None
    app_id: str | None

    @property
    def alive(self) -> bool:
        return self.role != "stopped" and self.age <= NODE_TTL


def drop_connection(conn: Connection | None) -> None:
    """Throw `conn` away, never back into its pool (its session may hold locks or a half
    statement): what closing a dead connection raises does not matter, it is gone either way."""
    if conn is not None:
        try:
            conn.invalidate()
            conn.close()
        except Exception:  # noqa: BLE001 - it is gone either way
            pass


def _name_key(name: str) -> int:
    key = zlib.crc32(name.encode("utf-8"))
    return key - (1 << 32) if key >= (1 << 31) else key     # int4 is signed


def lock_name(conn: Connection, name: str) -> bool:
    """Take the session-level lock on `name`; False when another live process holds it.
    It lasts as long as the connection: a process killed with -9 loses it at once."""
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(:ns, :key)"),
                             {"ns": _NAME_LOCK_NAMESPACE, "key": _name_key(name)}).scalar())


def evict_stale_holder(conn: Connection, name: str, wait: float = 2.0) -> bool:
    """End the server process holding `name`'s lock when its node stopped heartbeating
    (NODE_TTL by PostgreSQL's clock: dead by the cluster's own rule). The host lost power or
    its network, and the server, not told, would keep the lock for hours (TCP keepalive); or
    the process was killed while its backend waited inside a statement (a backend notices
    its client is gone only when it next talks to it). True when one ended."""
    return bool(conn.execute(text(
        "SELECT bool_or(pg_terminate_backend(l.pid, CAST(:wait_ms AS bigint)))"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.pid <> pg_backend_pid()"
        " AND l.classid = CAST(CAST(:ns AS bigint) AS oid) AND l.objid = CAST(CAST(:key AS bigint) AS oid)"
        f" AND EXISTS (SELECT 1 FROM rtmbot_nodes WHERE name = :name AND heartbeat_at < {NOW} - :ttl)"),
        {"ns": _NAME_LOCK_NAMESPACE, "key": _name_key(name) & 0xFFFFFFFF, "name": name, "ttl": NODE_TTL,
         "wait_ms": int(wait * 1000)}).scalar())


def register(conn: Connection, info: NodeInfo, session: str, role: str = "follower") -> float:
    """Write this process's row (a new `session`); returns seconds until it could be called dead."""
    params = _info_params(info) | {"session": session, "role": role, "ttl": NODE_TTL}
    return float(conn.execute(text(
        f"INSERT INTO rtmbot_nodes (name, session, host, pid, version, schema_version, started_at, heartbeat_at,"
        f" role, link, plugins, team_id, app_id)"
        f" VALUES (:name, :session, :host, :pid, :version, :schema_version, {NOW}, {NOW}, :role, :link,"
        f" :plugins, :team_id, :app_id)"
        f" ON CONFLICT (name) DO UPDATE SET session = excluded.session, host = excluded.host, pid = excluded.pid,"
        f" version = excluded.version, schema_version = excluded.schema_version, started_at = excluded.started_at,"
        f" heartbeat_at = excluded.heartbeat_at, role = excluded.role, link = excluded.link,"
        f" plugins = excluded.plugins, team_id = excluded.team_id, app_id = excluded.app_id"
        f" RETURNING heartbeat_at + :ttl - {NOW}"), params).scalar())


def heartbeat(conn: Connection, info: NodeInfo, session: str, role: str) -> float | None:
    """Renew this node's heartbeat; seconds until it could be called dead, None when its
    row no longer carries `session` (another node declared it dead while it was away)."""
    params = _info_params(info) | {"session": session, "role": role, "ttl": NODE_TTL}
    value = conn.execute(text(
        f"UPDATE rtmbot_nodes SET heartbeat_at = {NOW}, role = :role, link = :link, plugins = :plugins,"
        f" team_id = :team_id, app_id = :app_id"
        f" WHERE name = :name AND session = :session RETURNING heartbeat_at + :ttl - {NOW}"), params).scalar()
    return None if value is None else float(value)


@dataclass(frozen=True)
class LeaseRound:
    """The lease after one round: `holder` (None: nobody valid), our `epoch` and seconds
    `remaining` when we hold it."""

    holder: str | None
    epoch: int
    remaining: float | None


# A lapsed lease is ours to take when no other live node started before us (the lease's
# last holder aside: it may be resigning), or when it has lain lapsed for LEASE_DEFER: a
# node restarted at once after kill -9 leaves it to the follower that outlived it, and
# nobody waits on an older node that is hung or slow.
_MAY_TAKE = (f"expires_at <= {NOW} - :defer OR NOT EXISTS (SELECT 1 FROM rtmbot_nodes o, rtmbot_nodes me"
             f" WHERE me.name = :name AND me.session = :session AND o.name <> :name AND o.role <> 'stopped'"
             f" AND o.heartbeat_at > {NOW} - :node_ttl AND o.session IS DISTINCT FROM rtmbot_lease.session"
             f" AND (o.started_at, o.name) < (me.started_at, me.name))")


def take_lease(conn: Connection, name: str, session: str, want: bool = True) -> LeaseRound:
    """Renew the lease if we hold it, take it if it lapsed and it is our turn (a new
    holder: epoch + 1), and say who holds it otherwise. `want=False` (stopping) only reads."""
    params = {"lease": LEASE_NAME, "name": name, "session": session, "ttl": LEASE_TTL, "defer": LEASE_DEFER,
              "node_ttl": NODE_TTL}
    if want:
        for _ in range(2):
            row = conn.execute(text(
                f"UPDATE rtmbot_lease SET holder = :name, session = :session,"
                f" epoch = CASE WHEN session = :session THEN epoch ELSE epoch + 1 END,"
                f" expires_at = {NOW} + :ttl"
                f" WHERE name = :lease AND (session = :session OR (expires_at <= {NOW} AND ({_MAY_TAKE})))"
                f" RETURNING epoch, expires_at - {NOW}"), params).first()
            if row is not None:
                return LeaseRound(name, int(row[0]), float(row[1]))
            inserted = conn.execute(text(
                "INSERT INTO rtmbot_lease (name, holder, session, epoch, expires_at)"
                " VALUES (:lease, NULL, NULL, 0, 0) ON CONFLICT (name) DO NOTHING"), params).rowcount
            if not inserted:
                break
    row = conn.execute(text(f"SELECT holder, epoch, expires_at > {NOW} FROM rtmbot_lease WHERE name = :lease"),
                       params).first()
    if row is None or not row[2]:
        return LeaseRound(None, int(row[1]) if row else 0, None)
    return LeaseRound(row[0], int(row[1]), None)


def release(conn: Connection, name: str, session: str, *, stopped: bool) -> None:
    """Give the lease up now (a follower takes it at its next round); `stopped`: mark the row."""
    params = {"lease": LEASE_NAME, "name": name, "session": session}
    conn.execute(text(f"UPDATE rtmbot_lease SET expires_at = {NOW} WHERE name = :lease AND session = :session"),
                 params)
    if stopped:
        conn.execute(text(f"UPDATE rtmbot_nodes SET role = 'stopped', heartbeat_at = {NOW}"
                          " WHERE name = :name AND session = :session"), params)


def nodes(conn: Connection) -> list[NodeRow]:
    """Every node row, by name."""
    rows = conn.execute(text(
        f"SELECT name, session, host, pid, version, schema_version, {NOW} - heartbeat_at, role, link, plugins,"
        " team_id, app_id FROM rtmbot_nodes ORDER BY name")).all()
    return [NodeRow(r[0], r[1], r[2], int(r[3]), r[4], int(r[5]), max(0.0, float(r[6])), r[7], r[8],
                    _plugins(r[9]), r[10], r[11]) for r in rows]


def record_job(conn: Connection, job: str, node: str) -> None:
    """A timed job starts now (the leader records it, so a new leader carries the schedule on)."""
    conn.execute(text(
        f"INSERT INTO rtmbot_jobs (job, last_run, node) VALUES (:job, {NOW}, :node)"
        " ON CONFLICT (job) DO UPDATE SET last_run = excluded.last_run, node = excluded.node"),
        {"job": job, "node": node})


def job_ages(conn: Connection) -> dict[str, float]:
    """How long ago (by PostgreSQL's clock) each job last started anywhere in the cluster."""
    return {r[0]: max(0.0, float(r[1])) for r in conn.execute(text(f"SELECT job, {NOW} - last_run FROM rtmbot_jobs"))}


def _info_params(info: NodeInfo) -> dict:
    return {"name": info.name, "host": info.host, "pid": info.pid, "version": info.version,
            "schema_version": info.schema_version, "link": info.link, "plugins": json.dumps(list(info.plugins)),
            "team_id": info.team_id, "app_id": info.app_id}


def _plugins(value: str | None) -> tuple[str, ...]:
    try:
        names = json.loads(value or "[]")
    except ValueError:
        return ()
    return tuple(str(n) for n in names) if isinstance(names, list) else ()
