"""The fake Slack's write methods besides chat.postMessage: reactions, ephemeral and
scheduled messages, and the current file upload flow (files.getUploadURLExternal, a POST
of the bytes to the upload URL the fake serves, files.completeUploadExternal).

Every channel write passes the enforced per-channel rate limit, as chat.postMessage does.
"""
from __future__ import annotations

import base64
import itertools
import json
import math
from typing import Any, Callable

from aiohttp import web

from rtmbotd.testing.fakeslack.errors import WebApiError
from rtmbotd.testing.fakeslack.workspace import BOT_ID, BOT_USER_ID, Channel

UPLOAD_PATH = "/_upload/{file_id}"


class WriteMethods:
    """Implementations of the write methods for a WebApi (`methods()` names them)."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.journal = api.journal
        self._reactions: set[tuple[str, str, str]] = set()      # (channel, ts, name)
        self._file_ids = itertools.count(1)
        self._tickets: dict[str, dict] = {}                      # file id -> filename, length, bytes

    def methods(self) -> dict[str, Callable]:
        return {
            "reactions.add": self.reactions_add,
            "reactions.remove": self.reactions_remove,
            "chat.postEphemeral": self.chat_post_ephemeral,
            "chat.scheduleMessage": self.chat_schedule_message,
            "files.getUploadURLExternal": self.files_get_upload_url,
            "files.completeUploadExternal": self.files_complete_upload,
        }

    def writable(self, ref: Any, call: Any) -> Channel:
        """The channel of a write, or the error Slack gives (unknown, over the rate limit)."""
        channel = self.api._channel(ref)
        wait = self.api.hub.rate_limited(channel.id, call.received_at)
        if wait > 0:
            raise WebApiError("ratelimited", status=429, retry_after=max(1, math.ceil(wait)))
        return channel

    @staticmethod
    def _need(params: dict, *names: str) -> None:
        for name in names:
            if not params.get(name):
                raise WebApiError("invalid_arguments" if name != "ts" else "message_not_found")

    async def reactions_add(self, call: Any) -> dict:
        return self._react(call, add=True)

    async def reactions_remove(self, call: Any) -> dict:
        return self._react(call, add=False)

    def _react(self, call: Any, *, add: bool) -> dict:
        params = call.params
        self._need(params, "timestamp", "name")
        channel = self.writable(params.get("channel"), call)
        key = (channel.id, str(params["timestamp"]), str(params["name"]))
        if add and key in self._reactions:
            raise WebApiError("already_reacted")
        if not add and key not in self._reactions:
            raise WebApiError("no_reaction")
        (self._reactions.add if add else self._reactions.discard)(key)
        return {"ok": True}

    async def chat_post_ephemeral(self, call: Any) -> dict:
        params = call.params
        self._need(params, "user")
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            raise WebApiError("no_text")
        if str(params["user"]) not in self.api.workspace.users:
            raise WebApiError("user_not_in_channel")
        self.writable(params.get("channel"), call)
        return {"ok": True, "message_ts": self.api.workspace.next_ts()}

    async def chat_schedule_message(self, call: Any) -> dict:
        params = call.params
        self._need(params, "post_at")
        try:
            post_at = int(params["post_at"])
        except (TypeError, ValueError):
            raise WebApiError("invalid_time") from None
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            raise WebApiError("no_text")
        channel = self.writable(params.get("channel"), call)
        scheduled = f"Q{next(self._file_ids):08d}"
        return {"ok": True, "channel": channel.id, "scheduled_message_id": scheduled, "post_at": post_at,
                "message": {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID,
                            "text": params.get("text") or ""}}

    # -- files: Slack's current upload flow -----------------------------------------------------

    async def files_get_upload_url(self, call: Any) -> dict:
        params = call.params
        try:
            length = int(params.get("length"))
        except (TypeError, ValueError):
            raise WebApiError("invalid_arguments") from None
        if not params.get("filename") or length < 0:
            raise WebApiError("invalid_arguments")
        file_id = f"F{next(self._file_ids):08d}"
        self._tickets[file_id] = {"filename": str(params["filename"]), "length": length, "content": None}
        return {"ok": True, "upload_url": f"http://{call.host}{UPLOAD_PATH.format(file_id=file_id)}",
                "file_id": file_id}

    async def handle_upload(self, request: web.Request) -> web.Response:
        """POST <upload_url>: the file's bytes, raw or as a multipart `file` field."""
        ticket = self._tickets.get(request.match_info["file_id"])
        if ticket is None:
            return web.Response(status=404, text="unknown upload")
        if request.content_type == "multipart/form-data":
            field = (await request.post()).get("file")
            data = field.file.read() if hasattr(field, "file") else str(field or "").encode()
        else:
            data = await request.read()
        ticket["content"] = data
        return web.Response(text=f"OK - {len(data)}")

    async def files_complete_upload(self, call: Any) -> dict:
        params = call.params
        files = params.get("files")
        if isinstance(files, str):
            try:
                files = json.loads(files)
            except ValueError:
                raise WebApiError("invalid_arguments") from None
        if not isinstance(files, list) or not files or not all(isinstance(f, dict) for f in files):
            raise WebApiError("invalid_arguments")
        tickets = [self._tickets.get(str(f.get("id"))) for f in files]
        if any(t is None or t["content"] is None for t in tickets):
            raise WebApiError("file_not_found")
        if any(len(t["content"]) != t["length"] for t in tickets):
            raise WebApiError("file_upload_size_mismatch")
        channel = self.writable(params.get("channel_id"), call) if params.get("channel_id") else None
        answer = []
        for f, ticket in zip(files, tickets):
            del self._tickets[str(f["id"])]
            record = {"id": str(f["id"]), "filename": ticket["filename"], "title": f.get("title"),
                      "channel": channel.id if channel else None, "thread_ts": params.get("thread_ts"),
                      "initial_comment": params.get("initial_comment"), "size": len(ticket["content"]),
                      "content_base64": base64.b64encode(ticket["content"]).decode("ascii")}
            self.journal.file(record)
            answer.append({"id": record["id"], "title": record["title"] or record["filename"],
                           "name": record["filename"], "size": record["size"]})
        return {"ok": True, "files": answer}
