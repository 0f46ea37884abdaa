"""The controls and read-backs a fake Slack offers, shared by the in-process `FakeSlack`
and `FakeSlackClient` (the same calls over HTTP to a fake in another process).

Subclasses provide `_act(name, **kwargs)` (run a control) and `_read(name, **query)`.
"""
from __future__ import annotations

from typing import Any


class FakeSlackControls:
    def _act(self, control: str, /, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _read(self, name: str, /, **query: Any) -> Any:
        raise NotImplementedError

    # -- controls ---------------------------------------------------------------------------------------

    def push_event(self, event: dict) -> float:
        """Deliver `event` to every RTM client and, enveloped, to one Socket Mode client.

        Fills `ts`/`event_ts` if absent; returns `time.monotonic()` once written.
        """
        return self._act("push_event", event=event)

    def message(self, text: str, *, channel: str = "D1ALICE", user: str = "U1ALICE",
                **extra: Any) -> float:
        """Push a user's `message` event; returns `time.monotonic()` once written."""
        return self._act("message", text=text, channel=channel, user=user, **extra)

    def push_raw(self, data: str | bytes, *, mode: str = "all") -> int:
        """Send `data` as-is (bytes as a binary frame) to every client of `mode`; how many got it."""
        return self._act("push_raw", data=data, mode=mode)

    def push_slash_command(self, command: str, text: str, *, user: str = "U1ALICE",
                           channel: str = "C1GENERAL") -> float:
        return self._act("push_slash_command", command=command, text=text, user=user,
                         channel=channel)

    def push_interactive(self, payload: dict) -> float:
        return self._act("push_interactive", payload=payload)

    def drop_connections(self, mode: str = "all") -> int:
        """Abort websocket TCP connections without a close frame; how many."""
        return self._act("drop_connections", mode=mode)

    def close_connections(self, code: int = 1000, mode: str = "all") -> int:
        """Close websockets cleanly with `code`; how many."""
        return self._act("close_connections", code=code, mode=mode)

    def send_goodbye(self) -> int:
        """RTM `goodbye`; the fake closes those sockets after `goodbye_grace` seconds."""
        return self._act("send_goodbye")

    def send_disconnect(self, reason: str = "refresh_requested") -> int:
        """Socket Mode `disconnect` (`warning`, `refresh_requested`, `link_disabled`), then close."""
        return self._act("send_disconnect", reason=reason)

    def fail_next(self, method: str, *, count: int = 1, status: int = 429,
                  retry_after: int | None = 1, error: str = "ratelimited") -> None:
        """Answer the next `count` calls of `method` with HTTP `status` and `error`."""
        self._act("fail_next", method=method, count=count, status=status,
                  retry_after=retry_after, error=error)

    def refuse_connections(self, n: int) -> None:
        """Refuse the next `n` websocket connects with HTTP 503."""
        self._act("refuse_connections", n=n)

    def set_web_api_down(self, down: bool) -> None:
        """While down, every Web API call answers HTTP 503."""
        self._act("set_web_api_down", down=down)

    def enforce_rate_limit(self, per_second: float | None = 1.0, burst: int = 5) -> None:
        """Per-channel token bucket on the bot's messages; `per_second=None` turns it off."""
        self._act("enforce_rate_limit", per_second=per_second, burst=burst)

    def add_user(self, id: str, name: str) -> float:
        """Add a user and emit `team_join`."""
        return self._act("add_user", id=id, name=name)

    def add_channel(self, id: str, name: str, is_private: bool = False) -> float:
        """Add a channel and emit `channel_created`."""
        return self._act("add_channel", id=id, name=name, is_private=is_private)

    def rename_channel(self, id: str, new: str) -> float:
        """Rename a channel and emit `channel_rename`."""
        return self._act("rename_channel", id=id, new=new)

    # -- reading back ---------------------------------------------------------------------------------

    def sent_messages(self, channel: str | None = None) -> list[dict]:
        """Messages the bot sent and the fake accepted, in arrival order."""
        return self._read("sent_messages", channel=channel)

    def rejected_messages(self) -> list[dict]:
        """Messages refused as too long or over the rate limit (with a `reason`)."""
        return self._read("rejected_messages")

    def edits(self) -> list[dict]:
        """chat.update / chat.delete calls, as `{"action", "channel", "ts", "text", "blocks"}`."""
        return self._read("edits")

    def web_calls(self, method: str | None = None) -> list[dict]:
        """Every Web API call as `{"method", "params", "token_kind"}`."""
        return self._read("web_calls", method=method)

    def acks(self) -> list[dict]:
        """Socket Mode acks as `{"envelope_id", "type", "latency_s", "payload"}`."""
        return self._read("acks")

    def unacked(self) -> list[dict]:
        """Envelopes sent and not acked (`timed_out` once their ack_timeout passed)."""
        return self._read("unacked")

    def redeliveries(self) -> list[dict]:
        """Envelopes redelivered after an ack timeout."""
        return self._read("redeliveries")

    def rate_limit_violations(self) -> int:
        return self._read("rate_limit_violations")

    def rtm_frames_received(self) -> list[str | bytes]:
        """Every frame the bot sent over RTM, raw."""
        return self._read("rtm_frames_received")
