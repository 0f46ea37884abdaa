"""The legacy RTM API: `rtm.connect`, then a websocket of raw events."""
from __future__ import annotations

import itertools
from typing import Any, Callable

from rtmbotd.slack.link import Link, open_websocket
from rtmbotd.slack.web import SlackWeb


class RtmLink(Link):
    """An RTM websocket: messages are sent on it with ids that Slack's replies echo."""

    mode = "rtm"

    def __init__(self, ws: Any, post: Callable[[Any], None], info: dict) -> None:
        super().__init__(ws, post)
        self.info = info
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    def send_message(self, channel: str, text: str, thread_ts: str | None = None) -> int:
        frame_id = self.next_id()
        frame = {"id": frame_id, "type": "message", "channel": channel, "text": text}
        if thread_ts:
            frame["thread_ts"] = thread_ts
        self.send(frame)
        return frame_id

    def ping(self) -> int:
        frame_id = self.next_id()
        self.send({"id": frame_id, "type": "ping"})
        return frame_id


async def open_rtm(web: SlackWeb, post: Callable[[Any], None]) -> RtmLink:
    """Ask Slack for a websocket URL (never rtm.start) and connect to it."""
    info = await web.call("rtm.connect")
    ws = await open_websocket(info["url"])
    return RtmLink(ws, post, info).start()
