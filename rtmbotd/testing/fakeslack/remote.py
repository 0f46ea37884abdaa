"""Drive a fake Slack from another process: the /_control HTTP routes and `FakeSlackClient`.

Both are derived from the registry in controls.py: an action is POST /_control/<name>
with a JSON object of keyword arguments, a read-back GET /_control/<name>?arg=value
(each value JSON, or a plain string). Bytes travel base64-encoded as `<arg>_b64`.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

from aiohttp import web

from rtmbotd.testing.fakeslack.controls import ACTION, CONTROLS, WAITING, Control, FakeSlackControls

if TYPE_CHECKING:
    from rtmbotd.testing.fakeslack.server import FakeSlack

log = logging.getLogger(__name__)

B64 = "_b64"
WAIT_MARGIN = 5.0       # a long poll's HTTP timeout beyond the wait's own


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):          # raw frames the bot sent
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json(body: dict, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body, default=_jsonable), status=status,
                        content_type="application/json")


def _query_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text                       # ?channel=C1GENERAL typed by hand


def _unknown(name: str) -> web.Response:
    return _json({"ok": False, "error": f"unknown control {name!r}"}, 404)


class ControlApi:
    """The /_control routes of a running `FakeSlack` (served on its loop)."""

    def __init__(self, fake: FakeSlack) -> None:
        self.fake = fake

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/_control/{name}", self.post), web.get("/_control/{name}", self.get)]

    async def post(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        control = CONTROLS.get(name)
        if control is None or control.kind != ACTION:
            return _unknown(name)
        try:
            kwargs = await request.json() if request.can_read_body else {}
        except ValueError:
            return _json({"ok": False, "error": "body is not JSON"}, 400)
        if not isinstance(kwargs, dict):
            return _json({"ok": False, "error": "body must be a JSON object"}, 400)
        for key in [k for k in kwargs if k.endswith(B64)]:
            kwargs[key[:-len(B64)]] = base64.b64decode(kwargs.pop(key))
        try:
            result = await self.fake.invoke(name, kwargs)
        except (TypeError, ValueError, KeyError) as exc:
            return _json({"ok": False, "error": repr(exc)}, 400)
        return _json({"ok": True, "result": result})

    async def get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        control = CONTROLS.get(name)
        if control is None or control.kind == ACTION:
            return _unknown(name)
        kwargs = {key: _query_value(value) for key, value in request.query.items()}
        call = lambda: control.implementation(self.fake)(**kwargs)  # noqa: E731
        try:
            if control.kind == WAITING:   # a long poll: block a worker thread, not the loop
                result = await asyncio.get_running_loop().run_in_executor(None, call)
            else:
                result = call()
        except TimeoutError as exc:
            return _json({"ok": False, "error": "timeout", "detail": str(exc)}, 408)
        except (TypeError, ValueError) as exc:
            return _json({"ok": False, "error": repr(exc)}, 400)
        return _json({"ok": True, "result": result})


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
            url += "?" + urllib.parse.urlencode({k: json.dumps(v) for k, v in query.items() if v is not None})
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
        for key in [k for k, v in kwargs.items() if isinstance(v, bytes)]:   # a binary frame
            kwargs[key + B64] = base64.b64encode(kwargs.pop(key)).decode()
        return self._request("POST", name, kwargs)

    def _call(self, control: Control, kwargs: dict) -> Any:
        if control.kind == ACTION:
            return self._post(control.name, **kwargs)
        timeout = kwargs["timeout"] + WAIT_MARGIN if control.kind == WAITING else None
        return self._request("GET", control.name, query=kwargs, timeout=timeout)
