"""The daemon: one loop that owns all state and reacts to its inbox in order.

Signals, Slack frames, plugin reports, send results and rebuilt generations all
arrive in the inbox; the loop sleeps exactly until its next deadline (a cron job, the
watchdog, a reconnect, a rate-limited send) and never polls. The daemon keeps the
loop and its states; the connector handles the items about links and sends, the
directory decides when to list again, `status` words the STATUS= line.
"""
from __future__ import annotations

import asyncio
import dataclasses
import enum
import gc
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from rtmbotd.config import Config
from rtmbotd.slack.connector import Connector, LinkFailed, LinkOpened, SendResult
from rtmbotd.slack.directory import Directory, DirectoryListed
from rtmbotd.runtime.generation import Built, build_generation, reload_problem
from rtmbotd.runtime.host import PluginHost
from rtmbotd.inbox import Inbox
from rtmbotd.logsetup import Logging
from rtmbotd.metrics import MetricsError, Recorder
from rtmbotd.metrics.recorder import INTERNAL_ERROR
from rtmbotd.metrics.server import MetricsServer
from rtmbotd.notify import Notifier
from rtmbotd.outbox import Outbox
from rtmbotd.outbox.journal import Journal
from rtmbotd.runtime.loader import PluginEnv, PluginSet, hung_imports
from rtmbotd.router import DMOpened, Output, Router
from rtmbotd.slack.link import Link, LinkBadFrame, LinkClosed, LinkFrame
from rtmbotd.slack.plugin_client import PluginSlackClient
from rtmbotd.slack.protocol import Event, Hello
from rtmbotd.slack.redelivery import SeenEvents
from rtmbotd.slack.socket_mode import SocketModeLink
from rtmbotd.runtime.worker import PluginReport, WorkerExited
from rtmbotd.signals import EX_INTERRUPTED, HANDLED
from rtmbotd.status import check_every, report_stuck, status_line

log = logging.getLogger(__name__)

OUTPUT_SWEEP_EVERY = 1.0     # outputs a plugin's own threads appended between calls
KEEP_TIMEOUT = 5.0           # at the stop: the outbox's last writes to the store


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    STOPPED = "stopped"

    def can_become(self, new: "State") -> bool:
        return new in _NEXT_STATES[self]


_NEXT_STATES = {
    State.STARTING: {State.RUNNING, State.STOPPING},
    State.RUNNING: {State.RELOADING, State.STOPPING},
    State.RELOADING: {State.RUNNING, State.STOPPING},
    State.STOPPING: {State.STOPPED},          # a second SIGINT, or the drained stop
    State.STOPPED: set(),
}


class StateError(RuntimeError):
    """A state change the daemon's state machine does not allow: a bug."""


@dataclass(frozen=True)
class OutboxRead:
    """The saved outbox, read by the journal's writer when the store failed at start."""

    rows: list


@dataclass(frozen=True)
class Signal:
    signum: int


