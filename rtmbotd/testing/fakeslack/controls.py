"""The one registry of a fake Slack's controls and read-backs.

Each is defined once below, as a method of `FakeSlackControls` with its signature and
docstring, decorated with where it runs and what implements it. Everything else is
derived from `CONTROLS`: the in-process `FakeSlack` calls the implementation, the
`FakeSlackClient` sends the same call over HTTP, and /_control/<name> serves it.
A new control is one decorated method here (and its implementation).

- `action(target)`: changes the fake; runs on its loop (POST /_control/<name>)
- `reading(target)`: reads what was recorded; any thread, never the loop (GET)
- `waiting(target)`: a read that blocks until enough happened (GET, a long poll)

`target` is the implementation's attribute path on `FakeSlack` ("hub.push_event");
`fixed` are keyword arguments always passed to it.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

ACTION, READING, WAITING = "action", "reading", "waiting"


@dataclass(frozen=True)
class Control:
    name: str
    kind: str
    target: str
    fixed: dict = field(default_factory=dict)

    def implementation(self, fake: Any) -> Callable[..., Any]:
        """The callable on `fake` (a FakeSlack) that does it."""
        impl = functools.reduce(getattr, self.target.split("."), fake)
        return functools.partial(impl, **self.fixed) if self.fixed else impl


CONTROLS: dict[str, Control] = {}


def _register(kind: str, target: str, **fixed: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        control = CONTROLS[method.__name__] = Control(method.__name__, kind, target, fixed)
        signature = inspect.signature(method)
        var_keyword = next((p.name for p in signature.parameters.values()
                            if p.kind is inspect.Parameter.VAR_KEYWORD), None)

        @functools.wraps(method)
        def call(self: FakeSlackControls, *args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            del arguments["self"]
            if var_keyword is not None:
                arguments.update(arguments.pop(var_keyword))
            return self._call(control, arguments)

        return call
    return decorate


def action(target: str, **fixed: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return _register(ACTION, target, **fixed)


def reading(target: str, **fixed: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return _register(READING, target, **fixed)


def waiting(target: str, **fixed: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return _register(WAITING, target, **fixed)


class FakeSlackControls:
    """What every fake Slack offers; subclasses provide `_call(control, kwargs)`.
    The bodies below are never run: the decorators route each call to `_call`."""

    def _call(self, control: Control, kwargs: dict) -> Any:
        raise NotImplementedError

    # -- controls ---------------------------------------------------------------------------------------

    @action("hub.push_event")
    def push_event(self, event: dict) -> float:
        """Deliver `event` to every RTM client and, enveloped, to one Socket Mode client.

        Fills `ts`/`event_ts` if absent; returns `time.monotonic()` once written.
        """

    @action("hub.message")
    def message(self, text: str, *, channel: str = "D1ALICE", user: str = "U1ALICE",
                **extra: Any) -> float:
        """Push a user's `message` event; returns `time.monotonic()` once written."""

    @action("hub.push_raw")
    def push_raw(self, data: str | bytes, *, mode: str = "all") -> int:
        """Send `data` as-is (bytes as a binary frame) to every client of `mode`; how many got it."""

    @action("hub.push_slash_command")
    def push_slash_command(self, command: str, text: str, *, user: str = "U1ALICE",
                           channel: str = "C1GENERAL") -> float:
        """A Socket Mode `slash_commands` envelope; returns `time.monotonic()` once written."""

    @action("hub.push_interactive")
    def push_interactive(self, payload: dict) -> float:
        """A Socket Mode `interactive` envelope; returns `time.monotonic()` once written."""

    @action("hub.redeliver")
    def redeliver(self, event_id: str | None = None, *, reason: str = "timeout") -> str | None:
        """Retry an Events API event as Slack does (new envelope_id, same event_id,
        `retry_attempt` + 1, `retry_reason`) to the next Socket Mode client; the new envelope_id.

        `event_id=None`: the latest event. Acked or not: a test chooses what Slack retries.
        """

    @action("hub.hold_ack_timeout")
    def hold_ack_timeout(self, event_id: str | None = None, *, hold: bool = True) -> str:
        """Hold (`hold=False`: restart) the ack timeout of the latest envelope of `event_id`
        (None: the latest event): held, only `redeliver` retries it. Its envelope_id."""

    @action("hub.distribute")
    def distribute(self, mode: str = "round_robin", seed: int | None = None) -> None:
        """How envelopes spread over Socket Mode connections: `round_robin` or `random`
        (seeded by `seed`). A retry goes to another connection than its last try either way."""

    @action("hub.drop_connections")
    def drop_connections(self, mode: str = "all") -> int:
        """Abort websocket TCP connections without a close frame; how many."""

    @action("hub.close_connections")
    def close_connections(self, code: int = 1000, mode: str = "all") -> int:
        """Close websockets cleanly with `code`; how many."""

    @action("hub.send_goodbye")
    def send_goodbye(self) -> int:
        """RTM `goodbye`; the fake closes those sockets after `goodbye_grace` seconds."""

    @action("hub.send_disconnect")
    def send_disconnect(self, reason: str = "refresh_requested") -> int:
        """Socket Mode `disconnect` (`warning`, `refresh_requested`, `link_disabled`), then close."""

    @action("web_api.fail_next")
    def fail_next(self, method: str, *, count: int = 1, status: int = 429,
                  retry_after: int | None = 1, error: str = "ratelimited") -> None:
        """Answer the next `count` calls of `method` with HTTP `status` and `error`."""

    @action("hub.refuse_connections")
    def refuse_connections(self, n: int) -> None:
        """Refuse the next `n` websocket connects with HTTP 503."""

    @action("web_api.set_down")
    def set_web_api_down(self, down: bool) -> None:
        """While down, every Web API call answers HTTP 503."""

    @action("hub.enforce_rate_limit")
    def enforce_rate_limit(self, per_second: float | None = 1.0, burst: int = 5) -> None:
        """Per-channel token bucket on the bot's messages; `per_second=None` turns it off."""

    @action("hub.add_user")
    def add_user(self, id: str, name: str) -> float:
        """Add a user and emit `team_join`."""

    @action("hub.add_channel")
    def add_channel(self, id: str, name: str, is_private: bool = False) -> float:
        """Add a channel and emit `channel_created`."""

    @action("hub.rename_channel")
    def rename_channel(self, id: str, new: str) -> float:
        """Rename a channel and emit `channel_rename`."""

    @action("journal.clear")
    def clear(self) -> None:
        """Forget recorded messages, calls, frames, acks and violations."""

    @action("_configure")
    def configure(self, **settings: Any) -> None:
        """Set `echo_own_messages`, `ack_timeout` and/or `goodbye_grace`."""

    # -- reading back ---------------------------------------------------------------------------------

    @reading("_summary")
    def state(self) -> dict:
        """A JSON-able summary: connections, acks, Web API call counts, messages, violations."""

    @reading("journal.messages")
    def sent_messages(self, channel: str | None = None) -> list[dict]:
        """Messages the bot sent and the fake accepted, in arrival order."""

    @reading("journal.rejected_messages")
    def rejected_messages(self) -> list[dict]:
        """Messages refused as too long or over the rate limit (with a `reason`)."""

    @reading("journal.edits")
    def edits(self) -> list[dict]:
        """chat.update / chat.delete calls, as `{"action", "channel", "ts", "text", "blocks"}`."""

    @reading("journal.web_calls")
    def web_calls(self, method: str | None = None) -> list[dict]:
        """Every Web API call as `{"method", "params", "token_kind", "received_at"}` (the fake's
        `time.monotonic()` at its arrival, comparable with sent messages' `received_at`)."""

    @reading("journal.api_calls")
    def api_calls(self, method: str | None = None) -> list[dict]:
        """Web API calls the fake accepted (answered `ok: true`), in arrival order, each
        its arguments plus `"method"`: `api_calls("reactions.add")[0]["name"]`."""

    @reading("journal.files")
    def uploaded_files(self) -> list[dict]:
        """Files completed with files.completeUploadExternal: `id`, `filename`, `title`,
        `channel`, `thread_ts`, `initial_comment`, `size` and the bytes as `content_base64`."""

    @reading("journal.acks")
    def acks(self) -> list[dict]:
        """Socket Mode acks as `{"envelope_id", "type", "latency_s", "payload"}`."""

    @reading("journal.unacked")
    def unacked(self) -> list[dict]:
        """Envelopes sent and not acked (`timed_out` once their ack_timeout passed)."""

    @reading("journal.redeliveries")
    def redeliveries(self) -> list[dict]:
        """Envelopes redelivered (after an ack timeout or by `redeliver`), with a `reason`."""

    @reading("journal.envelopes")
    def envelopes_sent(self) -> list[dict]:
        """Every Socket Mode envelope sent, retries included, in order."""

    @reading("journal.deliveries")
    def deliveries(self, event_id: str | None = None) -> list[dict]:
        """Which connection got which envelope: `{"envelope_id", "type", "event_id",
        "retry_attempt", "connection"}`, in order (acks name their `connection` too)."""

    @reading("journal.connection_ids")
    def connection_ids(self, mode: str = "socket_mode") -> list[int]:
        """Ids of the open connections of `mode` (1, 2, ... in the order accepted), oldest first."""

    @reading("journal.violations")
    def rate_limit_violations(self) -> int:
        """How many of the bot's messages broke the enforced rate limit."""

    @reading("journal.frames", mode="rtm")
    def rtm_frames_received(self) -> list[str | bytes]:
        """Every frame the bot sent over RTM, raw."""

    @reading("journal.frames", mode="socket_mode")
    def socket_mode_frames_received(self) -> list[str | bytes]:
        """Every frame the bot sent over Socket Mode, raw."""

    # -- waiting ----------------------------------------------------------------------------------------

    @waiting("_wait_for_messages")
    def wait_for_messages(self, n: int, *, channel: str | None = None,
                          timeout: float = 5.0) -> list[dict]:
        """The sent messages once there are at least `n`; TimeoutError listing what was seen."""

    @waiting("_wait_for_connections")
    def wait_for_connections(self, n: int, mode: str | None = None, timeout: float = 5.0) -> int:
        """The open connection count once at least `n` are open (of `mode`, or in all)."""

    @reading("journal.open_count")
    def open_connections(self, mode: str | None = None) -> int:
        """Websockets open now, of `mode` or in all."""

    @property
    @reading("journal.opened_by_mode")
    def connections_opened_by_mode(self) -> dict[str, int]:
        """Websocket connects accepted so far, per mode."""

    @property
    def connections_opened(self) -> int:
        """Websocket connects accepted so far, all modes."""
        return sum(self.connections_opened_by_mode.values())
