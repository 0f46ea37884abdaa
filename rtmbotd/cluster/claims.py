"""Socket Mode events handled once cluster-wide: each event_id is claimed in rtmbot_events.

Slack sends each envelope to one of the app's connections and retries an unacked (or
slow) one, with the same payload `event_id`, perhaps on another node's connection; a
node resumed after SIGSTOP may also read the original after the retry was handled
elsewhere. Before an event is dispatched its event_id is inserted
(`INSERT ... ON CONFLICT DO NOTHING RETURNING`, one round trip): the node whose insert
made the row handles it, every other node only acks it (the link acks on reading, so
the 3 s rule never waits for PostgreSQL).

Two halves, as STYLE.md wants: `ClaimQueue` is the loop's state (events in arrival
order, each waiting for its answer at most `CLAIM_TIMEOUT`, and the breaker), plain and
tested without threads; `ClaimWorker` is the thread with its own connection that runs
the statements and posts `ClaimAnswer`, `ClaimsDown` and `ClaimsUp` to the inbox.

While PostgreSQL cannot answer (down, or no answer within `CLAIM_TIMEOUT`) events are
dispatched unchecked: replies stay available, a Slack retry landing on another node may
be answered twice. The breaker keeps an outage from costing every event the timeout:
no claim is sent until the worker, retrying every `RETRY_EVERY`, reaches the table again.
The event_ids dispatched unchecked (the last `UNCHECKED_KEPT`) are claimed when it does,
so Slack's later retries of them (for minutes) are not answered a second time.
Events without an event_id (slash commands, interactive payloads) are not claimed:
Slack never retries them under a shared id.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from rtmbotd.cluster import registry
from rtmbotd.slack.protocol import Event

log = logging.getLogger(__name__)

CLAIM_TIMEOUT = 1.0     # s an event waits for its claim before it is dispatched unchecked
RETRY_EVERY = 2.0       # s between the worker's tries to reach PostgreSQL again after a failure
PURGE_EVERY = 60.0      # s between deletions of old rows (by any node)
PURGE_BATCH = 5000      # rows one purge statement deletes at most; a full batch: the next one a second later
KEEP_FOR = 3600.0       # s a claimed event_id is kept (Slack's last retry comes after ~5 min)
CONNECT_TIMEOUT = 2     # s; libpq's minimum that means anything
UNCHECKED_KEPT = 10000  # event_ids dispatched unchecked, claimed once PostgreSQL answers (memory bound)

_CLAIM_SQL = ("INSERT INTO rtmbot_events (event_id, node, seen_at) "
              "VALUES (:event_id, :node, extract(epoch from clock_timestamp())) "
              "ON CONFLICT (event_id) DO NOTHING RETURNING 1")
_LATE_CLAIM_SQL = ("INSERT INTO rtmbot_events (event_id, node, seen_at) "    # one statement for them all
                   "SELECT unnest(CAST(:event_ids AS text[])), :node, extract(epoch from clock_timestamp()) "
                   "ON CONFLICT (event_id) DO NOTHING")
# In batches, skipping rows another node's purge holds: never a wait into statement_timeout.
_PURGE_SQL = ("DELETE FROM rtmbot_events WHERE event_id IN (SELECT event_id FROM rtmbot_events "
              "WHERE seen_at < extract(epoch from clock_timestamp()) - :keep LIMIT :batch FOR UPDATE SKIP LOCKED)")
_PROBE_SQL = "SELECT 1 FROM rtmbot_events LIMIT 1"


# -- inbox items (worker -> loop) ------------------------------------------------------------

@dataclass(frozen=True)
class ClaimAnswer:
    """The claim of ticket `ticket`: `first` True (this node took it), False (already
    taken: another node, or an earlier try), None (not checked: `error` says why)."""

    ticket: int
    first: bool | None
    error: str | None = None


@dataclass(frozen=True)
class ClaimsDown:
    """The worker lost PostgreSQL (or never reached it); it retries every RETRY_EVERY."""

    error: str


@dataclass(frozen=True)
class ClaimsUp:
    """The worker reaches rtmbot_events again: claims may resume."""


# -- the loop's half ---------------------------------------------------------------------------

@dataclass
class _Waiting:
    ticket: int
    event: Event
    deadline: float
    verdict: bool | None = None     # None: waiting; True: dispatch; False: another node has it


class ClaimQueue:
    """Events in arrival order until each may be dispatched; owned by the loop.

    `send(ticket, event_id)` hands a claim to the worker (never blocks); `late(event_ids)`
    the ids dispatched unchecked, once the worker is back. Each method returns the events
    now due for dispatch, in order: an event waits for the ones before it, so a plugin
    sees its events in the order Slack sent them.
    """

    def __init__(self, send: Callable[[int, str], None], probe: Callable[[], None],
                 timeout: float = CLAIM_TIMEOUT, late: Callable[[list[str]], None] | None = None) -> None:
        self._send = send
        self._probe = probe
        self._late = late
        self._unchecked: deque[str] = deque(maxlen=UNCHECKED_KEPT)
        self.timeout = timeout
        self._waiting: deque[_Waiting] = deque()
        self._by_ticket: dict[int, _Waiting] = {}
        self._tickets = 0
        self.down: str | None = None      # why claims are skipped (the breaker is open); None: claiming

    def __len__(self) -> int:
        return len(self._waiting)

    def admit(self, event: Event, now: float) -> list[Event]:
        """A new event (seen for the first time by this node)."""
        self._tickets += 1
        item = _Waiting(self._tickets, event, now + self.timeout)
        if event.event_id is None:
            item.verdict = True
        elif self.down is not None:
            item.verdict = True
            self._unchecked.append(event.event_id)
        else:
            self._by_ticket[item.ticket] = item
            self._send(item.ticket, event.event_id)
        self._waiting.append(item)
        return self._due()

    def answered(self, answer: ClaimAnswer) -> list[Event]:
        item = self._by_ticket.pop(answer.ticket, None)
        if item is None:          # dispatched already: its wait ran out
            return []
        if answer.first is None:
            self._open(answer.error or "no answer")
            item.verdict = True
            self._unchecked.append(item.event.event_id)
        else:
            item.verdict = answer.first
            if not answer.first:
                log.debug("event %s (%s) already handled in the cluster: acked, not dispatched",
                          item.event.event_id, item.event.kind)
        return self._due()

    def worker_down(self, item: ClaimsDown) -> list[Event]:
        self._open(item.error)
        return []

    def worker_up(self) -> list[Event]:
        if self.down is not None:
            log.info("event claims: PostgreSQL answers again; Socket Mode events are checked cluster-wide again")
            self.down = None
        if self._unchecked and self._late is not None:
            self._late(list(self._unchecked))
        self._unchecked.clear()
        return []

    def tick(self, now: float) -> list[Event]:
        """Events whose claim did not come back in time go unchecked."""
        expired = False
        for item in self._waiting:
            if item.deadline > now:
                break                 # deadlines grow with arrival
            if item.verdict is None:
                self._by_ticket.pop(item.ticket, None)
                item.verdict = True
                expired = True
                self._unchecked.append(item.event.event_id)     # (its claim may still land: harmless)
        if expired:
            self._open(f"no answer within {self.timeout:g} s")
            self._probe()
        return self._due()

    def next_deadline(self) -> float | None:
        for item in self._waiting:
            if item.verdict is None:
                return item.deadline
        return None

    def flush(self) -> list[Event]:
        """Everything still waiting, unchecked (the stop: acked events must not be lost)."""
        for item in self._waiting:
            if item.verdict is None:
                item.verdict = True
        self._by_ticket.clear()
        return self._due()

    def _open(self, why: str) -> None:
        if self.down is None:
            log.warning("event claims: PostgreSQL unreachable (%s): Socket Mode events are handled without the "
                        "cluster-wide check until it answers again (a Slack retry may be answered twice)", why)
        self.down = why

    def _due(self) -> list[Event]:
        due = []
        while self._waiting and self._waiting[0].verdict is not None:
            item = self._waiting.popleft()
            if item.verdict:
                due.append(item.event)
        return due

    @property
    def problem(self) -> str | None:
        """For STATUS while the breaker is open."""
        return None if self.down is None else "event dedup off (PostgreSQL unreachable)"


# -- the worker thread -------------------------------------------------------------------------

_STOP = object()
_PROBE = object()


@dataclass(frozen=True)
class _Late:
    event_ids: tuple[str, ...]


def claims_engine(url: Any, node: str = "") -> Any:
    """An engine of one connection for `url` (the store's resolved URL) that fails fast:
    short connect timeout, TCP keepalives and user timeout, statement_timeout.

    Claims commit without waiting for the WAL flush (synchronous_commit=off): 0.2-0.4 ms
    a claim instead of 5-6 ms on a busy disk; a PostgreSQL crash can forget the claims of
    its last moment, so a retry of those may be answered twice, as during an outage."""
    from sqlalchemy import create_engine

    from rtmbotd.store.url import server_options
    bare, options = server_options(url, f"-c statement_timeout={int(CLAIM_TIMEOUT * 1000)}",
                                   "-c synchronous_commit=off")
    connect_args = {"options": options, "keepalives": 1, "keepalives_idle": 2,
                    "keepalives_interval": 1, "keepalives_count": 2, "tcp_user_timeout": 3000,
                    "application_name": f"rtmbotd-claims {node}".strip()[:63]}   # in pg_stat_activity
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    return create_engine(bare, connect_args=connect_args, pool_size=1, max_overflow=0, pool_pre_ping=False)


class ClaimWorker:
    """The claims thread: one connection (autocommit), one statement per claim, the purge
    of old rows once a minute, and reconnecting every RETRY_EVERY after a failure."""

    def __init__(self, url: Any, node: str, post: Callable[[Any], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.node = node
        self._post = post
        self._clock = clock
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._engine: Any = None
        self._conn: Any = None
        self._down = False
        self._retry_at = 0.0
        self._thread = threading.Thread(target=self._run, name="rtmbotd-claims", daemon=True)

    # -- from the loop (never blocks) --
    def start(self) -> "ClaimWorker":
        self._thread.start()
        return self

    def claim(self, ticket: int, event_id: str) -> None:
        self._requests.put((ticket, event_id))

    def probe(self) -> None:
        self._requests.put(_PROBE)

    def late(self, event_ids: list[str]) -> None:
        """Claim ids already dispatched unchecked (their answer does not matter any more)."""
        self._requests.put(_Late(tuple(event_ids)))

    def close(self, timeout: float = 2.0) -> None:
        self._requests.put(_STOP)
        self._thread.join(timeout)

    # -- on the thread --
    def _run(self) -> None:
        from sqlalchemy import text
        self._claim_sql, self._purge_sql, self._probe_sql = text(_CLAIM_SQL), text(_PURGE_SQL), text(_PROBE_SQL)
        self._late_sql = text(_LATE_CLAIM_SQL)
        self._engine = claims_engine(self.url, self.node)
        self._attempt(self._reconnect)        # connected before the first event needs it
        purge_at = self._clock()
        try:
            while True:
                now = self._clock()
                if self._down and now >= self._retry_at:
                    self._attempt(self._reconnect)
                elif not self._down and now >= purge_at:
                    purge_at = now + PURGE_EVERY
                    if self._attempt(self._purge):
                        purge_at = now + 1.0
                wait = (self._retry_at if self._down else purge_at) - self._clock()
                try:
                    request = self._requests.get(timeout=max(0.0, wait))
                except queue.Empty:
                    continue
                if request is _STOP:
                    return
                if request is _PROBE:
                    if not self._down:
                        self._attempt(self._reconnect)
                elif isinstance(request, _Late):
                    if not self._down:
                        self._attempt(lambda: self._claim_late(request.event_ids))
                else:
                    self._claim(*request)
        finally:
            self._disconnect()
            self._engine.dispose()

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    def _claim(self, ticket: int, event_id: str) -> None:
        if self._down:
            self._post(ClaimAnswer(ticket, None, "PostgreSQL unreachable"))
            return
        try:
            row = self._connection().execute(self._claim_sql, {"event_id": event_id, "node": self.node}).first()
        except Exception as exc:  # noqa: BLE001 - any failure: dispatch unchecked, reconnect later
            self._failed(exc)
            self._post(ClaimAnswer(ticket, None, _describe(exc)))
            return
        self._post(ClaimAnswer(ticket, row is not None))

    def _claim_late(self, event_ids: tuple[str, ...]) -> None:
        self._connection().execute(self._late_sql, {"event_ids": list(event_ids), "node": self.node})
        log.debug("event claims: %d event id(s) handled unchecked claimed afterwards", len(event_ids))

    def _purge(self) -> bool:
        """One batch of old rows; True when it was full (more may be left)."""
        deleted = self._connection().execute(self._purge_sql, {"keep": KEEP_FOR, "batch": PURGE_BATCH}).rowcount
        if deleted:
            log.debug("event claims: %d event id(s) older than %.0f s deleted", deleted, KEEP_FOR)
        return deleted >= PURGE_BATCH

    def _reconnect(self) -> None:
        self._connection().execute(self._probe_sql).first()
        self._down = False
        self._post(ClaimsUp())

    def _attempt(self, step: Callable[[], Any]) -> Any:
        """`step()`'s result; None when it failed (the worker is down then)."""
        try:
            return step()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return None

    def _failed(self, exc: Exception) -> None:
        self._disconnect()
        self._retry_at = self._clock() + RETRY_EVERY
        if not self._down:
            self._down = True
            self._post(ClaimsDown(_describe(exc)))
        log.debug("event claims: %s", _describe(exc))

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        registry.drop_connection(conn)


def _describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first}" if first else type(orig).__name__


# -- what the daemon holds ---------------------------------------------------------------------

class EventClaims(ClaimQueue):
    """The claim queue wired to its worker thread (cluster mode with Socket Mode)."""

    def __init__(self, url: Any, node: str, post_threadsafe: Callable[[Any], None],
                 timeout: float = CLAIM_TIMEOUT) -> None:
        self.worker = ClaimWorker(url, node, post_threadsafe)
        super().__init__(self.worker.claim, self.worker.probe, timeout, late=self.worker.late)
        self.worker.start()

    def handle(self, item: ClaimAnswer | ClaimsDown | ClaimsUp) -> list[Event]:
        """An inbox item from the worker; the events now due."""
        if isinstance(item, ClaimAnswer):
            return self.answered(item)
        if isinstance(item, ClaimsDown):
            return self.worker_down(item)
        return self.worker_up()

    def close(self) -> None:
        self.worker.close()


INBOX_ITEMS = (ClaimAnswer, ClaimsDown, ClaimsUp)
