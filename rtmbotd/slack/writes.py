"""The Web API writes an output may name: what each needs, and how it is sent.

An output dict with `"method"` is checked here on the plugin's thread (`check`); the
connector sends it with `send`. `files.upload` is Slack's current three-step flow
(`files.getUploadURLExternal`, the bytes to the upload URL, `files.completeUploadExternal`):
Slack retired the `files.upload` method itself.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtmbotd.slack.web import SlackWeb, WebError

log = logging.getLogger(__name__)

POST = "chat.postMessage"
UPLOAD = "files.upload"
# A file's bytes ride in the durable outbox record, so they are kept small; bigger files
# go by `path` (read when sent).
MAX_CONTENT_BASE64 = 1024 * 1024
# Slack takes files up to 1 GB; a bigger `path` is refused before its bytes are read.
MAX_FILE_BYTES = 1024 ** 3
_UNIX_TIME = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class Spec:
    required: tuple[str, ...] = ()       # besides `channel`
    needs_body: bool = False             # text or blocks/attachments
    strings: tuple[str, ...] = ()        # arguments that must be non-empty strings when given


METHODS: dict[str, Spec] = {
    POST: Spec(needs_body=True),
    "chat.postEphemeral": Spec(("user",), needs_body=True, strings=("user", "thread_ts")),
    "chat.update": Spec(("ts",), strings=("ts",)),
    "chat.delete": Spec(("ts",), strings=("ts",)),
    "chat.scheduleMessage": Spec(("post_at",), needs_body=True, strings=("thread_ts",)),
    "reactions.add": Spec(("timestamp", "name"), strings=("timestamp", "name")),
    "reactions.remove": Spec(("timestamp", "name"), strings=("timestamp", "name")),
    UPLOAD: Spec(("filename",), strings=("filename", "title", "thread_ts")),
}


class BadWrite(ValueError):
    """An output naming a method it cannot be: unknown, or missing / ill-typed arguments."""


def check(method: Any, text: str | None, fields: dict, folder: Path | None) -> dict:
    """The arguments of a `method` output (without channel and text) as they are queued;
    BadWrite says what is wrong. `folder` is the plugin's, for files.upload's `path`."""
    if not isinstance(method, str) or method not in METHODS:
        raise BadWrite(f"unknown method {method!r} (known: {', '.join(sorted(METHODS))})")
    spec = METHODS[method]
    missing = [name for name in spec.required if fields.get(name) in (None, "")]
    if missing:
        raise BadWrite(f"{method} needs {', '.join(missing)}")
    for name in spec.strings:
        if name in fields and not (isinstance(fields[name], str) and fields[name]):
            raise BadWrite(f"{method}: {name} must be a non-empty string")
    if spec.needs_body and not (text or fields.get("blocks") or fields.get("attachments")):
        raise BadWrite(f"{method} needs text or blocks")
    if method == "chat.scheduleMessage":
        post_at = fields["post_at"]
        # isdigit() takes "²" and "１２３" too, which Slack (and int()) refuse
        if isinstance(post_at, bool) or not isinstance(post_at, (int, str)) or not _UNIX_TIME.fullmatch(str(post_at)):
            raise BadWrite("chat.scheduleMessage: post_at must be a Unix time in seconds")
    if method == UPLOAD:
        return _upload_fields(fields, folder)
    return fields


def _upload_fields(fields: dict, folder: Path | None) -> dict:
    fields = dict(fields)
    content, path = fields.pop("content", None), fields.pop("path", None)
    if (content is None) == (path is None):
        raise BadWrite("files.upload needs content or path (one of them)")
    if path is not None:
        fields["path"] = str(_inside(path, folder))
        return fields
    if isinstance(content, str):
        content = content.encode("utf-8")
    if not isinstance(content, (bytes, bytearray)):
        raise BadWrite("files.upload: content must be str or bytes")
    encoded = base64.b64encode(content).decode("ascii")
    if len(encoded) > MAX_CONTENT_BASE64:
        raise BadWrite(f"files.upload: content of {len(content)} bytes is over the limit of "
                       f"{MAX_CONTENT_BASE64} bytes base64 (about 768 KiB); give a path instead")
    fields["content_base64"] = encoded
    return fields


def _inside(path: Any, folder: Path | None) -> Path:
    """`path` under the plugin's folder; an absolute path or one escaping it is refused."""
    if not isinstance(path, str) or not path:
        raise BadWrite("files.upload: path must be a non-empty string")
    if folder is None:
        raise BadWrite("files.upload: this plugin has no folder for a path")
    if Path(path).is_absolute():
        raise BadWrite(f"files.upload: path {path!r} must be relative to the plugin's folder")
    if "\0" in path:
        raise BadWrite("files.upload: path must not hold a NUL character")
    root = folder.resolve()
    full = (root / path).resolve()
    if full != root and root not in full.parents:
        raise BadWrite(f"files.upload: path {path!r} is outside the plugin's folder")
    return full


async def send(web: SlackWeb, method: str, channel: str, text: str | None, extra: dict) -> dict:
    """Make the call (files.upload: its three steps); Slack's answer, or WebError."""
    if method == UPLOAD:
        return await _upload(web, channel, text, extra)
    params = dict(extra)
    params["channel"] = channel
    if text is not None:
        params["text"] = text
    return await web.call(method, json=True, **params)


async def _upload(web: SlackWeb, channel: str, text: str | None, extra: dict) -> dict:
    data = await _file_bytes(extra)
    filename = extra["filename"]
    ticket = await web.call("files.getUploadURLExternal", filename=filename, length=len(data))
    url, file_id = ticket.get("upload_url"), ticket.get("file_id")
    if not isinstance(url, str) or not isinstance(file_id, str):
        raise WebError("files.getUploadURLExternal", "answer without upload_url and file_id")
    await web.upload(url, filename, data)
    params: dict[str, Any] = {"files": [{"id": file_id, "title": extra.get("title") or filename}],
                              "channel_id": channel}
    if extra.get("thread_ts"):
        params["thread_ts"] = extra["thread_ts"]
    if text:
        params["initial_comment"] = text
    return await web.call("files.completeUploadExternal", **params)


async def _file_bytes(extra: dict) -> bytes:
    """The file's bytes; a WebError with a code (a metric label, never a path) when there
    are none, the path being logged here."""
    if "path" in extra:
        try:
            return await asyncio.to_thread(read_file, extra["path"])
        except OSError as exc:
            log.error("files.upload: cannot read %s: %s", extra["path"], exc.strerror or exc)
            raise WebError(UPLOAD, "file_unreadable") from None
    try:
        return base64.b64decode(extra.get("content_base64") or "", validate=True)
    except (binascii.Error, ValueError):
        raise WebError(UPLOAD, "content_not_base64") from None


def read_file(path: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes (at most `limit`), or OSError. Opened without blocking: a FIFO
    as `path` would hold a thread of the loop's executor forever, the executor aiohttp's
    DNS look-ups and the stop wait on too."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(0, "not a regular file")
        data = f.read(limit + 1) if info.st_size <= limit else b""
    if len(data) > limit or info.st_size > limit:      # grown since, or too big to read at all
        raise OSError(0, f"over Slack's limit of {limit} bytes")
    return data
