"""The fake Slack's Web API (/api/<method>): request parsing, token checks, injected failures, methods."""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiohttp import web

from rtmbotd.testing.fakeslack.errors import WebApiError
from rtmbotd.testing.fakeslack.hub import Hub
from rtmbotd.testing.fakeslack.writes import WriteMethods
from rtmbotd.testing.fakeslack.workspace import (
    BOT_ID, BOT_NAME, BOT_USER_ID, CONVERSATION_TYPES, TEAM_DOMAIN, TEAM_ID, TEAM_NAME,
    Channel, CursorError, paginate)

log = logging.getLogger(__name__)

MAX_TEXT = 40_000
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
APP_METHOD = "apps.connections.open"


@dataclass(frozen=True)
class Call:
    """One Web API request as the method implementations see it."""

    params: dict
    host: str
    received_at: float


@dataclass
class InjectedFailure:
    count: int
    status: int
    retry_after: int | None
    error: str


def token_kind(token: str | None) -> str | None:
    """"bot", "user", "app" or "unknown" by prefix; the raw token is never recorded."""
    if not token:
        return None
    return {"xoxb-": "bot", "xoxp-": "user", "xapp-": "app"}.get(token[:5], "unknown")


def _json_field(value: Any, error: str) -> Any:
    """`blocks`/`attachments` arrive as JSON strings when form-encoded, as lists in a JSON body."""
    if isinstance(value, str):
        if not value:
            return None
        try:
            value = json.loads(value)
        except ValueError:
            raise WebApiError(error) from None
    return value or None


def _limit(params: dict) -> int:
    try:
        limit = int(params.get("limit") or DEFAULT_LIMIT)
    except (TypeError, ValueError):
        raise WebApiError("invalid_limit") from None
    return min(limit, MAX_LIMIT) if limit > 0 else DEFAULT_LIMIT


def _page(items: list, params: dict) -> tuple[list, dict]:
    try:
        page, next_cursor = paginate(items, params.get("cursor") or None, _limit(params))
    except CursorError:
        raise WebApiError("invalid_cursor") from None
    return page, {"next_cursor": next_cursor}


