"""The host's throwaway PostgreSQL for the cluster system test, reached from the containers.

The server is scripts/postgres-test-server's (its own data directory, 127.0.0.1 only, trust
authentication for 127.0.0.1/32): STORE_TEST_POSTGRES_URL when the caller has one running
(scripts/test does), else started here (RTMBOTD_PG_PORT and RTMBOTD_PG_DIR choose which).
The containers are booted without --private-network, so they share the host's loopback:
their connections arrive from 127.0.0.1 and that rule accepts them; no pg_hba.conf edit.
Each run gets a database of its own, dropped and made again.
"""
from __future__ import annotations

import os
from pathlib import Path

from nspawn import ContainerError, run_host

REPO = Path(__file__).resolve().parents[2]
URL_PREFIX = "STORE_TEST_POSTGRES_URL="


def server_url(timeout: float = 300) -> str:
    """A postgresql:// URL of the test server, started by scripts/postgres-test-server if needed."""
    given = os.environ.get("STORE_TEST_POSTGRES_URL")
    if given:
        return given
    proc = run_host(["bash", str(REPO / "scripts/postgres-test-server")], timeout=timeout)
    found = [line[len(URL_PREFIX):] for line in proc.stdout.splitlines() if line.startswith(URL_PREFIX)]
    if proc.returncode != 0 or not found:
        raise ContainerError(f"scripts/postgres-test-server failed ({proc.returncode}):\n"
                             f"{proc.stderr[-2000:]}")
    return found[-1]


def _connect(url: str, dbname: str | None = None, **kwargs: object):  # noqa: ANN202
    import psycopg
    from sqlalchemy.engine import make_url

    db = make_url(url)
    return psycopg.connect(host=db.host, port=db.port, user=db.username,
                           dbname=dbname or db.database, connect_timeout=10, **kwargs)


def fresh_database(url: str, name: str) -> str:
    """Drop and create database `name` on the server of `url`; its URL, as the nodes use it."""
    from sqlalchemy.engine import make_url

    with _connect(url, "postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def query(url: str, sql: str) -> list[tuple]:
    """Rows of one read-only statement (what the nodes wrote, for a failure's diagnosis)."""
    with _connect(url) as conn:
        return conn.execute(sql).fetchall()
