"""Socket Mode: `apps.connections.open`, envelopes acked at once, replies via the Web API."""
from __future__ import annotations

from typing import Any, Callable

from rtmbotd.slack.link import Link, open_websocket
from rtmbotd.slack.web import SlackWeb

class SocketModeLink(Link):
    mode = "socket_mode"

    def on_event(self, event: dict) -> None:
        # Acked here, before the loop sees it: Slack redelivers after 3 s without an ack.
        envelope_id = event.get("envelope_id")
        if isinstance(envelope_id, str):
            self.send({"envelope_id": envelope_id})


async def open_socket_mode(app_web: SlackWeb, post: Callable[[Any], None]) -> SocketModeLink:
    info = await app_web.call("apps.connections.open")
    ws = await open_websocket(info["url"])
    return SocketModeLink(ws, post).start()
