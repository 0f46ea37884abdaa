"""Drive a cluster of real `rtmbotd` processes: N nodes (distinct NODE_NAMEs, one config
each) against one fake Slack and a throwaway PostgreSQL server of the test run's own.

    server = PgServer.from_env()          # scripts/postgres-test-server, stopped/started by tests
    cluster = Cluster(tmp_path, fake, server.new_database(), n=3, mode="socket_mode", plugins=...)
    cluster.start()
    leader = cluster.wait_leader()        # by each node's STATUS on its NOTIFY_SOCKET
    leader.signal(signal.SIGKILL)

The server is the one at $RTMBOTD_PG_PORT / $RTMBOTD_PG_DIR (defaults: a port and
directory of the cluster tests alone), never a shared one: tests stop and start it.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

from tests.e2e.harness import REPO, Rtmbotd, clean_env, rtmbotd_command, wait_until

DEFAULT_PORT = "55449"
DEFAULT_DIR = "/tmp/rtmbotd-pg-cluster-tests"
ROLE = re.compile(r"\b(leader|follower)\b")


class PgServer:
    """The test run's own PostgreSQL server (scripts/postgres-test-server)."""

    def __init__(self, port: str, root: str) -> None:
        self.port, self.root = port, root
        self.url = self._script("start")

    @classmethod
    def from_env(cls) -> "PgServer":
        return cls(os.environ.get("RTMBOTD_PG_PORT", DEFAULT_PORT), os.environ.get("RTMBOTD_PG_DIR", DEFAULT_DIR))

    def _script(self, action: str) -> str:
        env = dict(os.environ, RTMBOTD_PG_PORT=self.port, RTMBOTD_PG_DIR=self.root)
        done = subprocess.run(["bash", str(REPO / "scripts" / "postgres-test-server"), action], env=env,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"postgres-test-server {action} failed: {done.stderr[-2000:]}")
        last = (done.stdout.strip().splitlines() or [""])[-1]
        return last.split("=", 1)[1] if last.startswith("STORE_TEST_POSTGRES_URL=") else ""

    def stop(self) -> None:
        self._script("stop")

    def start(self) -> None:
        self._script("start")

    def new_database(self) -> str:
        """A fresh, empty database for one test: its URL."""
        from sqlalchemy import create_engine, text
        name = f"cluster_{uuid.uuid4().hex[:12]}"
        engine = create_engine(self.url.replace("postgresql://", "postgresql+psycopg://", 1),
                               isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return self.url.rsplit("/", 1)[0] + "/" + name

    def query(self, url: str, sql: str) -> list:
        from sqlalchemy import create_engine, text
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                return conn.execute(text(sql)).all()
        finally:
            engine.dispose()


class Node(Rtmbotd):
    """One node: an Rtmbotd with CLUSTER, its NODE_NAME and the shared STORE_URL."""

    def __init__(self, tmp_path: Path, fake, name: str, store_url: str, **kwargs) -> None:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        settings = {"CLUSTER": True, "NODE_NAME": name, "STORE_URL": store_url, **kwargs.pop("settings", {})}
        super().__init__(folder, fake, settings=settings, **kwargs)
        self.name = name

    def start(self, *args: str, wait_ready: bool = True, wait_connected: bool = False) -> "Node":
        seen = len(self.notify) if self.notify is not None else 0
        super().start(*args, wait_ready=False, wait_connected=wait_connected)
        if wait_ready:
            self.notify.wait_for("READY", "1", after=seen, timeout=60)
        return self

    def status(self) -> str:
        statuses = self.notify.statuses()
        return statuses[-1] if statuses else ""

    def role(self) -> str | None:
        """The node's own role: the first of `leader` / `follower` in its last STATUS."""
        found = ROLE.search(self.status())
        return found.group(1) if found else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(rtmbotd_command() + ["-c", str(self.conf), *args], env=clean_env(),
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


class Cluster:
    def __init__(self, tmp_path: Path, fake, store_url: str, *, n: int = 3, **kwargs) -> None:
        self.store_url = store_url
        self.nodes = [Node(tmp_path, fake, f"n{i}", store_url, **_per_node(kwargs, f"n{i}")) for i in range(1, n + 1)]

    def __getitem__(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def start(self) -> "Cluster":
        for node in self.nodes:
            node.start()
        return self

    def live(self) -> list[Node]:
        return [node for node in self.nodes if node.alive()]

    def leaders(self) -> list[Node]:
        return [node for node in self.live() if node.role() == "leader"]

    def wait_leader(self, timeout: float = 60.0, other_than: Node | None = None) -> Node:
        """The one leader by STATUS, once every other live node says it follows."""
        def settled() -> Node | None:
            live = [n for n in self.live() if n is not other_than and n.proc.returncode is None]
            leaders = [n for n in live if n.role() == "leader"]
            followers = [n for n in live if n.role() == "follower"]
            if len(leaders) == 1 and len(followers) == len(live) - 1:
                return leaders[0]
            return None
        return wait_until(settled, timeout, lambda: "one leader; STATUS: " +
                          "; ".join(f"{n.name}: {n.status()!r}" for n in self.nodes))

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                try:
                    node.proc.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
            node.stop()


def _per_node(kwargs: dict, name: str) -> dict:
    """Keyword arguments for one node; `settings` may be a function of the node's name."""
    out = dict(kwargs)
    settings = out.get("settings")
    if callable(settings):
        out["settings"] = settings(name)
    return out
