"""One websocket session to Slack: a reader and a sender task at the I/O edge.

A link never decides anything: it reports what arrived (`LinkFrame`, `LinkBadFrame`)
and that it closed (`LinkClosed`) to the daemon's inbox, and sends what it is given.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from rtmbotd.slack.frames import BadFrame, decode_frame
from rtmbotd.slack.proxy import proxy_for

log = logging.getLogger(__name__)

MAX_FRAME = 16 * 1024 * 1024
WRITE_BUFFER_HIGH = 16 * 1024    # above this many unsent bytes (websockets pauses at 32 KiB), frames wait for the writer
_ids = itertools.count(1)


@dataclass(frozen=True)
class LinkFrame:
    link: "Link"
    event: dict


@dataclass(frozen=True)
class LinkBadFrame:
    link: "Link"
    bad: BadFrame


@dataclass(frozen=True)
class LinkClosed:
    link: "Link"
    reason: str


async def open_websocket(url: str) -> ClientConnection:
    """Connect with settings suited to Slack: no compression, big frames, keepalive."""
    return await connect(url, max_size=MAX_FRAME, compression=None, open_timeout=15,
                         close_timeout=3, ping_interval=30, ping_timeout=20,
                         proxy=proxy_for(url),
                         user_agent_header="rtmbotd")


class Link:
    """A websocket to Slack; subclasses say what an incoming frame needs (acks)."""

    mode = "?"

    def __init__(self, ws: ClientConnection, post: Callable[[Any], None]) -> None:
        self.id = next(_ids)
        self.ws = ws
        self._post = post
        self._outgoing: asyncio.Queue[str | None] = asyncio.Queue()
        self._writing = False           # the writer task is inside ws.send()
        self._tasks: list[asyncio.Task] = []

    def __repr__(self) -> str:
        return f"<{self.mode} link #{self.id}>"

    def start(self) -> "Link":
        self._tasks = [asyncio.create_task(self._read(), name=f"{self}-reader"),
                       asyncio.create_task(self._write(), name=f"{self}-writer")]
        return self

    def send(self, obj: dict) -> None:
        """Send a JSON frame; frames go out in the order they were given.

        When nothing is queued and the socket takes data, the frame is written at once
        (websockets' sans-I/O protocol frames it, the transport takes the bytes), saving
        a task switch per reply. Otherwise it waits in order for the writer task, which
        goes through `ws.send()` and its flow control.
        """
        frame = json.dumps(obj, ensure_ascii=False)
        if not self._writing and self._outgoing.empty() and self._write_now(frame):
            return
        self._outgoing.put_nowait(frame)

    def _write_now(self, frame: str) -> bool:
        transport, protocol = self.ws.transport, self.ws.protocol
        if (transport.is_closing() or protocol.state is not State.OPEN
                or transport.get_write_buffer_size() > WRITE_BUFFER_HIGH):
            return False
        protocol.send_text(frame.encode("utf-8"))
        for data in protocol.data_to_send():
            if data:
                transport.write(data)
        return True

    def on_event(self, event: dict) -> None:
        """Hook for protocol duties that cannot wait for the loop (Socket Mode acks)."""

    async def _read(self) -> None:
        reason = "closed"
        try:
            async for raw in self.ws:
                decoded = decode_frame(raw)
                if isinstance(decoded, BadFrame):
                    self._post(LinkBadFrame(self, decoded))
                else:
                    self.on_event(decoded)
                    self._post(LinkFrame(self, decoded))
            rcvd = self.ws.close_rcvd
            reason = f"closed by Slack (code {rcvd.code}{', ' + rcvd.reason if rcvd and rcvd.reason else ''})" \
                if rcvd else "closed"
        except websockets.ConnectionClosed as exc:
            reason = f"connection lost ({exc})"
        except Exception as exc:  # noqa: BLE001 - any failure ends this link only
            reason = f"read failed ({type(exc).__name__}: {exc})"
        finally:
            self._outgoing.put_nowait(None)
            self._post(LinkClosed(self, reason))

    async def _write(self) -> None:
        while True:
            frame = await self._outgoing.get()
            if frame is None:
                return
            self._writing = True
            try:
                await self.ws.send(frame)
            except websockets.ConnectionClosed:
                return
            except Exception as exc:  # noqa: BLE001
                log.warning("%r: send failed: %s", self, exc)
                return
            finally:
                self._writing = False

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close politely (close frame, wait for the peer briefly)."""
        try:
            await self.ws.close(code, reason)
        except Exception:  # noqa: BLE001
            pass

    def abort(self) -> None:
        for task in self._tasks:
            task.cancel()
        transport = getattr(self.ws, "transport", None)
        if transport is not None:
            transport.abort()
