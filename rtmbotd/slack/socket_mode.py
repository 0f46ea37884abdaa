"""Socket Mode: `apps.connections.open`, envelopes acked at once, replies via the Web API."""
from __future__ import annotations

from typing import Any, Callable

from rtmbotd.slack.link import Link, open_websocket
from rtmbotd.slack.web import SlackWeb

# Envelope type -> the plugin callback its payload is dispatched to (events_api events
# go to process_<event type> instead, exactly like RTM events).
ENVELOPE_CALLBACKS = {
    "slash_commands": "slash_command",
    "interactive": "interactive",
}


class SocketModeLink(Link):
    mode = "socket_mode"

    def on_event(self, event: dict) -> None:
        # Acked here, before the loop sees it: Slack redelivers after 3 s without an ack.
        envelope_id = event.get("envelope_id")
        if isinstance(envelope_id, str):
            self.send({"envelope_id": envelope_id})


def unwrap(envelope: dict) -> tuple[str, dict] | None:
    """The (callback name, data) a Socket Mode frame carries for plugins, if any."""
    kind = envelope.get("type")
    payload = envelope.get("payload")
    if not isinstance(payload, dict):
        return None
    if kind == "events_api":
        event = payload.get("event")
        if isinstance(event, dict) and isinstance(event.get("type"), str):
            return event["type"], event
        return None
    callback = ENVELOPE_CALLBACKS.get(kind) if isinstance(kind, str) else None
    return (callback, payload) if callback else None


async def open_socket_mode(app_web: SlackWeb, post: Callable[[Any], None]) -> SocketModeLink:
    info = await app_web.call("apps.connections.open")
    ws = await open_websocket(info["url"])
    return SocketModeLink(ws, post).start()
