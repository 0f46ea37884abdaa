"""`rtmbotd -c CONF cluster status`: every node of the cluster, read from PostgreSQL.

Exit 78 for a config without CLUSTER, 69 when PostgreSQL cannot be reached (one line).
"""
from __future__ import annotations

import os

from rtmbotd.config import Config
from rtmbotd.errors import ConfigError, RtmbotdError


class ClusterUnreachableError(RtmbotdError):
    exit_code = os.EX_UNAVAILABLE


HEADER = ("NODE", "ROLE", "HOST", "PID", "HEARTBEAT", "SLACK", "VERSION")


def cluster_status(config: Config) -> str:
    """The table `cluster status` prints; raises ConfigError / ClusterUnreachableError."""
    if not config.cluster:
        raise ConfigError(f"{config.path}: CLUSTER is not set: this node is not in a cluster")
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError
    from rtmbotd.cluster import registry
    from rtmbotd.cluster.coordinator import _detail, make_engine
    from rtmbotd.store.url import display_url, resolve_url
    url = resolve_url(config.store_url, config.base_path)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if conn.execute(text("SELECT to_regclass('rtmbot_nodes')")).scalar() is None:
                raise ClusterUnreachableError(f"{display_url(url)}: no node has joined this cluster yet")
            rows = registry.nodes(conn)
            lease = registry.take_lease(conn, "", "", want=False)
    except DBAPIError as exc:
        raise ClusterUnreachableError(f"cluster status: cannot reach PostgreSQL at {display_url(url)} "
                                      f"({_detail(exc)})") from None
    finally:
        engine.dispose()
    return render(rows, lease.holder, lease.epoch)


def render(rows: list, leader: str | None, epoch: int) -> str:
    table = [HEADER]
    for row in rows:
        if row.role == "stopped":
            role = "stopped"
        elif not row.alive:
            role = "dead"
        else:
            role = "leader" if row.name == leader else "follower"
        table.append((row.name, role, row.host, str(row.pid), f"{row.age:.1f} s ago", row.link, row.version))
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    lines.append(f"leader: {leader} (epoch {epoch})" if leader else "leader: none (the lease is free)")
    return "\n".join(lines)