class Daemon:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic,
                 logging_: Logging | None = None, overrides: dict | None = None,
                 notifier: Notifier | None = None, install_signals: bool = True,
                 store: Any = None, early_signals: list[int] | None = None) -> None:
        self.config = config
        self.clock = clock
        self.logging = logging_ or Logging()
        self.overrides = overrides or {}
        self.notifier = notifier or Notifier()
        self._state = State.STARTING
        self.install_signals = install_signals
        self.exit_code = 0
        self.host: PluginHost | None = None
        self.outbox = Outbox(config.rate_limit, config.rate_burst)
        self.directory = Directory()
        self.slack_client = PluginSlackClient()
        self.store = store
        self.metrics = Recorder()
        self.metrics_server = MetricsServer()
        self._early_signals = early_signals if early_signals is not None else []
        self.env = PluginEnv(slack_client=self.slack_client)
        self.journal: Journal | None = None     # the outbox's durable rows
        self.cluster: Any = None                # cluster mode: rtmbotd.cluster.node.ClusterNode
        self.cluster_state: Any = None          # cluster mode: the coordinator's last ClusterState
        self.shared_outbox: Any = None          # cluster mode: rtmbotd.cluster.outbox.SharedOutbox
        self.claims = None                      # cluster mode: rtmbotd.cluster.claims.EventClaims
        self._seen = SeenEvents(clock=clock)
        self._reload_again = False
        self._stop_deadline: float | None = None
        self._watchdog_at: float | None = None
        self._status_at = 0.0
        self._sweep_at = 0.0
        self._finishing = False          # the stop's last, awaited part is running
        self._to_restore: list[Output] = []   # saved messages not routed yet (before the first swap)
        self._stop_task: asyncio.Task | None = None   # held: the loop keeps only weak references
        self._done: asyncio.Future | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.inbox: Inbox | None = None
        self.connector = connector = Connector(self._post, self.outbox, clock, self.refresh_status, self.metrics)
        self.router = Router(self.outbox, self.directory, lambda user: connector.open_dm(user, DMOpened),
                             dropped=self._output_dropped)
        connector.on_result = lambda msg, ok, response, error: self._output_result(
            msg.plugin, msg.callback, ok, response, error)
        # The one consumer dispatches by type; the connector's own items go straight to it.
        self._handlers: dict[type, Callable[[Any], None]] = {
            Signal: self.handle_signal, Built: self.handle_built, LinkFrame: self.handle_frame,
            PluginReport: self.handle_report, WorkerExited: self.handle_worker_exited,
            DMOpened: self.handle_dm_opened, DirectoryListed: self.handle_directory_listed,
            LinkOpened: connector.handle_opened, LinkFailed: connector.handle_failed,
            LinkClosed: connector.handle_closed, LinkBadFrame: connector.handle_bad_frame,
            SendResult: connector.handle_sent, OutboxRead: self.handle_outbox_read,
        }

    @property
    def state(self) -> State:
        return self._state

    def _set_state(self, new: State) -> None:
        """Every state change goes through here: STARTING -> RUNNING <-> RELOADING -> STOPPING -> STOPPED."""
        if not self._state.can_become(new):
            raise StateError(f"no way from {self._state.value} to {new.value}")
        log.debug("state: %s -> %s", self._state.value, new.value)
        self._state = new

    # -- set-up -------------------------------------------------------------------
    def _post(self, item: Any) -> None:
        self.inbox.put(item)

    def _install_signals(self) -> None:
        for signum in HANDLED:
            self.loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        self.inbox.put(Signal(signum))

    async def run(self) -> int:
        """Run until stopped; returns the exit code."""
        self.loop = asyncio.get_running_loop()
        self._done = self.loop.create_future()
        self.inbox = Inbox(self.loop, self._drain)
        self.host = PluginHost(self.inbox.put_threadsafe, self.clock, self.metrics)
        self.metrics_server.serve(self.config.metrics, self.metrics)   # MetricsError: exit 78, before any work
        try:
            self._open_store()
        except BaseException:
            self.metrics_server.close()
            raise
        if self.install_signals:
            self._install_signals()
        for signum in self._early_signals:      # arrived before the loop existed
            self.inbox.put(Signal(signum))
        self._early_signals.clear()
        if self.notifier.watchdog_interval:
            self._watchdog_at = self.clock()     # systemd's watchdog runs from exec, not READY
        if self.config.cluster and self.config.connection == "socket_mode":   # RTM: the leader's link only
            self._start_claims()
        self._build(self.config.path)
        self.inbox.start()
        try:
            await self._done
        finally:
            self.metrics_server.close()
            self.inbox.close()
            if self.install_signals:
                for signum in HANDLED:
                    self.loop.remove_signal_handler(signum)
        return self.exit_code

    def _open_store(self) -> None:
        """Open the plugin store (raises StoreError) and read last run's undelivered messages."""
        if self.store is None:
            from rtmbotd.store.lazy import open_daemon_store
            self.store = open_daemon_store(self.config.store_url, self.config.base_path,
                                           self.config.store_synchronous, recorder=self.metrics,
                                           outbox_owner=self.config.node_name if self.config.cluster else None)
        if self.config.cluster:      # cluster: registered before the saved outbox is read
            self._join_cluster()
        self.env.store_for = self.store.plugin
        # Cluster: the rows are NODE_NAME's, written only while this process's session holds its node row.
        shared = {"owner": self.config.node_name, "session": self.cluster.coordinator.session} if self.cluster else {}
        self.journal = Journal(self.store, **shared)
        if self.cluster:
            self._share_outbox()
            self.outbox.fence = self.cluster.fence(self.outbox.fence)
        self.outbox.on_enqueued = self.journal.enqueued
        self.outbox.on_settled = self.journal.settled
        self._to_restore = self.journal.restore(lambda rows: self.inbox.put_threadsafe(OutboxRead(rows)))

    def _join_cluster(self) -> None:
        from rtmbotd.cluster.node import ClusterNode
        self.cluster = ClusterNode(self)
        self._handlers.update(self.cluster.handlers)
        self.cluster.join()

    def _share_outbox(self) -> None:
        from rtmbotd.cluster.outbox import SharedOutbox
        from rtmbotd.store.url import resolve_url
        self.shared_outbox = SharedOutbox(self, resolve_url(self.config.store_url, self.config.base_path))
        self.shared_outbox.install(self._handlers)
    # -- cluster: Socket Mode events claimed cluster-wide (rtmbotd.cluster.claims) ----
    def _start_claims(self) -> None:
        from rtmbotd.cluster.claims import INBOX_ITEMS, EventClaims
        from rtmbotd.store.url import resolve_url
        url = resolve_url(self.config.store_url, self.config.base_path)
        self.claims = EventClaims(url, self.config.node_name, self.inbox.put_threadsafe)
        for kind in INBOX_ITEMS:
            self._handlers[kind] = self.handle_claims

    def _claims_problem(self) -> str | None:
        return self.claims.problem if self.claims is not None else None

    def handle_claims(self, item: Any) -> None:
        self._after_claims(self.claims.problem, self.claims.handle(item))

    def _after_claims(self, problem: str | None, events: list[Event]) -> None:
        """Dispatch what the claims let through; STATUS at once when their breaker moved."""
        self._handle_events(events)
        if self.claims.problem != problem:
            self.refresh_status()

    def handle_outbox_read(self, item: OutboxRead) -> None:
        """The saved outbox, read only now (the store failed at start): sent after newer messages."""
        restored = self.journal.adopt(item.rows)
        if self.state is State.STARTING:
            self._to_restore.extend(restored)
        else:
            self._to_restore = restored
            self._route_restored(self.clock())

    def _route_restored(self, now: float) -> None:
        """Queue last run's messages once the first generation configured the connector:
        names and users resolve again, as at first (a user id needs a DM opened)."""
        restored, self._to_restore = self._to_restore, []
        for out in restored:
            self.router.route(out, now)

    def send_signal(self, signum: int) -> None:
        """From any thread: act as if `signum` arrived (embedding, tests)."""
        if self.inbox is not None:
            self.inbox.put_threadsafe(Signal(signum))

    def _drain(self) -> None:
        """The inbox's consumer: every item in order, then the timers; it runs again when
        an item arrives or at the next deadline (a cron job, the watchdog, a reconnect, a
        rate-limited send), and never polls."""
        inbox = self.inbox
        while self.state is not State.STOPPED and not self._finishing:
            while len(inbox) and self.state is not State.STOPPED:
                item = inbox.get_nowait()
                try:
                    self._handlers[type(item)](item)
                except Exception:  # noqa: BLE001 - a bug here must not end the daemon
                    log.exception("internal error while handling %s", type(item).__name__)
            now = self.clock()
            try:
                self._tick(now)
            except Exception:  # noqa: BLE001
                log.exception("internal error in a timer")
            if self.state is State.STOPPING and self._stop_finished_safely(now):
                self._finishing = True
                self._stop_task = self.loop.create_task(self._finish_stop_then_end(), name="rtmbotd-stop")
                return
            if not len(inbox):
                break
        self.metrics.outbox_queued(self._queued)
        if self.state is State.STOPPED:
            self._end()
        elif not self._finishing:
            now = self.clock()
            try:
                deadline = self._next_deadline(now)
            except Exception:  # noqa: BLE001 - keep waking: retry the book-keeping soon
                log.exception("internal error while computing the next deadline")
                deadline = now + 1.0
            inbox.wake_at(deadline, now)

    def _stop_finished_safely(self, now: float) -> bool:
        try:
            return self._stop_finished(now)
        except Exception:  # noqa: BLE001 - a bug here must not keep the daemon from stopping
            log.exception("internal error while checking the stop")
            return True

    async def _finish_stop_then_end(self) -> None:
        try:
            await self._finish_stop()
        except Exception:  # noqa: BLE001 - stopping must end in STOPPED
            log.exception("internal error while stopping")
        if self.state is not State.STOPPED:
            self._set_state(State.STOPPED)
        self._end()

    def _end(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def _next_deadline(self, now: float) -> float | None:
        times = [self._watchdog_at, self._stop_deadline, self.connector.next_deadline(now),
                 self.directory.retry_at, self.journal.next_deadline(), self.router.next_deadline()]
        if self.cluster:
            times.append(self.cluster.next_deadline(now))
        if self.claims is not None:
            times.append(self.claims.next_deadline())
        if self.state in (State.RUNNING, State.RELOADING):
            times.append(self.host.next_deadline())
            if self.host.workers:
                times.append(self._status_at + self._status_every())
                times.append(self._sweep_at + OUTPUT_SWEEP_EVERY)
        return min((t for t in times if t is not None), default=None)

    def _tick(self, now: float) -> None:
        if self.claims is not None:
            self._after_claims(self.claims.problem, self.claims.tick(now))
        if self.state in (State.RUNNING, State.RELOADING):
            self.host.run_due_jobs(now)
            if now >= self._sweep_at + OUTPUT_SWEEP_EVERY:
                self._sweep_at = now
                self.host.sweep_outputs()
        if self.cluster:
            self.cluster.tick(now)
        self.router.tick(now)
        self.connector.tick(now)
        if self.directory.retry_due(now):
            self.connector.list_directory(DirectoryListed)
        if self._watchdog_at is not None and now >= self._watchdog_at:
            self.notifier.watchdog()
            self._watchdog_at = now + self.notifier.watchdog_interval
        if now >= self._status_at + self._status_every():
            self._status_at = now
            report_stuck(self.host, now, self.config.plugin_timeout)
            self.metrics.plugins_busy((w.unit.name for w in self.host.workers),
                                      (w.unit.name for w in self.host.stuck(now, self.config.plugin_timeout)))
            self.refresh_status(now)
        self.journal.flush(now)

    def _status_every(self) -> float:
        return check_every(self.config.plugin_timeout)

    def refresh_status(self, now: float | None = None) -> None:
        if self.state in (State.RUNNING, State.RELOADING):
            self.notifier.status(self.status_line(self.clock() if now is None else now))

    def status_line(self, now: float) -> str:
        return status_line(self.config, self.host, now, connection=self.connector.status(),
                           store="; ".join(filter(None, [getattr(self.store, "problem", None),   # e.g. unreachable at start
                                                          self._claims_problem()])) or None,
                           queued=self._queued(), hung=hung_imports(),
                           role=self.cluster.words(now) if self.cluster else None)

    def _queued(self) -> int:
        """Messages not sent yet: in the outbox, or waiting for a name or DM to resolve."""
        return len(self.outbox) + self.router.waiting

    # -- generations: start and reload ------------------------------------------
    def _build(self, path) -> None:
        """Build config + plugins beside the running ones, off the loop; posts Built."""
        build_generation(path, self.overrides, self.env, self.host.plugins, self.inbox.put_threadsafe)

    def handle_built(self, item: Built) -> None:
        now = self.clock()
        starting = self.state is State.STARTING
        if self.state is State.STOPPING:
            return
        problem = item.error if starting else reload_problem(item) or self._serve_metrics(item.config)
        if problem is not None:
            if starting:   # cli validated the config; a race with an edit lands here
                log.error("start failed: %s", problem)
                self.exit_code = os.EX_CONFIG
                self._begin_stop(now)
                return
            log.error("reload rejected, still running generation %d: %s", self.host.generation, problem)
            self.metrics.reloaded(False, self.host.generation)
            self.host.reject(item.plugins)
            self._reloaded(now, f"reload failed: {problem}")
            return
        self._swap(item.config, item.plugins, now)
        if starting:
            for name, why in sorted(item.plugins.errors.items()):
                log.error("plugin %s skipped: %s", name, why)
            self._set_state(State.RUNNING)
            self._status_at = now
            self.metrics.generation(self.host.generation)
            # Start-up objects (modules, plugins) live for good: keep them out of every
            # later collection, which otherwise stalls an event by up to ~15 ms.
            gc.collect()
            gc.freeze()
            self.notifier.ready(self.status_line(now))
            log.info("ready: generation %d, %d plugin(s) loaded, %d failed", self.host.generation,
                     len(item.plugins.plugins), len(item.plugins.errors))
            if self._reload_again:          # a SIGHUP arrived while starting
                self._reload_again = False
                self.handle_hup()
        else:
            log.info("reloaded: generation %d (%d plugins, %d unchanged)", self.host.generation,
                     len(item.plugins.plugins), len(item.plugins.reused))
            self.metrics.reloaded(True, self.host.generation)
            self._reloaded(now, None)

    def _serve_metrics(self, config: Config) -> str | None:
        """Listen where the new config's METRICS says before swapping (None: done)."""
        try:
            self.metrics_server.serve(config.metrics, self.metrics)
        except MetricsError as exc:
            return str(exc)
        self.metrics.connected(self.connector.link is not None)   # turned on by this reload: the link is up
        return None

    def _reloaded(self, now: float, problem: str | None) -> None:
        if self._reload_again:
            self._reload_again = False
            self._build(self.config.path)
            return
        self._set_state(State.RUNNING)
        status = self.status_line(now)
        self.notifier.ready(f"{problem}; {status}" if problem else status)

    def _swap(self, config: Config, plugins: PluginSet, now: float) -> None:
        self.host.swap(plugins)
        self.host.scheduler.set_zone(config.timezone, now)    # before the new plugins' jobs arrive
        if (config.store_url, config.store_synchronous) != (self.config.store_url, self.config.store_synchronous):
            log.warning("STORE_URL / STORE_SYNCHRONOUS changed: takes effect at the next restart")
        if (config.cluster, config.node_name) != (self.config.cluster, self.config.node_name):
            log.warning("CLUSTER / NODE_NAME changed: takes effect at the next restart")
        if self.config.cluster and config.connection == "socket_mode" and self.claims is None:
            self._start_claims()          # cluster: reloaded from RTM to Socket Mode
        if self.cluster:
            self.cluster.coordinator.update(plugins=tuple(sorted(plugins.plugins)))
        self.config = config
        try:   # validated while building; a file that vanished since must not stop the swap
            self.logging.configure(debug=config.debug, logfile=config.logfile)
        except OSError as exc:
            log.error("LOGFILE %s: %s; logging stays as it was", config.logfile, exc.strerror)
        self.outbox.configure(config.rate_limit, config.rate_burst, now)
        self.slack_client.configure(config.slack_token, config.api_url)
        self.connector.configure(config, now)
        if self._to_restore:
            self._route_restored(now)
        if not config.has_token:
            log.warning("no Slack token: set SLACK_TOKEN in %s, then reload", config.path)

    # -- signals ----------------------------------------------------------------------
    def handle_signal(self, item: Signal) -> None:
        name = HANDLED.get(item.signum)
        if name:
            getattr(self, "handle_" + name)()

    def handle_hup(self) -> None:
        if self.state is State.STOPPING or self.state is State.STOPPED:
            return
        if self.state in (State.RELOADING, State.STARTING):
            self._reload_again = True      # coalesce: one more build after this one
            return
        log.info("SIGHUP: reloading %s", self.config.path)
        self._set_state(State.RELOADING)
        self.notifier.reloading()
        self._build(self.config.path)

    def handle_term(self) -> None:
        self._begin_stop(self.clock())

    def handle_int(self) -> None:
        if self.state is State.STOPPING:
            log.warning("second SIGINT: exiting now")
            self.exit_code = EX_INTERRUPTED
            self._set_state(State.STOPPED)
            return
        self._begin_stop(self.clock())

    def handle_usr1(self) -> None:
        if self.logging.reopen():
            log.info("log file reopened")

    # -- stopping ---------------------------------------------------------------
    def _begin_stop(self, now: float) -> None:
        if self.state in (State.STOPPING, State.STOPPED):
            return
        log.info("stopping: finishing plugin calls and sending %d queued message(s)", len(self.outbox))
        self._set_state(State.STOPPING)
        self.notifier.stopping(f"Stopping; {len(self.outbox)} message(s) queued")
        self._stop_deadline = now + self.config.stop_timeout
        self.connector.stop_acking()      # events from now on are left to Slack's redelivery
        if self.claims is not None:       # acked while their claims were out: not lost to the stop
            self._handle_events(self.claims.flush())
        self.host.stop()
        if self.cluster:
            self.cluster.resign()         # a follower leads at its next round

    def _stop_finished(self, now: float) -> bool:
        if self._stop_deadline is not None and now >= self._stop_deadline:
            return True
        if self.host.busy():
            return False
        # Without a link nothing more can go out; the durable outbox keeps the rest.
        return self.connector.link is None or (len(self.outbox) == 0 and self.router.waiting == 0)

    async def _finish_stop(self) -> None:
        busy = self.host.busy()
        if busy:
            log.warning("plugins still running at the stop deadline: %s", ", ".join(w.unit.name for w in busy))
        await self.connector.close()
        if self.claims is not None:
            self.claims.close()
        self._keep_outbox()
        if self.shared_outbox:
            self.shared_outbox.close()
        if self.cluster:
            await self.cluster.leave()
        self._set_state(State.STOPPED)
        log.info("stopped")

    def _keep_outbox(self) -> None:
        """Every undelivered message is in the store (most already were); sent on the next start."""
        kept = self.journal.close(KEEP_TIMEOUT)
        if kept:
            log.warning("%d undelivered message(s) saved; they will be sent on the next start", kept)

    # -- Slack frames -----------------------------------------------------------------
    def handle_frame(self, item: LinkFrame) -> None:
        frame = self.connector.handle_frame(item)
        if isinstance(frame, Event):
            self._on_event(frame, item.link)
        elif isinstance(frame, Hello):
            if self.cluster and frame.app_id:
                self.cluster.app_id = frame.app_id       # checked against the cluster's app
            if self.directory.connected(self.clock()):
                self.connector.list_directory(DirectoryListed)

    def _on_event(self, event: Event, link: Link) -> None:
        if self.state is State.STOPPING:     # the link did not ack it: Slack delivers it again
            if isinstance(link, SocketModeLink) and event.envelope_id and self._seen.known(event, self.clock()):
                link.ack(event.envelope_id)     # a retry of one handled before the stop: done with
            return
        if not self._seen.first_time(event):      # a redelivery, or two links overlapping
            return
        if self.shared_outbox and not self.connector.is_own(event.kind, event.data):
            # cluster: the reply's send slot is reserved now, beside the claim below and
            # the plugins' work, so a reply waits for neither round trip in turn
            self.shared_outbox.event(event.data)
        if self.claims is not None and isinstance(link, SocketModeLink):   # cluster: once cluster-wide
            self._handle_events(self.claims.admit(event, self.clock()))
            return
        self._handle_event(event)

    def _handle_events(self, events: list[Event]) -> None:
        for event in events:
            self._handle_event(event)

    def _handle_event(self, event: Event) -> None:
        self.metrics.event_received(event.kind)
        self.directory.apply(event.data)
        if not self.connector.is_own(event.kind, event.data):
            self.host.dispatch(event.kind, event.data)

    # -- plugin results -----------------------------------------------------------
    def handle_report(self, item: PluginReport) -> None:
        now = self.clock()
        token = self.host.job_token(item.job_key) if self.cluster else None
        if self.cluster and self.cluster.job_fenced(token, now):
            if item.outputs:   # the lease it ran under is gone: another node runs the jobs now
                log.warning("plugin %s: %d job output(s) dropped: this node no longer leads", item.worker.unit.name,
                            len(item.outputs))
            item = dataclasses.replace(item, outputs=[])
        self.host.reported(item)
        for out in item.outputs:         # parsed to plain data on the plugin's thread
            out = self.journal.track(out, now, stuck=self.connector.link is None)
            if token is not None:        # cluster: a job's output goes out only under its lease
                self.cluster.job_output(out.tag, token)
            try:
                self.router.route(out, now)
            except Exception:  # noqa: BLE001 - a bad output costs only itself
                log.exception("plugin %s: output to %r dropped", out.plugin, out.target)
                self._output_dropped(out, INTERNAL_ERROR)

    def _output_dropped(self, out: Output, reason: str = INTERNAL_ERROR) -> None:
        """An output given up for good before the outbox had it: forgotten, and counted once."""
        self.journal.dropped(out)
        self.metrics.message_failed(reason)
        if out.callback is not None:
            self._output_result(out.plugin, out.callback, False, None, reason)

    def _output_result(self, plugin: str, callback: dict, ok: bool, response: dict | None,
                       error: str | None) -> None:
        """A settled output whose plugin named a callback: process_output_result hears of it."""
        result = {"callback": callback.get("callback"), "output": callback.get("output"), "ok": ok,
                  "response": response, "error": error}
        if self.host is None or not self.host.output_result(plugin, result):
            log.warning("plugin %s: no process_output_result for callback %r; result dropped", plugin,
                        result["callback"])

    def handle_worker_exited(self, item: WorkerExited) -> None:
        item.worker.exited = True
        log.debug("plugin %s stopped", item.worker.unit.name)

    # -- directory --------------------------------------------------------------------
    def handle_directory_listed(self, item: DirectoryListed) -> None:
        now = self.clock()
        if self.directory.listed(item, now):    # else #name / @user outputs keep waiting for the retry
            self.router.directory_loaded(now)

    def handle_dm_opened(self, item: DMOpened) -> None:
        self.router.dm_opened(item, self.clock())
