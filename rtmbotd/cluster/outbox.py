"""The shared outbox on the loop's side: the cluster's items turned into outbox work.

- `SessionLost`, then a `ClusterState` naming our new session: another node declared us
  dead while we were away and took our committed rows; saved messages are held from the
  first, and the journal drops the committed ones at the second (the claimer sends them);
- `ClusterState`: its `node_until` is the fence of every message that may have a row
  (Journal.may_send), its member count divides the rate limit when PostgreSQL fails;
- `NodesDead`: the journal's writer claims each dead node's rows (`OutboxClaimed` back),
  routed like restored ones, after what this node queued already for their channels;
- `SlotReserved`: the cluster-wide rate limit's answers.
Created only in cluster mode.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from rtmbotd.cluster.coordinator import ClusterState, NodesDead, SessionLost
from rtmbotd.cluster.ratelimit import SharedRate, SlotReserved

if TYPE_CHECKING:
    from rtmbotd.daemon import Daemon

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxClaimed:
    """A dead node's rows, now ours (from the journal's writer)."""

    name: str
    rows: list


@dataclass(frozen=True)
class OutboxTaken:
    """Our committed rows another node took while we were away (from the journal's writer)."""

    seqs: frozenset


class SharedOutbox:
    def __init__(self, daemon: "Daemon", url: Any) -> None:
        self.daemon = daemon
        self.name = daemon.config.node_name
        self.rate = SharedRate(url, daemon.inbox.put_threadsafe, clock=daemon.clock)
        daemon.outbox.limiter_for = self.rate.limiter_for
        daemon.outbox.fence = daemon.journal.may_send

    def install(self, handlers: dict[type, Callable[[Any], None]]) -> None:
        """Add our items, and follow the cluster core's handling of its own."""
        for kind, ours in ((ClusterState, self.handle_state), (NodesDead, self.handle_nodes_dead),
                           (SessionLost, self.handle_session_lost)):
            theirs = handlers.get(kind)
            handlers[kind] = ours if theirs is None else _both(theirs, ours)
        handlers.update({OutboxClaimed: self.handle_claimed, OutboxTaken: self.handle_taken,
                         SlotReserved: self.rate.granted})

    # -- the cluster's items -----------------------------------------------------------
    def handle_state(self, item: ClusterState) -> None:
        journal = self.daemon.journal
        ours = next((m.session for m in item.members if m.name == self.name), None)
        if ours is not None and ours != journal.session:      # before the fence opens again
            log.warning("outbox: node %s was taken for dead; the node that took its saved messages sends "
                        "them, the ones never saved stay here", self.name)
            journal.session_lost(ours, lambda seqs: self.daemon.inbox.put_threadsafe(OutboxTaken(frozenset(seqs))))
        journal.node_until = item.node_until
        if item.members:        # a failed round (PostgreSQL unreachable) lists none: keep the last count
            self.rate.set_members(len(item.members))

    def handle_session_lost(self, item: SessionLost) -> None:
        """Our rows may be another node's now: hold every saved message until the writer says."""
        self.daemon.journal.hold_saved()

    def handle_nodes_dead(self, item: NodesDead) -> None:
        post = self.daemon.inbox.put_threadsafe
        for name in item.names:
            if name != self.name:
                self.daemon.journal.writer.claim(name, lambda dead, rows: post(OutboxClaimed(dead, rows)))

    def handle_claimed(self, item: OutboxClaimed) -> None:
        daemon = self.daemon
        outputs = daemon.journal.adopt(item.rows, whose=f"node {item.name}")
        if daemon.state.value == "starting":
            daemon._to_restore.extend(outputs)     # routed with the saved ones at the first swap
            return
        now = daemon.clock()
        for out in outputs:
            daemon.router.route(out, now)

    def handle_taken(self, item: OutboxTaken) -> None:
        seqs = set(item.seqs)
        self.daemon.outbox.discard(self.daemon.journal.taken(seqs))
        waiting = self.daemon.router.discard(seqs)      # waiting for a #name or a DM: not ours to send either
        if waiting:
            log.warning("outbox: %d message(s) waiting for a channel name or a DM are another node's to send now",
                        waiting)

    # -- the loop's own hooks ---------------------------------------------------------
    def event(self, data: Any) -> None:
        """An event from a channel: reserve that channel's next send slot while plugins run."""
        channel = data.get("channel") if isinstance(data, dict) else None
        if isinstance(channel, str):
            self.rate.prefetch(channel)

    def close(self) -> None:
        self.rate.close()


def _both(first: Callable[[Any], None], then: Callable[[Any], None]) -> Callable[[Any], None]:
    def handle(item: Any) -> None:
        first(item)
        then(item)
    return handle
