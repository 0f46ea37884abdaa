"""Keeps one live link to Slack and carries the outbox over it.

Owned by the daemon's loop: it opens links (RTM or Socket Mode) with backoff, swaps in
a replacement on `goodbye`/`disconnect` before the old one goes, tracks RTM acks, and
posts messages over the socket or the Web API. The inbox items about links and sends
(`LinkOpened`, `LinkFailed`, `LinkClosed`, `LinkBadFrame`, `SendResult`) go straight
to its `handle_*` methods; of a `LinkFrame` it keeps the link's business and hands
back the rest (events).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable

from rtmbotd.slack.backoff import Backoff
from rtmbotd.config import Config
from rtmbotd.metrics import Recorder
from rtmbotd.metrics.recorder import label
from rtmbotd.outbox import Message, Outbox
from rtmbotd.slack.link import Link, LinkBadFrame, LinkClosed, LinkFrame
from rtmbotd.slack.protocol import CLASSIFIERS, Frame, Goodbye, Hello, Ignored, Pong, Reply
from rtmbotd.slack.rtm import RtmLink, open_rtm
from rtmbotd.slack.socket_mode import open_socket_mode
from rtmbotd.slack.web import SlackWeb, WebError
from rtmbotd.slack.writes import send

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 20.0
PING_INTERVAL = 30.0
HEALTHY_AFTER = 30.0      # a link that lived this long resets the backoff
AUTH_RETRY = 60.0         # at least this long between tries of a token Slack rejected


@dataclass(frozen=True)
class LinkOpened:
    link: Link
    epoch: int
    identity: dict | None


@dataclass(frozen=True)
class LinkFailed:
    error: str
    retry_after: float | None
    auth: bool
    epoch: int


@dataclass(frozen=True)
class SendResult:
    message: Message
    error: WebError | None
    response: dict | None = None      # Slack's answer, when it took it


# A write settled (delivered or refused for good) whose plugin asked for its result:
# (message, ok, Slack's answer or None, error or None).
ResultHook = Callable[[Message, bool, "dict | None", "str | None"], None]


class Connector:
    def __init__(self, post: Callable[[Any], None], outbox: Outbox, clock: Callable[[], float],
                 status_changed: Callable[[], None] = lambda: None, recorder: Recorder | None = None) -> None:
        self._post = post
        self.outbox = outbox
        self._clock = clock
        self.recorder = recorder or Recorder()
        self._lost_why: str | None = None       # why we end the live link ourselves (reconnect metric)
        self._status_changed = status_changed     # what `status()` says may have changed
        self.config: Config | None = None
        self.web: SlackWeb | None = None
        self.app_web: SlackWeb | None = None
        self.epoch = 0
        self.link: Link | None = None          # the live link (hello received)
        self.pending: Link | None = None       # opened, waiting for hello
        self.connecting = False
        self.retry_at: float | None = None
        self.hello_deadline: float | None = None
        self.ping_at: float | None = None
        self.ping_unanswered = False
        self.linked_at = 0.0
        self.backoff = Backoff(base=1.0, cap=60.0)
        self.identity: dict | None = None      # auth.test: user_id, bot_id
        self._need_auth = True
        self.problem = ""                      # why we are not connected, for STATUS
        self._rejected_epoch: int | None = None   # the epoch whose token chat.postMessage refused
        self._rtm_inflight: dict[tuple[int, int], Message] = {}
        self._tasks: set[asyncio.Task] = set()
        self.stopping = False
        self.acking = True         # Socket Mode links ack plugin envelopes (False from the stop on)
        self.held: str | None = None   # cluster over RTM, not the leader: no link, and why (STATUS)
        self.on_result: ResultHook | None = None     # the daemon hands results to plugins' callbacks

    # -- configuration -----------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self.config is not None and self.config.has_token

    def configure(self, config: Config, now: float) -> None:
        """Adopt `config`; a changed token or URL makes a new link, the old one is retired."""
        old = self.config
        self.config = config
        if old is not None and old.connection_key() == config.connection_key():
            return
        self.epoch += 1
        self._need_auth = True     # the old identity keeps filtering our own echoes until then
        old_web, old_app = self.web, self.app_web
        self.web = SlackWeb(config.slack_token, config.api_url) if config.slack_token else None
        self.app_web = SlackWeb(config.app_token, config.api_url) if config.app_token else None
        for client in (old_web, old_app):
            if client is not None:
                self._spawn(client.close())
        self.connecting = False
        self.backoff.reset()
        if self.pending is not None:
            self.pending.abort()
            self.pending = None
        if self.enabled:
            self.retry_at = None if self.held else now
        else:
            self.retry_at = None
            self._retire_current()

    def hold(self, why: str | None, now: float) -> None:
        """Cluster mode over RTM: only the leader connects (RTM sends every event to every
        socket). `why` given: close the link and stay unconnected; None: connect now."""
        if why == self.held:
            return
        self.held = why
        if why:
            self.epoch += 1          # an open under way is closed when it arrives
            self.connecting = False
            self.retry_at = self.hello_deadline = None
            if self.pending is not None:
                pending, self.pending = self.pending, None
                pending.abort()
            if self.link is not None:
                log.info("closing the Slack link: %s", why)
                self._retire_current()
        elif self.enabled:
            self.retry_at = now
        self._status_changed()

    # -- deadlines -----------------------------------------------------------
    def next_deadline(self, now: float) -> float | None:
        candidates = [t for t in (self.retry_at, self.hello_deadline, self.ping_at) if t is not None]
        sending = self.outbox.next_deadline(now, socket=self._socket_ready(), web=self.link is not None)
        if sending is not None:
            candidates.append(sending)
        return min(candidates, default=None)

    def tick(self, now: float) -> None:
        """Timers, then the sends due: the loop runs this after every batch of inbox items."""
        if self.retry_at is not None and now >= self.retry_at and not self.stopping:
            self.retry_at = None
            self._connect()
        if self.hello_deadline is not None and now >= self.hello_deadline:
            self.hello_deadline = None
            if self.pending is not None:
                log.warning("%r: no hello within %g s; dropping it", self.pending, HELLO_TIMEOUT)
                self.pending.abort()
        if self.ping_at is not None and now >= self.ping_at:
            self._ping(now)
        self.pump(now)

    def _ping(self, now: float) -> None:
        link = self.link
        if not isinstance(link, RtmLink):
            self.ping_at = None
            return
        if self.ping_unanswered:
            log.warning("%r: no pong for %g s; reconnecting", link, PING_INTERVAL)
            self._lost_why = "error"
            link.abort()
            self.ping_at = None
            return
        link.ping()
        self.ping_unanswered = True
        self.ping_at = now + PING_INTERVAL

    # -- opening -----------------------------------------------------------------
    def _connect(self) -> None:
        if self.connecting or not self.enabled or self.stopping or self.held:
            return
        self.connecting = True
        self.problem = "connecting"
        self._spawn(self._open(self.epoch))

    async def _open(self, epoch: int) -> None:
        cfg = self.config
        try:
            identity = self.identity
            if identity is None or self._need_auth:
                identity = await self.web.call("auth.test")
            if cfg.connection == "socket_mode":
                link = await open_socket_mode(self.app_web, self._post, lambda: self.acking)
            else:
                link = await open_rtm(self.web, self._post)
            self._post(LinkOpened(link, epoch, identity))
        except WebError as exc:
            self._post(LinkFailed(str(exc), exc.retry_after, exc.auth, epoch))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure to connect is retried
            self._post(LinkFailed(f"{type(exc).__name__}: {exc}", None, False, epoch))

    def handle_opened(self, item: LinkOpened) -> None:
        now = self._clock()
        if item.epoch != self.epoch or self.stopping:
            self._spawn(item.link.close())
            return
        self.connecting = False
        self.identity = item.identity
        self._need_auth = False
        self.pending = item.link
        self.hello_deadline = now + HELLO_TIMEOUT

    def handle_failed(self, item: LinkFailed) -> None:
        if item.epoch != self.epoch:
            return
        now = self._clock()
        self.connecting = False
        delay = self.backoff.next_delay(item.retry_after or 0.0)
        if item.auth:
            delay = max(delay, AUTH_RETRY)
            self._say_token_rejected(item.error, delay)
        else:
            log.warning("cannot connect to Slack: %s; retrying in %.1f s", item.error, delay)
            self.problem = f"cannot connect ({item.error}); retrying in {delay:.0f} s"
        self.retry_at = now + delay
        self._status_changed()

    def _say_token_rejected(self, error: str, delay: float) -> None:
        """STATUS and the log say which token to fix where."""
        key = "SLACK_APP_TOKEN" if error.startswith("apps.connections.open") else "SLACK_TOKEN"
        self.problem = (f"token rejected by Slack ({error}): fix {key} in {self.config.path} and reload; "
                        f"retrying in {delay:.0f} s")
        log.error("Slack rejected the token (%s): fix %s in %s and reload; %d message(s) kept; retrying in %.0f s",
                  error, key, self.config.path, len(self.outbox), delay)

    def _token_rejected(self, error: WebError, now: float) -> None:
        """chat.postMessage says the token is no good: stop sending (the outbox keeps every
        message), drop the link and try again with backoff; a reload with a new token sends."""
        if self._rejected_epoch == self.epoch and self.link is None:
            return                                   # another send of the same token: said already
        self._rejected_epoch = self.epoch
        self._need_auth = True
        if self.link is not None:
            self.recorder.reconnect("error")          # the live link goes, to be tried again
        self._retire_current()
        delay = max(self.backoff.next_delay(), AUTH_RETRY)
        self._say_token_rejected(str(error), delay)
        if not self.connecting and self.pending is None:
            self.retry_at = now + delay
        self._status_changed()

    # -- frames --------------------------------------------------------------
    def handle_frame(self, item: LinkFrame) -> Frame:
        """Do what a frame asks of the link (hello, RTM replies, pong, goodbye); return it
        classified, for the daemon to act on what is not the link's (events, a hello)."""
        link = item.link
        frame = CLASSIFIERS[link.mode](item.event)
        now = self._clock()
        if isinstance(frame, Reply):
            self.on_reply(link, frame.frame, now)
        elif isinstance(frame, Hello):
            self.on_hello(link, now)
        elif isinstance(frame, Pong):
            self.on_pong()
        elif isinstance(frame, Goodbye):
            if "link_disabled" in frame.reason:
                log.error("Slack disabled Socket Mode for this app (link_disabled); enable it and reload")
            if link is self.link:
                self.replace_soon(frame.reason)
        elif isinstance(frame, Ignored):
            log.debug("%r: frame ignored (%s): %.120r", link, frame.why, item.event)
        return frame

    def handle_bad_frame(self, item: LinkBadFrame) -> None:
        bad = item.bad
        log.warning("%r: ignored a bad frame (%d bytes): %s; starts %r", item.link, bad.size, bad.reason, bad.sample)

    def on_hello(self, link: Link, now: float) -> None:
        if link is not self.pending:
            return
        self.pending = None
        self.hello_deadline = None
        old = self.link
        self.link = link
        self.linked_at = now
        self.problem = ""
        self.ping_unanswered = False
        self.ping_at = now + PING_INTERVAL if isinstance(link, RtmLink) else None
        log.info("connected to Slack (%s, link #%d)", link.mode, link.id)
        self.recorder.connected(True)
        if old is not None:
            self._retire(old)
        self._status_changed()

    def is_own(self, kind: str, data: dict) -> bool:
        """A message the bot itself sent (by the identity auth.test gave), which Slack echoes."""
        if kind != "message":
            return False
        ident = self.identity or {}
        user, bot = ident.get("user_id"), ident.get("bot_id")
        return bool((user and data.get("user") == user) or (bot and data.get("bot_id") == bot))

    def on_pong(self) -> None:
        self.ping_unanswered = False

    def replace_soon(self, why: str) -> None:
        """Slack asked us to move (goodbye / disconnect): open the next link now."""
        log.info("%s; opening a new connection", why)
        self.recorder.reconnect("goodbye" if isinstance(self.link, RtmLink) else "disconnect")
        if self.pending is None:
            self.retry_at = None
            self._connect()

    def on_reply(self, link: Link, reply: dict, now: float) -> None:
        """An RTM `reply_to` for a message we sent."""
        msg = self._rtm_inflight.pop((link.id, reply.get("reply_to")), None)
        if msg is None:
            return
        if reply.get("ok", True):
            self.outbox.delivered(msg)
            self.recorder.message_sent(now - msg.queued_at)
            return
        error = reply.get("error") or {}
        text = str(error.get("msg") if isinstance(error, dict) else error)
        if "slow down" in text or "rate" in text:
            wait = self.outbox.retry(msg, now, after=1.0)
            log.warning("Slack says slow down in %s; retrying in %g s", msg.channel, wait)
        else:
            self.outbox.dropped(msg)
            self.recorder.message_failed(label(text.replace(" ", "_")))
            log.error("plugin %s: message to %s rejected by Slack: %s", msg.plugin, msg.channel, text)

    def handle_closed(self, item: LinkClosed) -> None:
        """Messages in flight on the link go back to the outbox (`tick` sends them on the
        next link, never back onto this one); the live link lost means reconnecting."""
        now = self._clock()
        link = item.link
        lost = [m for (lid, _), m in self._rtm_inflight.items() if lid == link.id]
        self._rtm_inflight = {k: m for k, m in self._rtm_inflight.items() if k[0] != link.id}
        for msg in lost:
            self.outbox.unsend(msg)
        if lost:
            log.info("%d unacknowledged message(s) will be sent again", len(lost))
        if link is self.pending:
            self.pending = None
            self.hello_deadline = None
            self._schedule_retry(now, f"closed before hello: {item.reason}")
        elif link is self.link:
            self.link = None
            self.ping_at = None
            self.recorder.connected(False)
            if self.stopping:
                return
            log.warning("Slack connection lost: %s", item.reason)
            why, self._lost_why = self._lost_why or "drop", None
            if self.pending is None and not self.connecting:    # else a goodbye's replacement is on its way
                self.recorder.reconnect(why)
            if now - self.linked_at >= HEALTHY_AFTER:
                self.backoff.reset()
            if self.pending is None and not self.connecting:
                self._schedule_retry(now, item.reason, first_free=now - self.linked_at >= HEALTHY_AFTER)
        self._status_changed()

    def _schedule_retry(self, now: float, why: str, first_free: bool = False) -> None:
        if self.stopping or not self.enabled or self.held:
            return
        delay = 0.0 if first_free else self.backoff.next_delay()
        self.retry_at = now + delay
        self.problem = f"reconnecting in {delay:.0f} s ({why})"

    # -- sending ---------------------------------------------------------------
    def _socket_ready(self) -> bool:
        return isinstance(self.link, RtmLink)

    def pump(self, now: float) -> None:
        """Send whatever the outbox lets go now (from `tick`, after every batch of inbox items)."""
        link = self.link
        if link is None:
            return
        if any(lid != link.id for lid, _ in self._rtm_inflight):
            return   # order: wait until the retired link's messages are acked or given back
        for msg, via_socket in self.outbox.ready(now, socket=self._socket_ready(), web=True):
            if via_socket:
                frame_id = link.send_message(msg.channel, msg.text, msg.extra.get("thread_ts"))
                self._rtm_inflight[(link.id, frame_id)] = msg
            else:
                self._spawn(self._post_web(msg))

    async def _post_web(self, msg: Message) -> None:
        try:
            answer = await send(self.web, msg.method, msg.channel, msg.text, dict(msg.extra))
            self._post(SendResult(msg, None, answer))
        except WebError as exc:
            self._post(SendResult(msg, exc))
        except Exception as exc:  # noqa: BLE001 - the message must leave the in-flight set
            self._post(SendResult(msg, WebError(msg.method, f"{type(exc).__name__}: {exc}")))

    def handle_sent(self, item: SendResult) -> None:
        now = self._clock()
        msg, error = item.message, item.error
        if error is None:
            self.outbox.delivered(msg)
            self.recorder.message_sent(now - msg.queued_at)
            self._settled(msg, True, item.response, None)
        elif error.auth:
            self.outbox.unsend(msg)
            self._token_rejected(error, now)
        elif error.status == 429 or error.error == "ratelimited":
            wait = self.outbox.retry(msg, now, after=error.retry_after or 1.0, web_wide=True)
            log.warning("Slack rate limit on %s; pausing sends for %g s", error.method, wait)
        elif error.permanent:
            self.outbox.dropped(msg)
            self.recorder.message_failed(error.error)
            what = "message" if msg.method == "chat.postMessage" else msg.method
            log.error("plugin %s: %s to %s dropped: %s", msg.plugin, what, msg.channel, error)
            self._settled(msg, False, None, error.error)
        else:
            wait = self.outbox.retry(msg, now)
            log.warning("%s to %s failed (%s); retrying in %g s", msg.method, msg.channel, error.error, wait)

    def _settled(self, msg: Message, ok: bool, response: dict | None, error: str | None) -> None:
        if msg.callback is not None and self.on_result is not None:
            self.on_result(msg, ok, response, error)

    # -- directory look-ups (results come back through the inbox) ------------------
    def open_dm(self, user: str, result: Callable[..., Any]) -> None:
        """conversations.open for `user`; posts result(user, channel_id | None, error, passing),
        `passing` True when trying again can help (Slack down, 429, a token to fix)."""
        async def call() -> None:
            try:
                resp = await self.web.call("conversations.open", users=user)
                self._post(result(user, (resp.get("channel") or {}).get("id")))
            except WebError as exc:
                self._post(result(user, None, str(exc), not exc.permanent or exc.auth))
            except Exception as exc:  # noqa: BLE001 - a DM must never be left waiting
                self._post(result(user, None, f"{type(exc).__name__}: {exc}"))
        if self.web is None:
            self._post(result(user, None, "no Slack token", True))
        else:
            self._spawn(call())

    def list_directory(self, result: Callable[..., Any]) -> None:
        """List channels and users; posts result(channels, users, error: WebError | None),
        with the channels listed before an error."""
        async def call() -> None:
            channels: list[dict] = []      # kept when only users.list fails (no users:read scope)
            try:
                channels = await self.web.paginate("conversations.list", "channels",
                                                   types="public_channel,private_channel,mpim,im",
                                                   exclude_archived="true")
                users = await self.web.paginate("users.list", "members")
                self._post(result(channels, users, None))
            except WebError as exc:
                self._post(result(channels, [], exc))
            except Exception as exc:  # noqa: BLE001 - a reply must come back to the loop
                self._post(result(channels, [], WebError("users.list", f"{type(exc).__name__}: {exc}")))
        if self.web is not None:
            self._spawn(call())

    # -- shutdown ----------------------------------------------------------------
    def _retire(self, link: Link) -> None:
        self._spawn(link.close(1000, "replaced"))

    def _retire_current(self) -> None:
        if self.link is not None:
            old, self.link = self.link, None
            self.recorder.connected(False)
            self._retire(old)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop_acking(self) -> None:
        """The daemon takes no more events: links, this one and any opened later, leave them
        unacked (Slack redelivers them elsewhere) and stay up to send what the outbox owes.

        Race-free: a link acks in its reader, and the inbox handles the frame it posts
        right there, so every event acked before this call was dispatched before it."""
        self.acking = False

    async def close(self) -> None:
        """Close links politely and release the HTTP sessions."""
        self.stopping = True
        self.retry_at = None
        links = [lk for lk in (self.link, self.pending) if lk is not None]
        if self.link is not None:
            self.recorder.connected(False)     # scraped until the very end of the stop
        self.link = self.pending = None
        await asyncio.gather(*(lk.close(1000, "rtmbotd stopping") for lk in links), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in (self.web, self.app_web):
            if client is not None:
                await client.close()

    def status(self) -> str:
        if not self.enabled:
            return "not connected"
        if self.link is not None:
            return f"connected ({self.link.mode})"
        if self.held:
            return self.held
        return self.problem or "connecting"
