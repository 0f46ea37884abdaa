"""The store's tables and their versioned, in-place migrations.

`rtmbot_meta` holds `schema_version`. Opening a database runs every migration whose
version is above the stored one, each in the caller's write transaction. A migration
describes its own tables (never the current ones below), so version 1 still builds
version 1 after later versions change things.

Rolling upgrades (nodes of two versions on one cluster): each migration says whether
code that knows only the versions before it can still read and write the database
(`compatible`: additive ones, such as new tables, can). `rtmbot_meta` keeps the oldest
schema version that can still use the database (`compatible_from`, raised by every
incompatible migration); a database from a newer rtmbotd is used when this code is at
least that version, and refused otherwise. An incompatible migration waits while live
nodes (fresh heartbeat in rtmbot_nodes) run an older schema: StoreSchemaWaitError,
which the daemon retries like an unreachable server, saying so in STATUS.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from sqlalchemy import (BigInteger, Column, Connection, Float, Integer, MetaData, PrimaryKeyConstraint, Table, Text,
                        UniqueConstraint, inspect)
from sqlalchemy import column, select, table, text

from rtmbotd.store.errors import StoreVersionError

log = logging.getLogger(__name__)

META_TABLE = "rtmbot_meta"
VERSION_KEY = "schema_version"
COMPATIBLE_KEY = "compatible_from"


def _key_text() -> Text:
    # Byte-order ("C") collation on PostgreSQL, as SQLite's default BINARY: keys sort
    # the same on both, and a prefix range is a plain comparison.
    return Text().with_variant(Text(collation="C"), "postgresql")


# What the running code reads and writes (lightweight, no DDL).
meta = table(META_TABLE, column("name"), column("value"))
kv = table("rtmbot_kv", column("plugin"), column("key"), column("value"))
outbox = table("rtmbot_outbox", column("owner"), column("seq"), column("record"))   # version 1: saved whole
outbox_rows = table("rtmbot_outbox_rows", column("id"), column("owner"), column("seq"), column("channel"),
                    column("record"), column("created_at"))
# Cluster coordination (version 3). Times are Unix seconds by PostgreSQL's clock
# (`extract(epoch from clock_timestamp())`), never a node's own: nodes' clocks may differ.
nodes = table("rtmbot_nodes", column("name"), column("session"), column("host"), column("pid"),
              column("version"), column("schema_version"), column("started_at"), column("heartbeat_at"),
              column("role"), column("link"), column("plugins"), column("team_id"), column("app_id"))
lease = table("rtmbot_lease", column("name"), column("holder"), column("session"), column("epoch"),
              column("expires_at"))
jobs = table("rtmbot_jobs", column("job"), column("last_run"), column("node"))
events = table("rtmbot_events", column("event_id"), column("node"), column("seen_at"))
rate = table("rtmbot_rate", column("channel"), column("tat"))


def _create_v1(conn: Connection) -> None:
    """Version 1: meta, the per-plugin key/value rows and the durable outbox."""
    md = MetaData()
    Table(META_TABLE, md, Column("name", Text, primary_key=True), Column("value", Text, nullable=False))
    Table("rtmbot_kv", md,
          Column("plugin", _key_text(), nullable=False),
          Column("key", _key_text(), nullable=False),
          Column("value", Text, nullable=False),            # JSON text
          PrimaryKeyConstraint("plugin", "key"))
    Table("rtmbot_outbox", md,
          Column("owner", Text, nullable=False),
          Column("seq", Integer, nullable=False, autoincrement=False),
          Column("record", Text, nullable=False),            # JSON text
          PrimaryKeyConstraint("owner", "seq"))
    md.create_all(conn)


def _create_v2(conn: Connection) -> None:
    """Version 2: the outbox as one row per message, added and deleted as messages wait and go.

    Version 1's `rtmbot_outbox` stays: an older rtmbotd's saved outbox is moved over on
    the first load, and dropping a table under a running older version is never safe."""
    md = MetaData()
    Table("rtmbot_outbox_rows", md,
          Column("id", Integer, primary_key=True, autoincrement=True),
          Column("owner", Text, nullable=False),
          Column("seq", BigInteger, nullable=False, autoincrement=False),   # send order, per owner
          Column("channel", Text, nullable=False),
          Column("record", Text, nullable=False),                          # JSON text
          Column("created_at", Float, nullable=False),                     # Unix time, for people
          UniqueConstraint("owner", "seq", name="rtmbot_outbox_rows_owner_seq"))
    md.create_all(conn)


def _create_v3(conn: Connection) -> None:
    """Version 3: what nodes of a cluster share besides the store and the outbox.

    - rtmbot_nodes: one row per node name (its process's `session`, heartbeat, role, Slack
      link, plugins and Slack team/app, for `cluster status` and the checks at join);
    - rtmbot_lease: the leader lease (`holder` until `expires_at`; `epoch` grows with
      every new holder: the fencing token);
    - rtmbot_jobs: when each timed job (by its stable name) last ran cluster-wide;
    - rtmbot_events: Socket Mode event_ids some node has taken (a retry is handled once);
    - rtmbot_rate: per-channel send schedule (GCRA theoretical arrival time) shared by nodes.
    Only new tables: a version-2 reader's tables are untouched."""
    md = MetaData()
    Table("rtmbot_nodes", md,
          Column("name", _key_text(), primary_key=True),
          Column("session", Text, nullable=False),          # one per process start
          Column("host", Text, nullable=False),
          Column("pid", Integer, nullable=False),
          Column("version", Text, nullable=False),           # rtmbotd's version
          Column("schema_version", Integer, nullable=False),  # the newest schema it knows
          Column("started_at", Float, nullable=False),
          Column("heartbeat_at", Float, nullable=False),
          Column("role", Text, nullable=False),              # leader, follower, starting, stopped
          Column("link", Text, nullable=False),              # its Slack link, as in STATUS
          Column("plugins", Text, nullable=False),           # JSON: sorted plugin names
          Column("team_id", Text, nullable=True),
          Column("app_id", Text, nullable=True))
    Table("rtmbot_lease", md,
          Column("name", Text, primary_key=True),            # "leader"
          Column("holder", Text, nullable=True),             # node name
          Column("session", Text, nullable=True),
          Column("epoch", BigInteger, nullable=False),
          Column("expires_at", Float, nullable=False))
    Table("rtmbot_jobs", md,
          Column("job", _key_text(), primary_key=True),      # "<plugin>/<function>[#n]"
          Column("last_run", Float, nullable=False),
          Column("node", Text, nullable=False))
    Table("rtmbot_events", md,
          Column("event_id", Text, primary_key=True),
          Column("node", Text, nullable=False),
          Column("seen_at", Float, nullable=False, index=True))
    Table("rtmbot_rate", md,
          Column("channel", Text, primary_key=True),
          Column("tat", Float, nullable=False))
    md.create_all(conn)


