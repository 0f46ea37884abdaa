"""The daemon: one loop that owns all state and reacts to its inbox in order.

Signals, Slack frames, plugin reports, send results and rebuilt generations all
arrive in the inbox; the loop sleeps exactly until its next deadline (a cron job, the
watchdog, a reconnect, a rate-limited send) and never polls.
"""
from __future__ import annotations

import asyncio
import dataclasses
import enum
import gc
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from rtmbotd.config import Config, load_config
from rtmbotd.connector import Connector, LinkFailed, LinkOpened, SendResult
from rtmbotd.directory import Directory
from rtmbotd.errors import ConfigError, StoreError
from rtmbotd.frames import copy_json, event_type
from rtmbotd.inbox import Inbox
from rtmbotd.logsetup import Logging
from rtmbotd.notify import Notifier
from rtmbotd.outbox import Outbox
from rtmbotd.plugins import PluginEnv, PluginSet, build_plugin_set
from rtmbotd.router import DMOpened, Router, parse_output
from rtmbotd.scheduler import Scheduler
from rtmbotd.slack.link import Link, LinkBadFrame, LinkClosed, LinkFrame
from rtmbotd.slack.plugin_client import PluginSlackClient
from rtmbotd.slack.socket_mode import unwrap
from rtmbotd.slack.web import WebError
from rtmbotd.worker import PluginReport, Worker, WorkerExited, run_event

log = logging.getLogger(__name__)

DIRECTORY_MAX_AGE = 900.0
STATUS_EVERY = 5.0
SEEN_ENVELOPES = 2048


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Signal:
    signum: int


@dataclass(frozen=True)
class Built:
    """A generation built off the loop: a new config and plugin set, or why not."""

    config: Config | None
    plugins: PluginSet | None
    error: str | None


@dataclass(frozen=True)
class DirectoryListed:
    channels: list
    users: list
    error: str | None


