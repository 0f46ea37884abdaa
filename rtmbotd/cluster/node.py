"""The loop's side of the cluster: what the daemon does with the coordinator's items.

It keeps the last `ClusterState` (as `daemon.cluster_state`), gates the timed jobs on a
lease valid by our own clock (and drops a job's outputs when the lease it ran under is
gone: fencing), keeps RTM on the leader only, words the role for STATUS and sets the
`rtmbotd_cluster_leader` gauge. Created only in cluster mode.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Callable

from rtmbotd import __version__
from rtmbotd.cluster.coordinator import (ClusterState, Coordinator, ForeignNode, JobRuns, NodesDead, SessionLost,
                                         make_engine)
from rtmbotd.cluster.registry import NodeInfo
from rtmbotd.outbox.queue import Message

if TYPE_CHECKING:
    from rtmbotd.daemon import Daemon

log = logging.getLogger(__name__)

RTM_HELD = "standing by (RTM connects from the leader only)"


class ClusterNode:
    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon
        config = daemon.config
        from rtmbotd.store.schema import newest
        from rtmbotd.store.url import display_url, resolve_url
        url = resolve_url(config.store_url, config.base_path)
        self.name = config.node_name
        info = NodeInfo(config.node_name, socket.gethostname(), os.getpid(), __version__, newest())
        self.coordinator = Coordinator(make_engine(url), info, daemon.inbox.put_threadsafe, clock=daemon.clock,
                                       where=display_url(url))
        self.handlers = {ClusterState: self.handle_state, JobRuns: self.handle_job_runs,
                         NodesDead: self.handle_nodes_dead, SessionLost: self.handle_session_lost,
                         ForeignNode: self.handle_foreign}
        self._identity: tuple[str | None, str | None] = (None, None)
        self.app_id: str | None = None      # from Socket Mode's hello
        self._shown: str | None = None      # the role words STATUS last showed
        self._job_outputs: dict[int, int] = {}   # a job output's journal seq: the epoch the job ran under

    # -- start and stop ---------------------------------------------------------------
    def join(self) -> None:
        """Register (raises DuplicateNodeError), then heartbeat on the coordinator's thread."""
        self.coordinator.register()
        host = self.daemon.host
        host.jobs_gate = self.jobs_gate
        host.job_started = self.coordinator.job_started
        self._hold_rtm(self.daemon.clock())
        self.coordinator.start()

    def resign(self) -> None:
        self.coordinator.resign()

    async def leave(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.coordinator.stop)

    # -- the coordinator's items ----------------------------------------------------
    def handle_state(self, item: ClusterState) -> None:
        daemon = self.daemon
        now = daemon.clock()
        daemon.cluster_state = item
        identity = daemon.connector.identity or {}
        ids = (identity.get("team_id"), self.app_id or identity.get("app_id"))
        changes: dict[str, Any] = {"link": daemon.connector.status()}
        if ids != self._identity and any(ids):
            self._identity = ids
            changes.update(team_id=ids[0], app_id=ids[1])
        self.coordinator.update(**changes)
        self._drop_fenced_outputs(item, now)
        self.tick(now)

    def tick(self, now: float) -> None:
        """STATUS follows the role at once, also when a lease lapses between two rounds."""
        self._hold_rtm(now)
        words = self.words(now)
        if words != self._shown:
            self._shown = words
            self.daemon.metrics.cluster_leader(self.leading(now))
            self.daemon.refresh_status(now)

    def next_deadline(self, now: float) -> float | None:
        """While leading: when the lease lapses by our clock (unless renewed before)."""
        state = self.daemon.cluster_state
        if state is None or not state.leading(now):
            return None
        return min(state.lease_until, state.node_until)

    def handle_job_runs(self, item: JobRuns) -> None:
        """Became the leader: carry the cluster's schedule on (each job one interval after it last ran)."""
        now = self.daemon.clock()
        wall = time.time() - (now - item.at)      # the wall time the ages were measured at
        self.daemon.host.scheduler.resume({name: wall - age for name, age in item.ages.items()}, now)

    def handle_nodes_dead(self, item: NodesDead) -> None:
        log.info("cluster: node(s) %s dead", ", ".join(item.names))

    def handle_session_lost(self, item: SessionLost) -> None:
        log.warning("cluster: node %s was taken for dead while away; it joins again", self.name)

    def handle_foreign(self, item: ForeignNode) -> None:
        log.error("cluster: node %s refused: %s", self.name, item.reason)
        self.daemon.exit_code = os.EX_CONFIG
        self.daemon.handle_term()

    # -- what the loop asks -------------------------------------------------------------
    def leading(self, now: float) -> bool:
        state = self.daemon.cluster_state
        return state is not None and state.leading(now)

    def jobs_gate(self, now: float) -> int | None:
        """The lease's epoch while we may run jobs now, else None."""
        state = self.daemon.cluster_state
        return state.epoch if state is not None and state.leading(now) else None

    def job_fenced(self, token: int | None, now: float) -> bool:
        """A job's outputs are dropped when the lease it ran under is no longer ours."""
        return token is not None and self.jobs_gate(now) != token

    # -- job outputs queued in the outbox: fenced until they go -------------------------
    def job_output(self, tag: int, token: int) -> None:
        """A job's output, queued under lease epoch `token`: it goes out only while we lead
        under that epoch (a leader resumed after SIGSTOP sends none of its queue before
        the next round), and is dropped once a round says that lease is gone."""
        self._job_outputs[tag] = token

    def fence(self, inner: Callable[[Message, float], bool] | None) -> Callable[[Message, float], bool]:
        """The outbox's fence: a job's output needs its lease, then `inner` decides."""
        def may_send(msg: Message, now: float) -> bool:
            token = self._job_outputs.get(msg.tag)
            if token is not None and self.jobs_gate(now) != token:
                return False
            return inner is None or inner(msg, now)
        return may_send

    def _drop_fenced_outputs(self, item: ClusterState, now: float) -> None:
        if not self._job_outputs or item.problem:
            return                      # PostgreSQL unreachable: the lease may still be ours, hold
        journal = self.daemon.journal
        ours = item.epoch if item.leading(now) else None
        lost = [tag for tag, token in self._job_outputs.items() if token != ours]
        self._job_outputs = {tag: token for tag, token in self._job_outputs.items()
                             if token == ours and journal.holds(tag)}
        parts = journal.drop(lost)
        if parts:
            self.daemon.outbox.discard(parts)
            log.warning("cluster: %d queued job output(s) dropped: the lease they ran under is gone", len(parts))

    def _hold_rtm(self, now: float) -> None:
        daemon = self.daemon
        rtm = daemon.config.connection != "socket_mode"
        daemon.connector.hold(RTM_HELD if rtm and not self.leading(now) else None, now)

    def words(self, now: float) -> str:
        """The STATUS line's start: the node's own role first (`leader` / `follower (...)`)."""
        state = self.daemon.cluster_state
        problem = self.coordinator.problem
        if state is None:
            return f"follower ({problem})" if problem else "follower (joining the cluster)"
        if state.leading(now):
            words = "leader"
        elif state.problem:
            words = f"follower ({state.problem})"
        elif state.leader and state.leader != self.name:
            words = f"follower (leader: {state.leader})"
        else:
            words = "follower (no leader yet)"
        return f"{words}; {state.warning}" if state.warning else words
