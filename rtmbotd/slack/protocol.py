"""What a decoded Slack frame means, for RTM and Socket Mode: pure classification.

The daemon reacts to the result by its type (`Hello`, `Reply`, `Event`, ...), so the
protocol rules live here and are tested without sockets.
"""
from __future__ import annotations

from dataclasses import dataclass

from rtmbotd.slack.frames import event_type

# Socket Mode envelope type -> the plugin callback its payload goes to (events_api
# events go to process_<event type> instead, exactly like RTM events).
ENVELOPE_CALLBACKS = {
    "slash_commands": "slash_command",
    "interactive": "interactive",
}
# The envelopes whose payload goes to the plugins: acked only while the daemon takes events.
PLUGIN_ENVELOPES = frozenset({"events_api", *ENVELOPE_CALLBACKS})


@dataclass(frozen=True)
class Hello:
    """The link is ready; Socket Mode's names the app it belongs to (connection_info.app_id)."""

    app_id: str | None = None


@dataclass(frozen=True)
class Goodbye:
    """Slack is about to close this link: open the next one now."""

    reason: str


@dataclass(frozen=True)
class Pong:
    """The answer to our RTM ping."""


@dataclass(frozen=True)
class Reply:
    """RTM: Slack's answer to a message we sent (`reply_to` = our frame id)."""

    frame: dict


@dataclass(frozen=True)
class Event:
    """An event for plugins: `process_<kind>(data)`; `envelope_id` and the Events API's
    `event_id` (the same in every redelivery) for de-duplication."""

    kind: str
    data: dict
    envelope_id: str | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class Ignored:
    why: str


Frame = Hello | Goodbye | Pong | Reply | Event | Ignored


def classify_rtm(frame: dict) -> Frame:
    if "reply_to" in frame and "type" not in frame:
        return Reply(frame)
    kind = event_type(frame)
    if kind == "hello":
        return Hello()
    if kind == "pong":
        return Pong()
    if kind == "goodbye":
        return Goodbye("Slack said goodbye")
    if kind is None:
        return Ignored("no usable type")
    return Event(kind, frame)


def classify_socket_mode(frame: dict) -> Frame:
    kind = frame.get("type")
    if kind == "hello":
        info = frame.get("connection_info")
        app_id = info.get("app_id") if isinstance(info, dict) else None
        return Hello(app_id if isinstance(app_id, str) else None)
    if kind == "disconnect":
        return Goodbye(f"Slack asked to reconnect ({frame.get('reason', '?')})")
    payload = frame.get("payload")
    envelope_id = frame.get("envelope_id")
    envelope_id = envelope_id if isinstance(envelope_id, str) else None
    if not isinstance(payload, dict):
        return Ignored(f"envelope of type {kind!r} without a payload")
    if kind == "events_api":
        event = payload.get("event")
        if isinstance(event, dict):
            name = event_type(event)
            event_id = payload.get("event_id")
            if name is not None:
                return Event(name, event, envelope_id, event_id if isinstance(event_id, str) else None)
        return Ignored("events_api envelope without a usable event")
    callback = ENVELOPE_CALLBACKS.get(kind) if isinstance(kind, str) else None
    if callback is None:
        return Ignored(f"envelope of type {kind!r}")
    return Event(callback, payload, envelope_id)


CLASSIFIERS = {"rtm": classify_rtm, "socket_mode": classify_socket_mode}