class Daemon:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic,
                 logging_: Logging | None = None, overrides: dict | None = None,
                 notifier: Notifier | None = None, install_signals: bool = True,
                 store: Any = None) -> None:
        self.config = config
        self.clock = clock
        self.logging = logging_ or Logging()
        self.overrides = overrides or {}
        self.notifier = notifier or Notifier()
        self.state = State.STARTING
        self.install_signals = install_signals
        self.exit_code = 0
        self.plugins: PluginSet | None = None
        self.workers: list[Worker] = []
        self.outbox = Outbox(config.rate_limit, config.rate_burst)
        self.directory = Directory()
        self.directory_at: float | None = None
        self.slack_client = PluginSlackClient()
        self.store = store
        self.env = PluginEnv(slack_client=self.slack_client)
        self._restored: dict[int, dict] = {}     # outbox seq -> record saved at the last stop
        self._seen_envelopes: dict[str, None] = {}
        self._reload_again = False
        self._stop_deadline: float | None = None
        self._watchdog_at: float | None = None
        self._status_at = 0.0
        self._job_ids = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.inbox: Inbox | None = None
        self.connector: Connector | None = None
        self.router: Router | None = None
        self._handlers = {
            Signal: self.handle_signal, Built: self.handle_built, LinkFrame: self.handle_frame,
            LinkBadFrame: self.handle_bad_frame, LinkClosed: self.handle_link_closed,
            LinkOpened: self.handle_link_opened, LinkFailed: self.handle_link_failed,
            PluginReport: self.handle_report, WorkerExited: self.handle_worker_exited,
            SendResult: self.handle_sent, DMOpened: self.handle_dm_opened,
            DirectoryListed: self.handle_directory_listed,
        }
        self.scheduler = Scheduler(clock)

    # -- set-up -------------------------------------------------------------------
    def _post(self, item: Any) -> None:
        self.inbox.put(item)

    def _install_signals(self) -> None:
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            self.loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        self.inbox.put(Signal(signum))

    async def run(self) -> int:
        """Run until stopped; returns the exit code."""
        self.loop = asyncio.get_running_loop()
        self.inbox = Inbox(self.loop)
        self.connector = Connector(self._post, self.outbox, self.clock)
        self.router = Router(self.outbox, self.directory, self._open_dm)
        self._open_store()
        if self.install_signals:
            self._install_signals()
        if self.notifier.watchdog_interval:
            self._watchdog_at = self.clock()     # systemd's watchdog runs from exec, not READY
        self._build(self.config.path)
        try:
            await self._loop()
        finally:
            if self.install_signals:
                for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                    self.loop.remove_signal_handler(signum)
        return self.exit_code

    def _open_store(self) -> None:
        """Open the plugin store (raises StoreError) and queue last run's undelivered messages."""
        if self.store is None:
            from rtmbotd.store import Store
            self.store = Store.open(self.config.store_url, self.config.base_path, self.config.store_synchronous)
        self.env.store_for = self.store.plugin
        records = self.store.load_outbox()
        if records:
            now = self.clock()
            for record in records:
                for msg in self.outbox.enqueue(record["channel"], record.get("text"), record.get("plugin", "?"),
                                               now, record.get("extra")):
                    self._restored[msg.seq] = msg.as_record()
            self.outbox.on_settled = self._settled
            log.info("%d message(s) saved at the last stop will be sent first", len(records))

    def _settled(self, msg: Any) -> None:
        """A message restored from the store left the outbox: the saved copy goes too."""
        if self._restored.pop(msg.seq, None) is None:
            return
        try:
            self.store.save_outbox(list(self._restored.values()))
        except StoreError as exc:
            log.error("cannot update the saved outbox: %s", exc)
        if not self._restored:
            self.outbox.on_settled = None

    def send_signal(self, signum: int) -> None:
        """From any thread: act as if `signum` arrived (embedding, tests)."""
        if self.inbox is not None:
            self.inbox.put_threadsafe(Signal(signum))

    async def _loop(self) -> None:
        inbox = self.inbox
        while self.state is not State.STOPPED:
            now = self.clock()
            deadline = self._next_deadline(now)
            item = await inbox.get(None if deadline is None else max(0.0, deadline - now))
            while item is not None:
                try:
                    self._handlers[type(item)](item)
                except Exception:  # noqa: BLE001 - a bug here must not end the daemon
                    log.exception("internal error while handling %s", type(item).__name__)
                item = inbox.get_nowait() if len(inbox) else None
            now = self.clock()
            self._tick(now)
            if self.state is State.STOPPING and self._stop_finished(now):
                await self._finish_stop()

    def _next_deadline(self, now: float) -> float | None:
        times = [self._watchdog_at, self._stop_deadline, self.connector.next_deadline(now)]
        if self.state in (State.RUNNING, State.RELOADING):
            times.append(self.scheduler.next_deadline())
            if self.workers:
                times.append(self._status_at + self._status_every())
        return min((t for t in times if t is not None), default=None)

    def _tick(self, now: float) -> None:
        if self.state in (State.RUNNING, State.RELOADING):
            for entry in self.scheduler.due(now):
                worker, fn, label = entry.target
                worker.submit(f"job {label}", fn, job_key=entry.key)
        self.connector.tick(now)
        if self._watchdog_at is not None and now >= self._watchdog_at:
            self.notifier.watchdog()
            self._watchdog_at = now + self.notifier.watchdog_interval
        if now >= self._status_at + self._status_every():
            self._status_at = now
            self._check_stuck(now)
            self.refresh_status(now)

    def _status_every(self) -> float:
        """How often stuck plugins are looked for (and STATUS refreshed)."""
        return min(STATUS_EVERY, max(0.5, self.config.plugin_timeout / 2))

    def refresh_status(self, now: float | None = None) -> None:
        if self.state in (State.RUNNING, State.RELOADING):
            self.notifier.status(self.status_line(self.clock() if now is None else now))

    # -- generations: start and reload ------------------------------------------
    def _build(self, path) -> None:
        """Build config + plugins beside the running ones, on a thread; posts Built."""
        previous = self.plugins

        def build() -> None:
            try:
                config = load_config(path)
                if self.overrides:
                    config = dataclasses.replace(config, **self.overrides)
            except ConfigError as exc:
                self.inbox.put_threadsafe(Built(None, None, str(exc)))
                return
            try:
                plugins = build_plugin_set(config, self.env, previous)
            except Exception as exc:  # noqa: BLE001 - reported, never fatal
                log.exception("building plugins failed")
                self.inbox.put_threadsafe(Built(config, None, f"plugins: {exc}"))
                return
            self.inbox.put_threadsafe(Built(config, plugins, None))

        threading.Thread(target=build, name="build-generation", daemon=True).start()

    def handle_built(self, item: Built) -> None:
        now = self.clock()
        starting = self.state is State.STARTING
        if self.state is State.STOPPING:
            return
        problem = item.error
        if problem is None and not starting:
            if item.plugins.errors:
                problem = "plugin failed to load: " + "; ".join(
                    f"{n}: {e}" for n, e in sorted(item.plugins.errors.items()))
            elif not item.config.has_token and self.config.has_token:
                problem = "no SLACK_TOKEN in the new configuration"
        if problem is not None:
            if starting:   # cli validated the config; a race with an edit lands here
                log.error("start failed: %s", problem)
                self.exit_code = 78
                self._begin_stop(now)
                return
            log.error("reload rejected, still running generation %d: %s", self.plugins.generation, problem)
            self._discard(item.plugins)
            self._reloaded(now, f"reload failed: {problem}")
            return
        self._swap(item.config, item.plugins, now)
        if starting:
            for name, why in sorted(item.plugins.errors.items()):
                log.error("plugin %s skipped: %s", name, why)
            self.state = State.RUNNING
            self._status_at = now
            # Start-up objects (modules, plugins) live for good: keep them out of every
            # later collection, which otherwise stalls an event by up to ~15 ms.
            gc.collect()
            gc.freeze()
            self.notifier.ready(self.status_line(now))
            log.info("ready: generation %d, %d plugin(s) loaded, %d failed", self.plugins.generation,
                     len(self.plugins.plugins), len(self.plugins.errors))
        else:
            log.info("reloaded: generation %d (%d plugins, %d unchanged)", self.plugins.generation,
                     len(self.plugins.plugins), len(self.plugins.reused))
            self._reloaded(now, None)

    def _reloaded(self, now: float, problem: str | None) -> None:
        if self._reload_again:
            self._reload_again = False
            self._build(self.config.path)
            return
        self.state = State.RUNNING
        status = self.status_line(now)
        self.notifier.ready(f"{problem}; {status}" if problem else status)

    def _discard(self, plugins: PluginSet | None) -> None:
        """Forget the modules of a rejected generation (never swapped in)."""
        if plugins is None:
            return
        for name, loaded in plugins.plugins.items():
            if name in plugins.reused:
                continue
            for modname in loaded.modules:
                sys.modules.pop(modname, None)

    def _swap(self, config: Config, plugins: PluginSet, now: float) -> None:
        old_units = {id(u) for u in self.plugins.units} if self.plugins else set()
        new_units = {id(u) for u in plugins.units}
        keep, stop = [], []
        for worker in self.workers:
            (keep if id(worker.unit) in new_units else stop).append(worker)
        for worker in stop:
            worker.stop()
            self.scheduler.remove_where(lambda key, w=worker: key[0] is w)
        self.workers = keep
        for unit in plugins.units:
            if id(unit) not in old_units:
                self.workers.append(Worker(unit, self.inbox.put_threadsafe, self.clock).start())
        order = {id(u): i for i, u in enumerate(plugins.units)}
        self.workers.sort(key=lambda w: order[id(w.unit)])
        old_plugins, self.plugins = self.plugins, plugins
        self._discard_replaced(old_plugins, plugins)
        if (config.store_url, config.store_synchronous) != (self.config.store_url, self.config.store_synchronous):
            log.warning("STORE_URL / STORE_SYNCHRONOUS changed: takes effect at the next restart")
        self.config = config
        self.logging.configure(debug=config.debug, logfile=config.logfile)
        self.outbox.configure(config.rate_limit, config.rate_burst, now)
        self.slack_client.configure(config.slack_token, config.api_url)
        self.connector.configure(config, now)
        if not config.has_token:
            log.warning("no Slack token: set SLACK_TOKEN in %s, then reload", config.path)

    def _discard_replaced(self, old: PluginSet | None, new: PluginSet) -> None:
        """Forget the modules of plugins the new generation replaced or removed."""
        if old is None:
            return
        for name, loaded in old.plugins.items():
            if new.plugins.get(name) is not loaded:
                for modname in loaded.modules:
                    sys.modules.pop(modname, None)

    # -- signals ----------------------------------------------------------------------
    def handle_signal(self, item: Signal) -> None:
        name = {signal.SIGHUP: "hup", signal.SIGTERM: "term", signal.SIGINT: "int",
                signal.SIGUSR1: "usr1"}.get(item.signum)
        if name:
            getattr(self, "handle_" + name)()

    def handle_hup(self) -> None:
        if self.state is State.STOPPING or self.state is State.STOPPED:
            return
        if self.state in (State.RELOADING, State.STARTING):
            self._reload_again = True      # coalesce: one more build after this one
            return
        log.info("SIGHUP: reloading %s", self.config.path)
        self.state = State.RELOADING
        self.notifier.reloading()
        self._build(self.config.path)

    def handle_term(self) -> None:
        self._begin_stop(self.clock())

    def handle_int(self) -> None:
        if self.state is State.STOPPING:
            log.warning("second SIGINT: exiting now")
            self.exit_code = 130
            self.state = State.STOPPED
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
        self.state = State.STOPPING
        self.notifier.stopping(f"Stopping; {len(self.outbox)} message(s) queued")
        self._stop_deadline = now + self.config.stop_timeout
        for worker in self.workers:
            worker.stop()

    def _stop_finished(self, now: float) -> bool:
        if self._stop_deadline is not None and now >= self._stop_deadline:
            return True
        if any(w.alive for w in self.workers):
            return False
        # Without a link nothing more can go out; the durable outbox keeps the rest.
        return self.connector.link is None or (len(self.outbox) == 0 and self.router.waiting == 0)

    async def _finish_stop(self) -> None:
        busy = [w.unit.name for w in self.workers if w.alive]
        if busy:
            log.warning("plugins still running at the stop deadline: %s", ", ".join(busy))
        await self.connector.close()
        self._save_outbox()
        self.state = State.STOPPED
        log.info("stopped")

    def _save_outbox(self) -> None:
        """Keep what could not be delivered; it is sent, in order, on the next start."""
        records = self.outbox.snapshot() + self.router.pending_records()
        try:
            if records:
                self.store.save_outbox(records)
                log.warning("%d undelivered message(s) saved; they will be sent on the next start", len(records))
            elif self._restored or self.store.load_outbox():
                self.store.clear_outbox()
        except StoreError as exc:
            log.error("cannot save %d undelivered message(s): %s", len(records), exc)
        finally:
            self.store.close()

    # -- Slack frames -----------------------------------------------------------------
    def handle_link_opened(self, item: LinkOpened) -> None:
        self.connector.handle_opened(item, self.clock())

    def handle_link_failed(self, item: LinkFailed) -> None:
        self.connector.handle_failed(item, self.clock())
        self.refresh_status()

    def handle_link_closed(self, item: LinkClosed) -> None:
        self.connector.handle_closed(item, self.clock())
        self.refresh_status()

    def handle_bad_frame(self, item: LinkBadFrame) -> None:
        bad = item.bad
        log.warning("%r: ignored a bad frame (%d bytes): %s; starts %r", item.link, bad.size, bad.reason, bad.sample)

    def handle_frame(self, item: LinkFrame) -> None:
        link, event = item.link, item.event
        now = self.clock()
        if link.mode == "socket_mode":
            kind_data = self._socket_mode_frame(link, event, now)
        else:
            kind_data = self._rtm_frame(link, event, now)
        if kind_data is None or self.state is State.STOPPING:
            return
        kind, data = kind_data
        self.directory.apply(data)
        if self._is_own(kind, data):
            return
        self.dispatch(kind, data)

    def _rtm_frame(self, link: Link, event: dict, now: float) -> tuple[str, dict] | None:
        if "reply_to" in event and "type" not in event:
            self.connector.on_reply(link, event, now)
            return None
        kind = event_type(event)
        if kind == "hello":
            self._linked(link, now)
            return None
        if kind == "pong":
            self.connector.on_pong()
            return None
        if kind == "goodbye":
            if link is self.connector.link:
                self.connector.replace_soon("Slack said goodbye")
            return None
        if kind is None:
            log.debug("%r: frame without a usable type ignored: %.120r", link, event)
            return None
        return kind, event

    def _socket_mode_frame(self, link: Link, event: dict, now: float) -> tuple[str, dict] | None:
        kind = event.get("type")
        if kind == "hello":
            self._linked(link, now)
            return None
        if kind == "disconnect":
            reason = event.get("reason", "?")
            if reason == "link_disabled":
                log.error("Slack disabled Socket Mode for this app (link_disabled); enable it and reload")
            if link is self.connector.link:
                self.connector.replace_soon(f"Slack asked to reconnect ({reason})")
            return None
        envelope_id = event.get("envelope_id")
        if isinstance(envelope_id, str):
            if envelope_id in self._seen_envelopes:
                return None
            self._seen_envelopes[envelope_id] = None
            if len(self._seen_envelopes) > SEEN_ENVELOPES:
                del self._seen_envelopes[next(iter(self._seen_envelopes))]
        unwrapped = unwrap(event)
        if unwrapped is None:
            log.debug("%r: envelope of type %r ignored", link, kind)
            return None
        kind, data = unwrapped
        if not kind.isidentifier():
            return None
        return kind, data

    def _linked(self, link: Link, now: float) -> None:
        self.connector.on_hello(link, now)
        self.refresh_status(now)
        if self.directory_at is None or now - self.directory_at > DIRECTORY_MAX_AGE:
            self.directory_at = now
            self.loop.create_task(self._list_directory())

    def _is_own(self, kind: str, data: dict) -> bool:
        if kind != "message":
            return False
        ident = self.connector.identity or {}
        user, bot = ident.get("user_id"), ident.get("bot_id")
        return bool((user and data.get("user") == user) or (bot and data.get("bot_id") == bot))

    def dispatch(self, kind: str, data: dict) -> None:
        """Hand the event to every plugin unit that handles it; each gets its own copy."""
        first = True
        for worker in self.workers:
            unit = worker.unit
            handler = unit.handler(kind)
            if handler is None and unit.catch_all is None:
                continue
            worker.submit(kind, run_event, unit, handler, data if first else copy_json(data))
            first = False

    # -- plugin results -----------------------------------------------------------
    def handle_report(self, item: PluginReport) -> None:
        now = self.clock()
        worker = item.worker
        if item.job_key is not None:
            self.scheduler.done(item.job_key)
        for out in item.outputs:
            parsed = parse_output(out, worker.unit.name)
            if parsed is not None:
                self.router.route(parsed, now)
        if item.jobs and worker in self.workers and self.state is not State.STOPPING:
            for interval, fn, label in item.jobs:
                self._job_ids += 1
                self.scheduler.add((worker, self._job_ids), interval, (worker, fn, label))
        self.connector.pump(now)

    def handle_worker_exited(self, item: WorkerExited) -> None:
        log.debug("plugin %s stopped", item.worker.unit.name)

    def handle_sent(self, item: SendResult) -> None:
        self.connector.handle_sent(item, self.clock())

    # -- directory --------------------------------------------------------------------
    def _open_dm(self, user: str) -> None:
        async def open_dm() -> None:
            try:
                resp = await self.connector.web.call("conversations.open", users=user)
                self._post(DMOpened(user, (resp.get("channel") or {}).get("id")))
            except WebError as exc:
                self._post(DMOpened(user, None, str(exc)))
        if self.connector.web is None:
            self._post(DMOpened(user, None, "no Slack token"))
            return
        self.loop.create_task(open_dm())

    async def _list_directory(self) -> None:
        web = self.connector.web
        try:
            channels = await web.paginate("conversations.list", "channels",
                                          types="public_channel,private_channel,mpim,im",
                                          exclude_archived="true")
            users = await web.paginate("users.list", "members")
            self._post(DirectoryListed(channels, users, None))
        except WebError as exc:
            self._post(DirectoryListed([], [], str(exc)))

    def handle_directory_listed(self, item: DirectoryListed) -> None:
        now = self.clock()
        if item.error:
            log.warning("cannot list channels and users (%s): #name and @user targets will not resolve",
                        item.error)
        self.directory.load(item.channels, item.users)
        self.router.directory_loaded(now)
        self.connector.pump(now)

    def handle_dm_opened(self, item: DMOpened) -> None:
        now = self.clock()
        self.router.dm_opened(item, now)
        self.connector.pump(now)

    # -- status -----------------------------------------------------------------------
    def _check_stuck(self, now: float) -> None:
        limit = self.config.plugin_timeout
        for worker in self.workers:
            busy = worker.busy_for(now)
            if busy > limit and not worker.stuck_reported:
                worker.stuck_reported = True
                log.warning("plugin %s stuck in %s for %.0f s (%d call(s) waiting)",
                            worker.unit.name, worker.busy_label, busy, worker.backlog - 1)

    def status_line(self, now: float) -> str:
        if not self.config.has_token:
            return f"No Slack token: set SLACK_TOKEN in {self.config.path}, then systemctl reload rtmbotd"
        plugins = self.plugins
        loaded = len(plugins.plugins) if plugins else 0
        failed = len(plugins.errors) if plugins else 0
        parts = [self.connector.status().capitalize(),
                 f"generation {plugins.generation if plugins else 0}",
                 f"{loaded} plugin(s) loaded" + (f", {failed} failed" if failed else ""),
                 f"{len(self.outbox) + self.router.waiting} message(s) queued"]
        stuck = [f"{w.unit.name} ({w.busy_for(now):.0f} s)" for w in self.workers
                 if w.busy_for(now) > self.config.plugin_timeout]
        if stuck:
            parts.append("stuck: " + ", ".join(stuck))
        return "; ".join(parts)