class WebApi:
    """Serves /api/<method> like Slack: HTTP 200 with `ok`, except injected or rate-limit failures."""

    def __init__(self, hub: Hub, *, bot_token: str | None = None,
                 app_token: str | None = None) -> None:
        self.hub = hub
        self.workspace = hub.workspace
        self.journal = hub.journal
        self.bot_token = bot_token
        self.app_token = app_token
        self.down = False
        self._failures: dict[str, InjectedFailure] = {}
        self.methods: dict[str, Callable[[Call], Awaitable[dict]]] = {
            "auth.test": self.auth_test,
            "rtm.connect": self.rtm_connect,
            "rtm.start": self.rtm_start,
            APP_METHOD: self.apps_connections_open,
            "chat.postMessage": self.chat_post_message,
            "chat.update": self.chat_update,
            "chat.delete": self.chat_delete,
            "conversations.list": self.conversations_list,
            "conversations.info": self.conversations_info,
            "conversations.open": self.conversations_open,
            "conversations.members": self.conversations_members,
            "users.list": self.users_list,
            "users.info": self.users_info,
        }
        self.writes = WriteMethods(self)
        self.methods.update(self.writes.methods())

    # -- failure injection (loop thread) ---------------------------------------------------------

    def fail_next(self, method: str, *, count: int = 1, status: int = 429,
                  retry_after: int | None = 1, error: str = "ratelimited") -> None:
        self._failures[method] = InjectedFailure(int(count), int(status), retry_after, error)

    def set_down(self, down: bool) -> None:
        self.down = bool(down)

    def _take_failure(self, method: str) -> InjectedFailure | None:
        failure = self._failures.get(method)
        if failure is None:
            return None
        failure.count -= 1
        if failure.count <= 0:
            del self._failures[method]
        return failure

    # -- HTTP -------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """Any /api/<method> request, GET or POST, form or JSON."""
        received_at = time.monotonic()
        method = request.match_info["method"]
        params: dict = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    return self._answer({"ok": False, "error": "invalid_json"})
                params.update(body)
            else:
                form = await request.post()
                params.update((k, v) for k, v in form.items() if isinstance(v, str))
        token = params.pop("token", None)
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[7:].strip()
        self.journal.web_call(method, params, token_kind(token), received_at)
        if self.down:
            return self._answer({"ok": False, "error": "service_unavailable"}, status=503)
        failure = self._take_failure(method)
        if failure is not None:
            return self._error(WebApiError(failure.error, status=failure.status,
                                           retry_after=failure.retry_after))
        implementation = self.methods.get(method)
        if implementation is None:
            return self._answer({"ok": False, "error": "unknown_method"})
        auth_error = self._auth_error(method, token)
        if auth_error is not None:
            return self._answer({"ok": False, "error": auth_error})
        try:
            answer = await implementation(Call(params, request.host, received_at))
        except WebApiError as exc:
            return self._error(exc)
        self.journal.api_call(method, params)
        return self._answer(answer)

    async def handle_response_url(self, request: web.Request) -> web.Response:
        """POST /_response_url/<token>: a slash command's reply, recorded as a sent message."""
        received_at = time.monotonic()
        channel = self.hub.response_urls.get(request.match_info["token"])
        try:
            body = await request.json()
        except ValueError:
            body = None
        if channel is None or not isinstance(body, dict):
            return self._answer({"ok": False, "error": "invalid_response_url"}, status=404)
        self.journal.web_call("response_url", body, None, received_at)
        self.journal.message({
            "channel": channel, "text": body.get("text") or "", "ts": self.workspace.next_ts(),
            "via": "response_url", "thread_ts": body.get("thread_ts"),
            "blocks": body.get("blocks"), "attachments": body.get("attachments"),
            "received_at": received_at})
        return self._answer({"ok": True})

    def _answer(self, body: dict, status: int = 200, headers: dict | None = None) -> web.Response:
        return web.Response(text=json.dumps(body), status=status, headers=headers,
                            content_type="application/json", charset="utf-8")

    def _error(self, exc: WebApiError) -> web.Response:
        headers = None
        if exc.status == 429 and exc.retry_after is not None:
            headers = {"Retry-After": str(exc.retry_after)}
        return self._answer({"ok": False, "error": exc.error}, exc.status, headers)

    def _auth_error(self, method: str, token: str | None) -> str | None:
        if not token:
            return "not_authed"
        kind = token_kind(token)
        if kind == "app":
            if method != APP_METHOD:
                return "not_allowed_token_type"
            valid = self.app_token is None or token == self.app_token
        elif kind in ("bot", "user"):
            if method == APP_METHOD:
                return "not_allowed_token_type"
            valid = self.bot_token is None or token == self.bot_token
        else:
            valid = False
        return None if valid else "invalid_auth"

    # -- methods ------------------------------------------------------------------------------------

    def _channel(self, ref: Any) -> Channel:
        channel = self.workspace.resolve_channel(ref)
        if channel is None:
            raise WebApiError("channel_not_found")
        return channel

    async def auth_test(self, call: Call) -> dict:
        return {"ok": True, "url": f"https://{TEAM_DOMAIN}.slack.com/", "team": TEAM_NAME,
                "user": BOT_NAME, "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID}

    async def rtm_connect(self, call: Call) -> dict:
        return {"ok": True, "url": self.hub.issue_ticket("rtm", call.host),
                "team": {"id": TEAM_ID, "name": TEAM_NAME, "domain": TEAM_DOMAIN},
                "self": {"id": BOT_USER_ID, "name": BOT_NAME}}

    async def rtm_start(self, call: Call) -> dict:
        """rtm.connect plus the workspace snapshot the retired rtm.start carried."""
        answer = await self.rtm_connect(call)
        conversations = self.workspace.channels.values()
        answer.update({
            "users": [u.to_json() for u in self.workspace.users.values()],
            "channels": [c.to_json() for c in conversations if c.kind == "public_channel"],
            "groups": [c.to_json() for c in conversations if c.kind in ("private_channel", "mpim")],
            "ims": [c.to_json() for c in conversations if c.kind == "im"],
            "bots": [],
        })
        return answer

    async def apps_connections_open(self, call: Call) -> dict:
        return {"ok": True, "url": self.hub.issue_ticket("socket_mode", call.host)}

    async def chat_post_message(self, call: Call) -> dict:
        params = call.params
        channel = self._channel(params.get("channel"))
        text = params.get("text") or ""
        if not isinstance(text, str):
            text = str(text)
        blocks = _json_field(params.get("blocks"), "invalid_blocks")
        attachments = _json_field(params.get("attachments"), "invalid_attachments")
        if not text and not blocks and not attachments:
            raise WebApiError("no_text")
        if len(text) > MAX_TEXT:
            raise WebApiError("msg_too_long")
        thread_ts = params.get("thread_ts") or None
        record = {"channel": channel.id, "text": text, "ts": None, "via": "web",
                  "thread_ts": thread_ts, "blocks": blocks, "attachments": attachments,
                  "received_at": call.received_at}
        wait = self.hub.rate_limited(channel.id, call.received_at)
        if wait > 0:
            self.journal.rejected(dict(record, reason="rate_limited"))
            raise WebApiError("ratelimited", status=429, retry_after=max(1, math.ceil(wait)))
        ts = record["ts"] = self.workspace.next_ts()
        self.journal.message(record)
        event = self.hub.bot_message_event(channel, text, ts, thread_ts=thread_ts, blocks=blocks,
                                           attachments=attachments)
        if self.hub.echo_own_messages:
            await self.hub.push_event(event)
        message = {k: v for k, v in event.items() if k != "channel"}
        return {"ok": True, "channel": channel.id, "ts": ts, "message": message}

    async def chat_update(self, call: Call) -> dict:
        ts = call.params.get("ts")
        if not ts:
            raise WebApiError("message_not_found")
        channel = self.writes.writable(call.params.get("channel"), call)
        text = call.params.get("text") or ""
        self.journal.edit({"action": "update", "channel": channel.id, "ts": ts, "text": text,
                           "blocks": _json_field(call.params.get("blocks"), "invalid_blocks")})
        return {"ok": True, "channel": channel.id, "ts": ts, "text": text,
                "message": {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "text": text}}

    async def chat_delete(self, call: Call) -> dict:
        ts = call.params.get("ts")
        if not ts:
            raise WebApiError("message_not_found")
        channel = self.writes.writable(call.params.get("channel"), call)
        self.journal.edit({"action": "delete", "channel": channel.id, "ts": ts, "text": None,
                           "blocks": None})
        return {"ok": True, "channel": channel.id, "ts": ts}

    async def conversations_list(self, call: Call) -> dict:
        types = [t.strip() for t in str(call.params.get("types") or "public_channel").split(",")
                 if t.strip()]
        if any(t not in CONVERSATION_TYPES for t in types):
            raise WebApiError("invalid_types")
        page, metadata = _page(self.workspace.conversations(types), call.params)
        return {"ok": True, "channels": [c.to_json() for c in page], "response_metadata": metadata}

    async def conversations_info(self, call: Call) -> dict:
        channel = self.workspace.channels.get(str(call.params.get("channel", "")))
        if channel is None:
            raise WebApiError("channel_not_found")
        return {"ok": True, "channel": channel.to_json()}

    async def conversations_open(self, call: Call) -> dict:
        params = call.params
        if params.get("channel"):
            channel, existed = self._channel(params["channel"]), True
        else:
            users = [u.strip() for u in str(params.get("users") or "").split(",") if u.strip()]
            if not users:
                raise WebApiError("users_list_not_supplied")
            try:
                if len(users) == 1:
                    channel, existed = self.workspace.open_dm(users[0])
                else:
                    channel, existed = self.workspace.open_mpim(users)
            except KeyError:
                raise WebApiError("user_not_found") from None
        return_full = str(params.get("return_im", "")).lower() in ("1", "true")
        answer: dict = {"ok": True}
        if existed:
            answer.update(no_op=True, already_open=True)
        answer["channel"] = channel.to_json() if return_full else {"id": channel.id}
        return answer

    async def conversations_members(self, call: Call) -> dict:
        channel = self.workspace.channels.get(str(call.params.get("channel", "")))
        if channel is None:
            raise WebApiError("channel_not_found")
        page, metadata = _page(channel.members, call.params)
        return {"ok": True, "members": page, "response_metadata": metadata}

    async def users_list(self, call: Call) -> dict:
        page, metadata = _page(list(self.workspace.users.values()), call.params)
        return {"ok": True, "members": [u.to_json() for u in page], "cache_ts": int(time.time()),
                "response_metadata": metadata}

    async def users_info(self, call: Call) -> dict:
        user = self.workspace.users.get(str(call.params.get("user", "")))
        if user is None:
            raise WebApiError("user_not_found")
        return {"ok": True, "user": user.to_json()}
