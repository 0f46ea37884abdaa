"""The fake Slack's loop-side core: RTM and Socket Mode websockets, event delivery, acks, bot messages.

Everything here runs on the fake's own event loop; other threads reach it through `FakeSlack`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable

from aiohttp import WSMsgType, web

from rtmbotd.testing.fakeslack.journal import MODES, Journal
from rtmbotd.testing.fakeslack.ratelimit import ChannelRateLimit
from rtmbotd.testing.fakeslack.workspace import (
    APP_ID, BOT_ID, BOT_USER_ID, TEAM_DOMAIN, TEAM_ID, Channel, Workspace)

log = logging.getLogger(__name__)

RTM_MAX_FRAME = 16 * 1024          # Slack closes an RTM socket (1009) on a bigger frame
RTM_MAX_TEXT = 4000
RATE_LIMIT_CLOSE_CODE = 1008       # policy violation: what the fake uses after "slow down"
CLOSE_HANDSHAKE_TIMEOUT = 2.0

RTM_HELLO = '{"type": "hello"}'
RTM_GOODBYE = '{"type": "goodbye"}'
INVALID_JSON = '{"type": "error", "error": {"code": 1, "msg": "invalid json"}}'
SLOW_DOWN = "slow down, too many messages..."
DISTRIBUTIONS = ("round_robin", "random")    # how envelopes are spread over Socket Mode connections
MAX_RETRIES = 3                    # Slack retries an event at most three times


@dataclass(eq=False)
class Connection:
    """One accepted websocket, RTM or Socket Mode."""

    mode: str
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    id: int = 0                        # 1, 2, ... in the order accepted (the journal names it so)
    closer: asyncio.TimerHandle | None = None
    open: bool = True


def _modes(mode: str) -> tuple[str, ...]:
    if mode == "all":
        return MODES
    if mode not in MODES:
        raise ValueError(f"mode must be 'all', 'rtm' or 'socket_mode', not {mode!r}")
    return (mode,)


class Hub:
    """Owns the open sockets and everything that writes to them."""

    def __init__(self, workspace: Workspace, journal: Journal) -> None:
        self.workspace = workspace
        self.journal = journal
        self.connections: dict[str, list[Connection]] = {mode: [] for mode in MODES}
        self.rate_limit: ChannelRateLimit | None = None
        self.echo_own_messages = True
        self.ack_timeout = 3.0
        self.goodbye_grace = 2.0
        self.http_base = "http://127.0.0.1"   # set by FakeSlack once the port is known
        self._next_socket_mode = 0
        self.distribution = "round_robin"
        self._random = random.Random()
        self._connection_ids = 0
        self._held: set[str] = set()          # envelope ids whose ack timeout is held
        self._retried: set[str] = set()       # envelope ids retried already (timeout or closed connection)
        self._closing = False
        self._tickets: dict[str, str] = {}
        self.response_urls: dict[str, str] = {}   # response_url token -> channel id
        self._refuse = 0
        self._ack_timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- connecting -----------------------------------------------------------------------

    def issue_ticket(self, mode: str, host: str) -> str:
        """A single-use websocket URL for `mode` on `host` (the Host the client reached us at)."""
        ticket = secrets.token_urlsafe(16)
        self._tickets[ticket] = mode
        path = "/rtm" if mode == "rtm" else "/link/"
        return f"ws://{host}{path}?ticket={ticket}"

    def refuse_connections(self, n: int) -> None:
        self._refuse = int(n)

    async def _accept(self, request: web.Request, mode: str,
                      hello: str | None = None) -> Connection | web.Response:
        if self._refuse > 0:
            self._refuse -= 1
            return web.Response(status=503, text="connection refused by the fake\n")
        if self._tickets.pop(request.query.get("ticket", ""), None) != mode:
            return web.Response(status=401, text="invalid ticket\n")
        ws = web.WebSocketResponse(
            max_msg_size=RTM_MAX_FRAME if mode == "rtm" else 4 * 1024 * 1024,
            compress=False, timeout=CLOSE_HANDSHAKE_TIMEOUT)
        transport = request.transport
        await ws.prepare(request)
        self._connection_ids += 1
        conn = Connection(mode, ws, transport, self._connection_ids)
        if hello is None:
            hello = json.dumps({
                "type": "hello",
                "num_connections": len(self.connections[mode]) + 1,
                "debug_info": {"host": "fake", "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            })
        # Counted before the hello goes out: a client that has read it sees itself counted.
        self.connections[mode].append(conn)
        self.journal.connection_opened(mode, conn.id)
        try:
            await ws.send_str(hello)
        except BaseException:
            self._forget(conn)
            raise
        log.debug("%s connection opened from %s", mode, request.remote)
        return conn

    def _forget(self, conn: Connection) -> None:
        if not conn.open:
            return
        conn.open = False
        if conn.closer is not None:
            conn.closer.cancel()
        self.connections[conn.mode].remove(conn)
        self.journal.connection_closed(conn.mode, conn.id)
        if conn.mode == "socket_mode" and not self._closing:
            self._retry_unacked_of(conn)

    async def handle_rtm(self, request: web.Request) -> web.StreamResponse:
        """GET /rtm?ticket=…: one RTM session."""
        conn = await self._accept(request, "rtm", RTM_HELLO)
        if isinstance(conn, web.Response):
            return conn
        return await self._serve(conn, lambda data: self._rtm_frame(conn, data))

    async def handle_socket_mode(self, request: web.Request) -> web.StreamResponse:
        """GET /link/?ticket=…: one Socket Mode session."""
        conn = await self._accept(request, "socket_mode")
        if isinstance(conn, web.Response):
            return conn

        async def on_frame(data: str | bytes) -> None:
            self._socket_mode_frame(conn, data)
        return await self._serve(conn, on_frame)

    async def _serve(self, conn: Connection, on_frame) -> web.StreamResponse:
        """Feed each frame of `conn` to `on_frame` until the socket closes."""
        try:
            while True:
                msg = await conn.ws.receive()
                if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                    await on_frame(msg.data)
                else:
                    break
        except (ConnectionError, RuntimeError) as exc:
            log.debug("%s connection ended: %r", conn.mode, exc)
        finally:
            self._forget(conn)
        return conn.ws

    # -- frames from the bot ----------------------------------------------------------------

    async def _rtm_frame(self, conn: Connection, data: str | bytes) -> None:
        received_at = time.monotonic()
        self.journal.frame("rtm", data)
        try:
            frame = json.loads(data)
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            await self._send(conn, INVALID_JSON)
            return
        kind = frame.get("type")
        reply_to = frame.get("id")
        if kind == "message":
            await self._rtm_message(conn, frame, reply_to, received_at)
        elif kind == "ping":
            pong = {"type": "pong", "reply_to": reply_to}
            pong.update((k, v) for k, v in frame.items() if k not in ("id", "type"))
            await self._send(conn, json.dumps(pong))
        elif kind != "typing":
            await self._rtm_error(conn, reply_to, 3, "unsupported type")

    async def _rtm_error(self, conn: Connection, reply_to: Any, code: int, msg: str) -> None:
        await self._send(conn, json.dumps(
            {"ok": False, "reply_to": reply_to, "error": {"code": code, "msg": msg}}))

    async def _rtm_message(self, conn: Connection, frame: dict, reply_to: Any,
                           received_at: float) -> None:
        channel = self.workspace.resolve_channel(frame.get("channel"))
        if channel is None:
            await self._rtm_error(conn, reply_to, -1, "channel not found")
            return
        text = frame.get("text")
        if not isinstance(text, str) or not text:
            await self._rtm_error(conn, reply_to, 2, "message text is missing")
            return
        thread_ts = frame.get("thread_ts")
        record = {"channel": channel.id, "text": text, "ts": None, "via": "rtm",
                  "thread_ts": thread_ts, "blocks": None, "attachments": None,
                  "received_at": received_at}
        if len(text) > RTM_MAX_TEXT:
            self.journal.rejected(dict(record, reason="msg_too_long"))
            await self._rtm_error(conn, reply_to, 2, "message text is too long")
            return
        if self.rate_limited(channel.id, received_at):
            self.journal.rejected(dict(record, reason="rate_limited"))
            await self._rtm_error(conn, reply_to, -1, SLOW_DOWN)
            await self._close(conn, RATE_LIMIT_CLOSE_CODE)
            return
        ts = record["ts"] = self.workspace.next_ts()
        self.journal.message(record)
        await self._send(conn, json.dumps({"ok": True, "reply_to": reply_to, "ts": ts, "text": text}))
        if self.echo_own_messages:
            await self.push_event(self.bot_message_event(channel, text, ts, thread_ts=thread_ts))

    def _socket_mode_frame(self, conn: Connection, data: str | bytes) -> None:
        now = time.monotonic()
        self.journal.frame("socket_mode", data)
        try:
            frame = json.loads(data)
        except ValueError:
            log.debug("socket mode client sent invalid json")
            return
        if isinstance(frame, dict) and isinstance(frame.get("envelope_id"), str):
            envelope_id = frame["envelope_id"]
            timer = self._ack_timers.pop(envelope_id, None)
            if timer is not None:
                timer.cancel()
            self.journal.ack(envelope_id, frame.get("payload"), now, conn.id)

    # -- bot messages (shared by RTM and chat.postMessage) -----------------------------------

    def enforce_rate_limit(self, per_second: float | None = 1.0, burst: int = 5) -> None:
        """Limit the bot's messages per channel; `per_second=None` turns the limit off."""
        self.rate_limit = None if per_second is None else ChannelRateLimit(per_second, burst)

    def rate_limited(self, channel_id: str, now: float) -> float:
        """0.0 if the bot may send to `channel_id` now, else seconds to wait (a violation)."""
        if self.rate_limit is None:
            return 0.0
        wait = self.rate_limit.take(channel_id, now)
        if wait > 0:
            self.journal.violation()
        return wait

    def bot_message_event(self, channel: Channel, text: str, ts: str, **extra: Any) -> dict:
        """The `message` event Slack emits for a message the bot itself posted."""
        event = {"type": "message", "channel": channel.id, "user": BOT_USER_ID, "bot_id": BOT_ID,
                 "text": text, "ts": ts, "team": TEAM_ID}
        event.update((k, v) for k, v in extra.items() if v is not None)
        return event

    # -- delivering to the bot ------------------------------------------------------------------

    async def _send(self, conn: Connection, data: str | bytes) -> None:
        try:
            if isinstance(data, str):
                await conn.ws.send_str(data)
            else:
                await conn.ws.send_bytes(data)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("%s send failed: %r", conn.mode, exc)

    async def push_event(self, event: dict) -> float:
        """Send `event` to every RTM client and, as one envelope, to one Socket Mode client."""
        event = dict(event)
        if "ts" not in event:
            event["ts"] = self.workspace.next_ts()
        event.setdefault("event_ts", event["ts"])
        if self.connections["rtm"]:
            frame = json.dumps(event)
            for conn in list(self.connections["rtm"]):
                await self._send(conn, frame)
        if self.connections["socket_mode"]:
            await self.send_envelope(self._events_api_envelope(event))
        return time.monotonic()

    async def message(self, text: str, *, channel: str = "D1ALICE", user: str = "U1ALICE",
                      **extra: Any) -> float:
        """A user's message event, pushed to every client."""
        event = {"type": "message", "channel": channel, "user": user, "text": text,
                 "ts": extra.pop("ts", None) or self.workspace.next_ts(), "team": TEAM_ID}
        event.update(extra)
        return await self.push_event(event)

    async def push_raw(self, data: str | bytes, *, mode: str = "all") -> int:
        """Write `data` as one frame (text for str, binary for bytes) to every client of `mode`."""
        targets = [c for m in _modes(mode) for c in self.connections[m]]
        for conn in targets:
            await self._send(conn, data)
        return len(targets)

    def _envelope(self, kind: str, payload: dict, accepts_response_payload: bool) -> dict:
        return {"envelope_id": str(uuid.uuid4()), "type": kind,
                "accepts_response_payload": accepts_response_payload,
                "retry_attempt": 0, "retry_reason": "", "payload": payload}

    def _events_api_envelope(self, event: dict) -> dict:
        if event.get("type") == "message" and "channel_type" not in event:
            key = event.get("channel")
            channel = self.workspace.channels.get(key) if isinstance(key, str) else None
            if channel is not None:
                event = dict(event, channel_type=channel.channel_type)
        return self._envelope("events_api", {
            "token": "x", "team_id": TEAM_ID, "api_app_id": APP_ID, "event": event,
            "type": "event_callback", "event_id": "Ev" + secrets.token_hex(5).upper(),
            "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": TEAM_ID, "user_id": BOT_USER_ID,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False,
        }, False)

    def distribute(self, mode: str = "round_robin", seed: int | None = None) -> None:
        """Spread envelopes over the Socket Mode connections `round_robin` (the default) or at
        `random`, seeded by `seed` for a repeatable run."""
        if mode not in DISTRIBUTIONS:
            raise ValueError(f"mode must be one of {', '.join(DISTRIBUTIONS)}, not {mode!r}")
        self.distribution = mode
        self._random = random.Random(seed)

    def _pick(self, avoid: int | None) -> Connection | None:
        """The connection for the next envelope: never connection `avoid` when there is another."""
        conns = self.connections["socket_mode"]
        choices = [c for c in conns if c.id != avoid] or conns
        if not choices:
            return None
        if self.distribution == "random":
            return self._random.choice(choices)
        start = self._next_socket_mode
        self._next_socket_mode += 1
        for i in range(len(conns)):            # the rotation over all connections, skipping `avoid`
            conn = conns[(start + i) % len(conns)]
            if conn in choices:
                self._next_socket_mode = start + i + 1
                return conn
        return choices[0]

    async def send_envelope(self, envelope: dict, avoid: int | None = None) -> bool:
        """Deliver an envelope to one Socket Mode connection (as `distribute` says; not to
        connection `avoid` when there is another) and await its ack."""
        conn = self._pick(avoid)
        if conn is None:
            log.debug("no socket mode connection for envelope %s", envelope["envelope_id"])
            return False
        envelope_id = envelope["envelope_id"]
        self.journal.envelope_sent(envelope, time.monotonic(), conn.id)
        self._ack_timers[envelope_id] = asyncio.get_running_loop().call_later(
            self.ack_timeout, self._on_ack_timeout, envelope_id)
        await self._send(conn, json.dumps(envelope))
        return True

    def _on_ack_timeout(self, envelope_id: str) -> None:
        self._ack_timers.pop(envelope_id, None)
        pending = self.journal.timed_out(envelope_id)
        if (pending is None or pending["type"] != "events_api" or pending["retry_attempt"] >= 1
                or envelope_id in self._retried):
            return                # Slack retries Events API envelopes only, never a slash command
        self._retried.add(envelope_id)
        self._spawn(self._retry(pending["envelope"], "timeout"))

    def _retry_unacked_of(self, conn: Connection) -> None:
        """A closed connection's unacked envelopes go to another connection, as Slack retries
        them (held ones wait for the test; with no other connection, for their ack timeout)."""
        if not self.connections["socket_mode"]:
            return
        for pending in self.journal.unacked():
            envelope_id = pending["envelope_id"]
            if (pending["connection"] != conn.id or envelope_id in self._held or envelope_id in self._retried
                    or pending["type"] != "events_api" or pending["retry_attempt"] >= MAX_RETRIES):
                continue
            self._retried.add(envelope_id)
            timer = self._ack_timers.pop(envelope_id, None)
            if timer is not None:
                timer.cancel()
            self._spawn(self._retry(pending["envelope"], "timeout"))

    def hold_ack_timeout(self, event_id: str | None = None, *, hold: bool = True) -> str:
        """Hold (or, `hold=False`, restart) the ack timeout of the latest envelope of `event_id`
        (None: of the latest event): held, it is not retried on its own, neither after
        `ack_timeout` nor when its connection closes, only by `redeliver`. Its envelope_id."""
        envelope = self.journal.last_event_envelope(event_id)
        if envelope is None:
            raise ValueError(f"no events_api envelope sent for event_id {event_id!r}")
        envelope_id = envelope["envelope_id"]
        timer = self._ack_timers.pop(envelope_id, None)
        if timer is not None:
            timer.cancel()
        if hold:
            self._held.add(envelope_id)
        else:
            self._held.discard(envelope_id)
            if any(p["envelope_id"] == envelope_id for p in self.journal.unacked()):
                self._ack_timers[envelope_id] = asyncio.get_running_loop().call_later(
                    self.ack_timeout, self._on_ack_timeout, envelope_id)
        return envelope_id

    async def redeliver(self, event_id: str | None = None, *, reason: str = "timeout") -> str | None:
        """Retry an Events API envelope as Slack does, acked or not: a new envelope_id, the same
        payload and event_id, `retry_attempt` one more than its last try, `retry_reason`; sent to
        another Socket Mode connection than the last try's when there is one.

        `event_id=None` retries the latest event. Returns the new envelope_id, None without a
        connection; ValueError when no such event was sent.
        """
        envelope = self.journal.last_event_envelope(event_id)
        if envelope is None:
            raise ValueError(f"no events_api envelope sent for event_id {event_id!r}")
        return await self._retry(envelope, str(reason))

    async def _retry(self, envelope: dict, reason: str) -> str | None:
        retry = dict(envelope, envelope_id=str(uuid.uuid4()),
                     retry_attempt=envelope["retry_attempt"] + 1, retry_reason=reason)
        avoid = self.journal.delivered_on(envelope["envelope_id"])
        retry_id = retry["envelope_id"] if await self.send_envelope(retry, avoid) else None
        self.journal.redelivered(envelope["envelope_id"], retry_id, reason)
        return retry_id

    async def push_slash_command(self, command: str, text: str, *, user: str = "U1ALICE",
                                 channel: str = "C1GENERAL") -> float:
        """A slash command envelope to one Socket Mode client."""
        user_obj = self.workspace.users.get(user)
        channel_obj = self.workspace.channels.get(channel)
        token = secrets.token_hex(8)
        self.response_urls[token] = channel
        await self.send_envelope(self._envelope("slash_commands", {
            "token": "x", "team_id": TEAM_ID, "team_domain": TEAM_DOMAIN,
            "channel_id": channel, "channel_name": channel_obj.name if channel_obj else "",
            "user_id": user, "user_name": user_obj.name if user_obj else "",
            "command": command, "text": text, "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": f"{self.http_base}/_response_url/{token}",
            "trigger_id": f"{int(time.time())}.{token}",
        }, True))
        return time.monotonic()

    async def push_interactive(self, payload: dict) -> float:
        """An interactive envelope (block actions, shortcuts, views) with `payload` as given."""
        accepts = payload.get("type") in ("view_submission", "block_suggestion")
        await self.send_envelope(self._envelope("interactive", dict(payload), accepts))
        return time.monotonic()

    # -- workspace changes the clients hear about -------------------------------------------------

    async def add_user(self, id: str, name: str) -> float:
        user = self.workspace.add_user(id, name)
        return await self.push_event({"type": "team_join", "user": user.to_json()})

    async def add_channel(self, id: str, name: str, is_private: bool = False) -> float:
        channel = self.workspace.add_channel(id, name, is_private=is_private)
        return await self.push_event({"type": "channel_created",
                                      "channel": self.workspace.channel_event(channel)})

    async def rename_channel(self, id: str, new: str) -> float:
        channel = self.workspace.rename_channel(id, new)
        return await self.push_event({"type": "channel_rename",
                                      "channel": self.workspace.channel_event(channel)})

    # -- ending connections ---------------------------------------------------------------------------

    def drop_connections(self, mode: str = "all") -> int:
        """Abort the TCP connections of `mode` without a close frame."""
        targets = [c for m in _modes(mode) for c in self.connections[m]]
        for conn in targets:
            if conn.transport is not None:
                conn.transport.abort()
            self._forget(conn)
        return len(targets)

    async def _close(self, conn: Connection, code: int) -> None:
        try:
            await conn.ws.close(code=code)
        except (ConnectionError, RuntimeError, asyncio.TimeoutError) as exc:
            log.debug("closing %s connection: %r", conn.mode, exc)
        self._forget(conn)

    async def close_connections(self, code: int = 1000, mode: str = "all") -> int:
        """Close the connections of `mode` cleanly with `code`."""
        targets = [c for m in _modes(mode) for c in self.connections[m]]
        await asyncio.gather(*(self._close(conn, code) for conn in targets))
        return len(targets)

    def _close_after_grace(self, conn: Connection) -> None:
        if conn.closer is not None:
            conn.closer.cancel()
        conn.closer = asyncio.get_running_loop().call_later(self.goodbye_grace,
                                      lambda: self._spawn(self._close(conn, 1000)))

    async def send_goodbye(self) -> int:
        """RTM `goodbye` to every RTM client; each socket closes after `goodbye_grace`."""
        conns = list(self.connections["rtm"])
        for conn in conns:
            await self._send(conn, RTM_GOODBYE)
            self._close_after_grace(conn)
        return len(conns)

    async def send_disconnect(self, reason: str = "refresh_requested") -> int:
        """Socket Mode `disconnect` to every client; each socket closes after `goodbye_grace`."""
        frame = json.dumps({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}})
        conns = list(self.connections["socket_mode"])
        for conn in conns:
            await self._send(conn, frame)
            self._close_after_grace(conn)
        return len(conns)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        """Close every socket (aborting those that do not answer) and cancel timers."""
        self._closing = True
        for timer in self._ack_timers.values():
            timer.cancel()
        self._ack_timers.clear()
        for task in list(self._tasks):
            task.cancel()
        conns = [c for m in MODES for c in self.connections[m]]
        if conns:
            closing = asyncio.gather(*(self._close(c, 1001) for c in conns))
            try:
                await asyncio.wait_for(closing, timeout=1.0)
            except asyncio.TimeoutError:
                pass
        self.drop_connections("all")
