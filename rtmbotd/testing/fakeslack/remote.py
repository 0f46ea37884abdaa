"""Drive a fake Slack from another process: the /_control HTTP routes and `FakeSlackClient`."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web

from rtmbotd.testing.fakeslack.controls import FakeSlackControls

if TYPE_CHECKING:
    from rtmbotd.testing.fakeslack.server import FakeSlack

log = logging.getLogger(__name__)

# Controls that change the fake; POST /_control/<name> with a JSON object of keyword arguments.
ACTIONS = frozenset({
    "push_event", "message", "push_raw", "push_slash_command", "push_interactive",
    "drop_connections", "close_connections", "send_goodbye", "send_disconnect",
    "fail_next", "refuse_connections", "set_web_api_down", "enforce_rate_limit", "clear",
    "add_user", "add_channel", "rename_channel", "configure",
})


def _jsonable_frame(frame: str | bytes) -> str:
    return frame if isinstance(frame, str) else frame.decode("utf-8", "replace")


def _json(body: dict, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


class ControlApi:
    """The /_control routes of a running `FakeSlack` (served on its loop)."""

    def __init__(self, fake: FakeSlack) -> None:
        self.fake = fake

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/_control/{name}", self.post), web.get("/_control/{name}", self.get)]

    async def post(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ACTIONS:
            return _json({"ok": False, "error": f"unknown control {name!r}"}, 404)
        try:
            kwargs = await request.json() if request.can_read_body else {}
        except ValueError:
            return _json({"ok": False, "error": "body is not JSON"}, 400)
        if not isinstance(kwargs, dict):
            return _json({"ok": False, "error": "body must be a JSON object"}, 400)
        if name == "push_raw" and "data_b64" in kwargs:
            kwargs["data"] = base64.b64decode(kwargs.pop("data_b64"))
        try:
            result = await self.fake.invoke(name, kwargs)
        except (TypeError, ValueError, KeyError) as exc:
            return _json({"ok": False, "error": repr(exc)}, 400)
        return _json({"ok": True, "result": result})

    async def get(self, request: web.Request) -> web.Response:
        name, query = request.match_info["name"], request.query
        readers = self._readers(query)
        try:
            if name in ("wait_for_messages", "wait_for_connections"):
                result = await self._wait(name, query)
            elif name in readers:
                result = readers[name]()
            else:
                return _json({"ok": False, "error": f"unknown control {name!r}"}, 404)
        except TimeoutError as exc:
            return _json({"ok": False, "error": "timeout", "detail": str(exc)}, 408)
        except (TypeError, ValueError) as exc:
            return _json({"ok": False, "error": repr(exc)}, 400)
        return _json({"ok": True, "result": result})

    def _readers(self, query: Any) -> dict[str, Callable[[], Any]]:
        fake = self.fake
        return {
            "state": fake.state,
            "sent_messages": lambda: fake.sent_messages(query.get("channel")),
            "rejected_messages": fake.rejected_messages,
            "edits": fake.edits,
            "web_calls": lambda: fake.web_calls(query.get("method")),
            "acks": fake.acks,
            "unacked": fake.unacked,
            "redeliveries": fake.redeliveries,
            "rate_limit_violations": fake.rate_limit_violations,
            "rtm_frames_received": lambda: [_jsonable_frame(f) for f in fake.rtm_frames_received()],
        }

    async def _wait(self, name: str, query: Any) -> Any:
        """Long poll: the blocking wait runs in a worker thread so the loop keeps serving."""
        n = int(query.get("n", "1"))
        timeout = float(query.get("timeout", "5"))
        if name == "wait_for_messages":
            call = lambda: self.fake.wait_for_messages(n, channel=query.get("channel"),  # noqa: E731
                                                       timeout=timeout)
        else:
            call = lambda: self.fake.wait_for_connections(n, mode=query.get("mode"),  # noqa: E731
                                                          timeout=timeout)
        return await asyncio.get_running_loop().run_in_executor(None, call)


class ControlError(RuntimeError):
    """The fake refused a control request."""


class FakeSlackClient(FakeSlackControls):
    """The controls of a `FakeSlack` running in another process, over its /_control HTTP API."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        self.root = f"{parts.scheme}://{parts.netloc}"
        self.url = self.root + "/api/"
        self.timeout = timeout
        # A fake on loopback must never be reached through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _request(self, method: str, name: str, body: dict | None = None,
                 query: dict | None = None, timeout: float | None = None) -> Any:
        url = f"{self.root}/_control/{name}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body or {}).encode() if method == "POST" else None
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(request, timeout=timeout or self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read() or b"{}")
            if exc.code == 408:
                raise TimeoutError(answer.get("detail", "timeout")) from None
            raise ControlError(answer.get("error", f"HTTP {exc.code}")) from None
        return answer["result"]

    def _post(self, name: str, **kwargs: Any) -> Any:
        return self._request("POST", name, kwargs)

    def _act(self, control: str, /, **kwargs: Any) -> Any:
        if isinstance(kwargs.get("data"), bytes):       # push_raw of a binary frame
            kwargs["data_b64"] = base64.b64encode(kwargs.pop("data")).decode()
        return self._post(control, **kwargs)

    def _read(self, name: str, /, **query: Any) -> Any:
        return self._request("GET", name, query=query)

    def clear(self) -> None:
        self._post("clear")

    def configure(self, **settings: Any) -> None:
        """Set `echo_own_messages`, `ack_timeout` and/or `goodbye_grace`."""
        self._post("configure", **settings)

    # -- reading back ------------------------------------------------------------------------------

    def state(self) -> dict:
        return self._request("GET", "state")

    @property
    def connections_opened(self) -> int:
        return self.state()["connections_opened"]

    def open_connections(self, mode: str | None = None) -> int:
        counts = self.state()["open_connections"]
        return sum(counts.values()) if mode is None else counts[mode]

    def wait_for_messages(self, n: int, *, channel: str | None = None,
                          timeout: float = 5.0) -> list[dict]:
        return self._request("GET", "wait_for_messages", timeout=timeout + 5.0,
                             query={"n": n, "channel": channel, "timeout": timeout})

    def wait_for_connections(self, n: int, mode: str | None = None, timeout: float = 5.0) -> int:
        return self._request("GET", "wait_for_connections", timeout=timeout + 5.0,
                             query={"n": n, "mode": mode, "timeout": timeout})
