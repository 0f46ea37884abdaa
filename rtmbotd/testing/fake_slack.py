"""A fake Slack on loopback: Web API, RTM and Socket Mode websockets, and controls for tests.

`FakeSlack` runs an aiohttp server on its own thread and event loop, so synchronous tests,
pytest fixtures, benchmarks and `python -m rtmbotd.testing` can all drive it. Controls block
until the action happened on the fake's loop; read-back methods never touch the loop.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import threading
from typing import Any, Callable, TypeVar

from aiohttp import web

from rtmbotd.testing.fake_slack_control import ControlApi, FakeSlackClient
from rtmbotd.testing.fake_slack_hub import Hub
from rtmbotd.testing.fake_slack_journal import Journal
from rtmbotd.testing.fake_slack_webapi import WebApi
from rtmbotd.testing.fake_slack_workspace import Workspace

__all__ = ["FakeSlack", "FakeSlackClient"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CONTROL_TIMEOUT = 30.0
SETTINGS = ("echo_own_messages", "ack_timeout", "goodbye_grace")


class FakeSlack:
    """Slack's Web API, RTM and Socket Mode on 127.0.0.1, with a small workspace and controls.

    Use as a context manager or call `start()` / `stop()`.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, bot_token: str | None = None,
                 app_token: str | None = None) -> None:
        self.host = host
        self._requested_port = port
        self.workspace = Workspace()
        self.journal = Journal()
        self.hub = Hub(self.workspace, self.journal)
        self.web_api = WebApi(self.hub, bot_token=bot_token, app_token=app_token)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._startup_error: BaseException | None = None
        hub, web_api = self.hub, self.web_api
        # Loop-side implementations of every control; shared by the methods below and /_control.
        self._controls: dict[str, Callable[..., Any]] = {
            "push_event": hub.push_event,
            "message": hub.message,
            "push_raw": hub.push_raw,
            "push_slash_command": hub.push_slash_command,
            "push_interactive": hub.push_interactive,
            "drop_connections": hub.drop_connections,
            "close_connections": hub.close_connections,
            "send_goodbye": hub.send_goodbye,
            "send_disconnect": hub.send_disconnect,
            "fail_next": web_api.fail_next,
            "refuse_connections": hub.refuse_connections,
            "set_web_api_down": web_api.set_down,
            "enforce_rate_limit": hub.enforce_rate_limit,
            "clear": self.journal.clear,
            "add_user": hub.add_user,
            "add_channel": hub.add_channel,
            "rename_channel": hub.rename_channel,
            "configure": self._configure,
        }

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        """Bind, start the server thread and return once it is listening."""
        if self._thread is not None:
            raise RuntimeError("FakeSlack already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._port = sock.getsockname()[1]
        self.hub.http_base = f"http://{self.host}:{self._port}"
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._loop = loop
        self._thread = threading.Thread(target=self._serve, args=(loop, sock, ready),
                                        name=f"fake-slack:{self._port}", daemon=True)
        self._thread.start()
        ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = self._loop = None
            raise RuntimeError("fake Slack failed to start") from self._startup_error
        log.debug("fake Slack listening on %s", self.url)
        return self

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self.web_api.handle)
        app.router.add_get("/rtm", self.hub.handle_rtm)
        app.router.add_get("/link/", self.hub.handle_socket_mode)
        app.router.add_get("/link", self.hub.handle_socket_mode)
        app.router.add_post("/_response_url/{token}", self.web_api.handle_response_url)
        app.add_routes(ControlApi(self).routes())
        return app

    def _serve(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
               ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=1.0)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
        except BaseException as exc:  # handed to start() in the caller's thread
            self._startup_error = exc
            sock.close()
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.hub.shutdown())
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def stop(self) -> None:
        """Close every socket, stop the loop and join its thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if threading.current_thread() is thread:
            raise RuntimeError("FakeSlack.stop() called from the fake's own loop")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = self._loop = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeSlack not started")
        return self._port

    @property
    def url(self) -> str:
        """The Web API base URL for slack_sdk's `base_url`, ending in a slash."""
        return f"http://{self.host}:{self.port}/api/"

    # -- settings (plain attributes the loop reads) -------------------------------------------------

    @property
    def echo_own_messages(self) -> bool:
        return self.hub.echo_own_messages

    @echo_own_messages.setter
    def echo_own_messages(self, value: bool) -> None:
        self.hub.echo_own_messages = bool(value)

    @property
    def ack_timeout(self) -> float:
        return self.hub.ack_timeout

    @ack_timeout.setter
    def ack_timeout(self, value: float) -> None:
        self.hub.ack_timeout = float(value)

    @property
    def goodbye_grace(self) -> float:
        return self.hub.goodbye_grace

    @goodbye_grace.setter
    def goodbye_grace(self, value: float) -> None:
        self.hub.goodbye_grace = float(value)

    def _configure(self, **settings: Any) -> None:
        unknown = set(settings) - set(SETTINGS)
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        for name, value in settings.items():
            setattr(self, name, value)

    # -- running controls on the loop ---------------------------------------------------------------

    async def invoke(self, name: str, kwargs: dict) -> Any:
        """Run control `name` on the fake's loop (the /_control routes call this directly)."""
        result = self._controls[name](**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _call(self, control: str, /, **kwargs: Any) -> Any:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            raise RuntimeError("FakeSlack not started")
        if threading.current_thread() is thread:
            raise RuntimeError(f"FakeSlack.{control}() blocks; call it from another thread")
        return asyncio.run_coroutine_threadsafe(self.invoke(control, kwargs), loop).result(
            CONTROL_TIMEOUT)

    # -- controls ---------------------------------------------------------------------------------------

    def push_event(self, event: dict) -> float:
        """Deliver `event` to every RTM client and, enveloped, to one Socket Mode client.

        Fills `ts`/`event_ts` if absent; returns `time.monotonic()` once written.
        """
        return self._call("push_event", event=event)

    def message(self, text: str, *, channel: str = "D1ALICE", user: str = "U1ALICE",
                **extra: Any) -> float:
        """Push a user's `message` event; returns `time.monotonic()` once written."""
        return self._call("message", text=text, channel=channel, user=user, **extra)

    def push_raw(self, data: str | bytes, *, mode: str = "all") -> int:
        """Send `data` as-is (bytes as a binary frame) to every client of `mode`; how many got it."""
        return self._call("push_raw", data=data, mode=mode)

    def push_slash_command(self, command: str, text: str, *, user: str = "U1ALICE",
                           channel: str = "C1GENERAL") -> float:
        return self._call("push_slash_command", command=command, text=text, user=user,
                          channel=channel)

    def push_interactive(self, payload: dict) -> float:
        return self._call("push_interactive", payload=payload)

    def drop_connections(self, mode: str = "all") -> int:
        """Abort websocket TCP connections without a close frame; how many."""
        return self._call("drop_connections", mode=mode)

    def close_connections(self, code: int = 1000, mode: str = "all") -> int:
        """Close websockets cleanly with `code`; how many."""
        return self._call("close_connections", code=code, mode=mode)

    def send_goodbye(self) -> int:
        """RTM `goodbye`; the fake closes those sockets after `goodbye_grace` seconds."""
        return self._call("send_goodbye")

    def send_disconnect(self, reason: str = "refresh_requested") -> int:
        """Socket Mode `disconnect` (`warning`, `refresh_requested`, `link_disabled`), then close."""
        return self._call("send_disconnect", reason=reason)

    def fail_next(self, method: str, *, count: int = 1, status: int = 429,
                  retry_after: int | None = 1, error: str = "ratelimited") -> None:
        """Answer the next `count` calls of `method` with HTTP `status` and `error`."""
        self._call("fail_next", method=method, count=count, status=status,
                   retry_after=retry_after, error=error)

    def refuse_connections(self, n: int) -> None:
        """Refuse the next `n` websocket connects with HTTP 503."""
        self._call("refuse_connections", n=n)

    def set_web_api_down(self, down: bool) -> None:
        """While down, every Web API call answers HTTP 503."""
        self._call("set_web_api_down", down=down)

    def enforce_rate_limit(self, per_second: float | None = 1.0, burst: int = 5) -> None:
        """Per-channel token bucket on the bot's messages; `per_second=None` turns it off."""
        self._call("enforce_rate_limit", per_second=per_second, burst=burst)

    def add_user(self, id: str, name: str) -> float:
        """Add a user and emit `team_join`."""
        return self._call("add_user", id=id, name=name)

    def add_channel(self, id: str, name: str, is_private: bool = False) -> float:
        """Add a channel and emit `channel_created`."""
        return self._call("add_channel", id=id, name=name, is_private=is_private)

    def rename_channel(self, id: str, new: str) -> float:
        """Rename a channel and emit `channel_rename`."""
        return self._call("rename_channel", id=id, new=new)

    def clear(self) -> None:
        """Forget recorded messages, calls, frames, acks and violations."""
        self.journal.clear()

    # -- reading back (any thread, never blocks on the loop) ----------------------------------------

    def sent_messages(self, channel: str | None = None) -> list[dict]:
        """Messages the bot sent and the fake accepted, in arrival order."""
        return self.journal.messages(channel)

    def rejected_messages(self) -> list[dict]:
        """Messages refused as too long or over the rate limit (with a `reason`)."""
        return self.journal.rejected_messages()

    def edits(self) -> list[dict]:
        """chat.update / chat.delete calls, as `{"action", "channel", "ts", "text", "blocks"}`."""
        return self.journal.edits()

    def web_calls(self, method: str | None = None) -> list[dict]:
        """Every Web API call as `{"method", "params", "token_kind"}`."""
        return self.journal.web_calls(method)

    def acks(self) -> list[dict]:
        """Socket Mode acks as `{"envelope_id", "type", "latency_s", "payload"}`."""
        return self.journal.acks()

    def unacked(self) -> list[dict]:
        """Envelopes sent and not acked (`timed_out` once their ack_timeout passed)."""
        return self.journal.unacked()

    def redeliveries(self) -> list[dict]:
        """Envelopes redelivered after an ack timeout."""
        return self.journal.redeliveries()

    def rate_limit_violations(self) -> int:
        return self.journal.violations()

    def rtm_frames_received(self) -> list[str | bytes]:
        """Every frame the bot sent over RTM, raw."""
        return self.journal.frames("rtm")

    def socket_mode_frames_received(self) -> list[str | bytes]:
        return self.journal.frames("socket_mode")

    @property
    def connections_opened(self) -> int:
        """Websocket connects accepted so far, all modes."""
        return sum(self.journal.opened_by_mode().values())

    @property
    def connections_opened_by_mode(self) -> dict[str, int]:
        return self.journal.opened_by_mode()

    def open_connections(self, mode: str | None = None) -> int:
        return self.journal.open_count(mode)

    def state(self) -> dict:
        """A JSON-able summary for the control API."""
        return {
            "connections_opened": self.connections_opened,
            "connections_opened_by_mode": self.connections_opened_by_mode,
            "open_connections": {m: self.open_connections(m) for m in ("rtm", "socket_mode")},
            "acks": self.acks(),
            "unacked": [{k: v for k, v in u.items() if k != "envelope"} for u in self.unacked()],
            "redeliveries": self.redeliveries(),
            "web_call_counts": self.journal.web_call_counts(),
            "sent_message_count": len(self.sent_messages()),
            "rate_limit_violations": self.rate_limit_violations(),
        }

    # -- waiting --------------------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """The first truthy `predicate()`, re-checked whenever the fake records something.

        Predicates should only read (sent_messages, acks, open_connections …), not call controls.
        """
        return self.journal.wait_until(predicate, timeout)

    def wait_for_messages(self, n: int, *, channel: str | None = None,
                          timeout: float = 5.0) -> list[dict]:
        """The sent messages once there are at least `n`; TimeoutError listing what was seen."""
        def enough() -> tuple[list[dict]] | None:
            msgs = self.sent_messages(channel)
            return (msgs,) if len(msgs) >= n else None

        try:
            return self.journal.wait_until(enough, timeout)[0]
        except TimeoutError:
            seen = [(m["channel"], m["text"]) for m in self.sent_messages(channel)]
            raise TimeoutError(f"wanted {n} messages{' in ' + channel if channel else ''} "
                               f"within {timeout}s, saw {len(seen)}: {seen!r}") from None

    def wait_for_connections(self, n: int, mode: str | None = None, timeout: float = 5.0) -> int:
        """The open connection count once at least `n` are open (of `mode`, or in all)."""
        def enough() -> tuple[int] | None:
            count = self.open_connections(mode)
            return (count,) if count >= n else None

        try:
            return self.journal.wait_until(enough, timeout)[0]
        except TimeoutError:
            raise TimeoutError(f"wanted {n} open {mode or 'websocket'} connections within "
                               f"{timeout}s, have {self.open_connections(mode)}") from None
