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

from rtmbotd.testing.fakeslack.remote import ControlApi, FakeSlackClient
from rtmbotd.testing.fakeslack.controls import ACTION, CONTROLS, Control, FakeSlackControls
from rtmbotd.testing.fakeslack.hub import Hub
from rtmbotd.testing.fakeslack.journal import Journal
from rtmbotd.testing.fakeslack.webapi import WebApi
from rtmbotd.testing.fakeslack.writes import UPLOAD_PATH
from rtmbotd.testing.fakeslack.workspace import Workspace

__all__ = ["FakeSlack", "FakeSlackClient"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CONTROL_TIMEOUT = 30.0
SETTINGS = ("echo_own_messages", "ack_timeout", "goodbye_grace")


class _HubSetting:
    """A FakeSlack attribute stored on its hub, where the loop reads it."""

    def __init__(self, kind: type, doc: str) -> None:
        self.kind, self.__doc__ = kind, doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj.hub, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj.hub, self.name, self.kind(value))


class FakeSlack(FakeSlackControls):
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
        app.router.add_post(UPLOAD_PATH, self.web_api.writes.handle_upload)
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

    echo_own_messages = _HubSetting(bool, "deliver the bot's own messages back to it, as Slack does")
    ack_timeout = _HubSetting(float, "seconds before an unacked Socket Mode envelope is redelivered")
    goodbye_grace = _HubSetting(float, "seconds between goodbye/disconnect and closing the socket")

    def _configure(self, **settings: Any) -> None:
        unknown = set(settings) - set(SETTINGS)
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        for name, value in settings.items():
            setattr(self, name, value)

    # -- running controls (see controls.py for the registry) -----------------------------------------

    async def invoke(self, name: str, kwargs: dict) -> Any:
        """Run action `name` on the fake's loop (the /_control routes call this directly)."""
        control = CONTROLS.get(name)
        if control is None or control.kind != ACTION:
            raise KeyError(f"unknown control {name!r}")
        result = control.implementation(self)(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _call(self, control: Control, kwargs: dict) -> Any:
        if control.kind != ACTION:            # read-backs never touch the loop
            return control.implementation(self)(**kwargs)
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            raise RuntimeError("FakeSlack not started")
        if threading.current_thread() is thread:
            raise RuntimeError(f"FakeSlack.{control.name}() blocks; call it from another thread")
        return asyncio.run_coroutine_threadsafe(self.invoke(control.name, kwargs), loop).result(
            CONTROL_TIMEOUT)

    # -- reading back (any thread, never blocks on the loop) ----------------------------------------

    def _summary(self) -> dict:
        """`state()`: a JSON-able summary for the control API."""
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

    def _wait_for_messages(self, n: int, *, channel: str | None = None,
                                     timeout: float = 5.0) -> list[dict]:
        def enough() -> tuple[list[dict]] | None:
            msgs = self.sent_messages(channel)
            return (msgs,) if len(msgs) >= n else None

        try:
            return self.journal.wait_until(enough, timeout)[0]
        except TimeoutError:
            seen = [(m["channel"], m["text"]) for m in self.sent_messages(channel)]
            raise TimeoutError(f"wanted {n} messages{' in ' + channel if channel else ''} "
                               f"within {timeout}s, saw {len(seen)}: {seen!r}") from None

    def _wait_for_connections(self, n: int, mode: str | None = None,
                                        timeout: float = 5.0) -> int:
        def enough() -> tuple[int] | None:
            count = self.open_connections(mode)
            return (count,) if count >= n else None

        try:
            return self.journal.wait_until(enough, timeout)[0]
        except TimeoutError:
            raise TimeoutError(f"wanted {n} open {mode or 'websocket'} connections within "
                               f"{timeout}s, have {self.open_connections(mode)}") from None