@dataclass(frozen=True)
class Migration:
    """Brings a database from `version - 1` to `version`."""

    version: int
    description: str
    apply: Callable[[Connection], None]
    compatible: bool = False      # code older than `version` can still use the database after it


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create rtmbot_meta, rtmbot_kv, rtmbot_outbox", _create_v1),
    Migration(2, "create rtmbot_outbox_rows (one row per queued message)", _create_v2),
    Migration(3, "create the cluster tables rtmbot_nodes, rtmbot_lease, rtmbot_jobs, rtmbot_events, rtmbot_rate",
              _create_v3, compatible=True),      # only new tables: version-2 nodes work on beside it
)


def stored_version(conn: Connection) -> int:
    """The database's schema version; 0 when it has no rtmbot_meta (new or pre-store)."""
    if not inspect(conn).has_table(META_TABLE):
        return 0
    value = conn.execute(select(meta.c.value).where(meta.c.name == VERSION_KEY)).scalar()
    return int(value) if value is not None else 0


def compatible_from(conn: Connection, current: int) -> int:
    """The oldest schema version that can still use the database; `current` when the
    database does not say (written before rolling upgrades: only its own version can)."""
    if current == 0:
        return 0
    value = conn.execute(select(meta.c.value).where(meta.c.name == COMPATIBLE_KEY)).scalar()
    return int(value) if value is not None else current


def newest(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    return max((m.version for m in migrations), default=0)


def refuse_newer(current: int, where: str, migrations: Sequence[Migration] = MIGRATIONS,
                 compatible: int | None = None) -> None:
    """StoreVersionError when the database is newer than this code and no longer usable by it
    (`compatible`: the database's compatible_from; None: only its own version can use it)."""
    mine = newest(migrations)
    if current > mine and (compatible if compatible is not None else current) > mine:
        raise StoreVersionError(
            f"{where}: schema version {current} was written by a newer rtmbotd; this one knows "
            f"up to version {mine}. Upgrade rtmbotd, or restore a backup made by this version.")
    if current > mine:
        log.info("%s: schema version %d from a newer rtmbotd; version %d code can still use it", where, current,
                 mine)


def upgrade(conn: Connection, where: str, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Migrate in place to the newest known version, inside the caller's transaction.
    Raises StoreSchemaWaitError before an incompatible migration while older nodes live."""
    current = stored_version(conn)
    floor = compatible_from(conn, current)
    refuse_newer(current, where, migrations, floor)
    for migration in sorted(migrations, key=lambda m: m.version):
        if migration.version <= current:
            continue
        if not migration.compatible:
            _wait_for_older_nodes(conn, migration.version, where)
            floor = migration.version
        log.info("%s: upgrading store schema to version %d: %s", where, migration.version, migration.description)
        migration.apply(conn)
        _set_meta(conn, VERSION_KEY, migration.version)
        _set_meta(conn, COMPATIBLE_KEY, floor)
        current = migration.version
    return current


def _wait_for_older_nodes(conn: Connection, version: int, where: str) -> None:
    """A migration older code cannot live with waits while live nodes run an older schema."""
    from rtmbotd.cluster.timing import NODE_TTL
    from rtmbotd.store.errors import StoreSchemaWaitError
    if conn.dialect.name != "postgresql" or not inspect(conn).has_table("rtmbot_nodes"):
        return
    older = conn.execute(text(
        "SELECT name, schema_version FROM rtmbot_nodes WHERE role <> 'stopped' AND schema_version < :v"
        " AND heartbeat_at > CAST(extract(epoch from clock_timestamp()) AS double precision) - :ttl ORDER BY name"),
        {"v": version, "ttl": NODE_TTL}).all()
    if older:
        oldest = min(r[1] for r in older)
        raise StoreSchemaWaitError(where, f"waiting for nodes of schema {oldest} to stop "
                                          f"({', '.join(r[0] for r in older)}) before upgrading to version {version}")


def _set_meta(conn: Connection, name: str, value: int) -> None:
    updated = conn.execute(meta.update().where(meta.c.name == name).values(value=str(value)))
    if updated.rowcount == 0:
        conn.execute(meta.insert().values(name=name, value=str(value)))
