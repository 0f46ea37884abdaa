"""Socket Mode: `apps.connections.open`, envelopes acked at once, replies via the Web API."""
from __future__ import annotations

from typing import Any, Callable

from websockets.asyncio.client import ClientConnection

from rtmbotd.slack.link import Link, open_websocket
from rtmbotd.slack.protocol import PLUGIN_ENVELOPES
from rtmbotd.slack.web import SlackWeb


def _always() -> bool:
    return True


class SocketModeLink(Link):
    mode = "socket_mode"

    def __init__(self, ws: ClientConnection, post: Callable[[Any], None],
                 acking: Callable[[], bool] = _always) -> None:
        super().__init__(ws, post)
        self._acking = acking       # False once the daemon stops: its events are left to Slack's retry

    def on_event(self, event: dict) -> None:
        # Acked here, before the loop sees it: Slack redelivers after 3 s without an ack.
        # While stopping, an event's envelope is not acked, so Slack delivers it again to
        # another connection or to the next start instead of losing it.
        envelope_id = event.get("envelope_id")
        if isinstance(envelope_id, str) and (self._acking() or event.get("type") not in PLUGIN_ENVELOPES):
            self.ack(envelope_id)

    def ack(self, envelope_id: str) -> None:
        self.send({"envelope_id": envelope_id})


async def open_socket_mode(app_web: SlackWeb, post: Callable[[Any], None],
                           acking: Callable[[], bool] = _always) -> SocketModeLink:
    info = await app_web.call("apps.connections.open")
    ws = await open_websocket(info["url"])
    return SocketModeLink(ws, post, acking).start()
