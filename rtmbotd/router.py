"""Turn plugin outputs into outbox messages: validate, resolve the target, queue.

Targets may be a channel id, `#name`, `@user` or a user id; names wait for the
directory's first listing and users wait for their DM channel to be opened.
"""
from __future__ import annotations

import json
import logging
import math
import reprlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rtmbotd.metrics.recorder import DM_FAILED, UNKNOWN_TARGET
from rtmbotd.slack.directory import Directory, NeedsDM, UnknownTarget
from rtmbotd.slack.writes import POST, UPLOAD, BadWrite, check
from rtmbotd.outbox import Outbox

log = logging.getLogger(__name__)

# Levels of dicts and lists an output may have; Slack's blocks need about ten. Deeper is
# refused here, on the plugin's thread, before the loop's json.dumps could hit the
# recursion limit.
MAX_DEPTH = 64


@dataclass(frozen=True)
class Output:
    target: str
    text: str | None
    extra: dict
    plugin: str
    tag: Any = None          # rides along to the outbox (restored messages)
    method: str = POST       # the Web API write (slack/writes.py)
    callback: dict | None = None   # {"callback": name, "output": the item}: process_output_result after it


@dataclass(frozen=True)
class DMOpened:
    user: str
    channel: str | None
    error: str | None = None
    passing: bool = False      # the error may go away (Slack down, rate limited): open it again later


DM_RETRY_BASE, DM_RETRY_CAP = 1.0, 30.0


def _utf8(text: str) -> str:
    """`text` as Slack can take it: lone surrogates (e.g. from surrogateescape) replaced."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:   # surrogateescape'd bytes (file names, subprocess output): U+FFFD per bad byte
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


class NotPlainJSON(ValueError):
    """An output holds something Slack's JSON cannot carry; the message says what."""


def _key(key: Any) -> str:
    if isinstance(key, str):
        return _utf8(str.__str__(key))
    if key is None or isinstance(key, (bool, int)) or (isinstance(key, float) and math.isfinite(key)):
        return json.dumps(key)          # as json.dumps would write it: true, 1, 2.5, null
    raise NotPlainJSON(f"a {type(key).__name__} key")


def plain_json(value: Any, depth: int = MAX_DEPTH) -> Any:
    """`value` copied as plain JSON (dict, list, str, int, float, bool, None; strings valid
    UTF-8); NotPlainJSON when it is something else or nested deeper than `depth`.

    Reads subclasses of dict, list, str, int and float through the base types' own
    methods, so none of a plugin's code (an overridden `.get` that raises or blocks) runs.
    """
    if isinstance(value, str):
        return _utf8(str.__str__(value))
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotPlainJSON(f"{value!r} is not a JSON number")
        return float.__float__(value)
    if isinstance(value, (dict, list, tuple)) and depth <= 0:
        raise NotPlainJSON(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        return {_key(k): plain_json(v, depth - 1) for k, v in dict.items(value)}
    if isinstance(value, list):
        return [plain_json(v, depth - 1) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        return [plain_json(v, depth - 1) for v in tuple.__iter__(value)]
    raise NotPlainJSON(f"a {type(value).__name__}")


def parse_output(item: Any, plugin: str, folder: Path | None = None) -> Output | None:
    """An `outputs` entry as an Output; None (logged) when it is malformed.

    Runs on the plugin's own thread (runtime/worker.py): reading a plugin's objects may
    raise or block, which must cost that plugin alone, never the loop. `folder` is the
    plugin's, where a files.upload `path` must be.
    """
    content = None
    if isinstance(item, dict) and isinstance(dict.get(item, "content"), (bytes, bytearray)):
        item = dict(item)          # a file's bytes: the one value an output may hold that JSON cannot
        content = bytes(item.pop("content"))
    if isinstance(item, (dict, list, tuple)):
        try:
            item = plain_json(item)
        except NotPlainJSON as exc:
            log.error("plugin %s: output ignored: it is not plain JSON (%s; use dicts and lists, "
                      "e.g. block.to_dict())", plugin, exc)
            return None
    if isinstance(item, dict):
        if content is not None:
            item["content"] = content
        return _parse_dict(item, plugin, folder)
    if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and item[0]:
        text = item[1]
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            text = str(text)
        if isinstance(text, str) and text:
            return Output(item[0], text, {}, plugin)
    return _refused(item, plugin)


def _refused(item: Any, plugin: str) -> None:
    log.error("plugin %s: output %s ignored: use [channel, text] or a dict with channel and text/blocks",
              plugin, reprlib.repr(item))
    return None


def _parse_dict(item: dict, plugin: str, folder: Path | None) -> Output | None:
    fields = dict(item)
    method = fields.pop("method", None)
    callback = fields.pop("callback", None)
    target = fields.pop("channel", None)
    text = fields.pop("text", None)
    if callback is not None and not (isinstance(callback, str) and callback):
        log.error("plugin %s: output %s ignored: callback must be a name (a string)", plugin, reprlib.repr(item))
        return None
    if isinstance(fields.get("content"), bytes) and method != UPLOAD:
        log.error("plugin %s: output ignored: bytes are for files.upload's content only (use text)", plugin)
        return None
    if method is None:
        if not (isinstance(target, str) and target and (text is None or isinstance(text, str))
                and (text or fields.get("blocks") or fields.get("attachments"))):
            return _refused(item, plugin)
        method = POST
    else:
        if not (isinstance(target, str) and target):
            log.error("plugin %s: %s output ignored: it needs a channel", plugin, reprlib.repr(method))
            return None
        if text is not None and not isinstance(text, str):
            log.error("plugin %s: %s output ignored: text must be a string", plugin, method)
            return None
        try:
            fields = check(method, text, fields, folder)
        except BadWrite as exc:
            log.error("plugin %s: output ignored: %s", plugin, exc)
            return None
    given = {k: v for k, v in item.items() if not (method == UPLOAD and k == "content")}
    return Output(target, text, fields, plugin, method=method,
                  callback={"callback": callback, "output": given} if callback else None)


class Router:
    def __init__(self, outbox: Outbox, directory: Directory, open_dm: Callable[[str], None],
                 dropped: Callable[[Output, str], None] | None = None) -> None:
        self.outbox = outbox
        self.directory = directory
        self._open_dm = open_dm
        self._dropped = dropped or (lambda out, reason: None)     # given up for good, and why
        self._waiting_dm: dict[str, list[Output]] = defaultdict(list)
        self._waiting_listing: list[Output] = []
        self._listing_plugins: set[str] = set()        # the plugins of those outputs
        self._dm_retry: dict[str, tuple[float, int]] = {}     # user -> (when to open again, failures)

    @property
    def waiting(self) -> int:
        return len(self._waiting_listing) + sum(len(v) for v in self._waiting_dm.values())

    def route(self, out: Output, now: float) -> None:
        # Behind the same plugin's outputs waiting for the first listing: `#general` then
        # `C1GENERAL` is one channel, and its writes go in the order given. Other plugins'
        # outputs by id do not wait for a listing that may keep failing.
        if self.directory.needs_listing(out.target) or (
                not self.directory.loaded and out.plugin in self._listing_plugins):
            self._waiting_listing.append(out)
            self._listing_plugins.add(out.plugin)
            return
        try:
            where = self.directory.resolve(out.target)
        except UnknownTarget as exc:
            log.error("plugin %s: message to %r dropped: %s", out.plugin, out.target, exc)
            self._dropped(out, UNKNOWN_TARGET)
            return
        if isinstance(where, NeedsDM):
            first = where.user not in self._waiting_dm
            self._waiting_dm[where.user].append(out)
            if first:
                self._open_dm(where.user)
            return
        self._enqueue(where, out, now)

    def _enqueue(self, channel: str, out: Output, now: float) -> None:
        self.outbox.enqueue(channel, out.text, out.plugin, now, out.extra, tag=out.tag, method=out.method,
                            callback=out.callback)

    def discard(self, tags: set) -> int:
        """Cluster: forget waiting outputs whose rows another node took (it sends them);
        a DM being opened stays asked for. Returns how many were forgotten."""
        before = self.waiting
        self._waiting_listing = [out for out in self._waiting_listing if out.tag not in tags]
        for user, outs in self._waiting_dm.items():
            self._waiting_dm[user] = [out for out in outs if out.tag not in tags]
        return before - self.waiting

    def directory_loaded(self, now: float) -> None:
        waiting, self._waiting_listing = self._waiting_listing, []
        self._listing_plugins.clear()
        for out in waiting:
            self.route(out, now)

    def dm_opened(self, item: DMOpened, now: float) -> None:
        if item.channel is None and item.passing and self._waiting_dm.get(item.user):
            # Never drop what waits for a passing failure: the durable outbox keeps it meanwhile.
            failures = self._dm_retry.get(item.user, (0.0, 0))[1] + 1
            delay = min(DM_RETRY_CAP, DM_RETRY_BASE * 2 ** (failures - 1))
            self._dm_retry[item.user] = (now + delay, failures)
            log.warning("cannot open a DM with %s (%s); %d message(s) wait, retrying in %.0f s", item.user,
                        item.error, len(self._waiting_dm[item.user]), delay)
            return
        self._dm_retry.pop(item.user, None)
        waiting = self._waiting_dm.pop(item.user, [])
        if item.channel is None:
            for out in waiting:
                log.error("plugin %s: message to %r dropped: cannot open a DM (%s)", out.plugin, out.target,
                          item.error)
                self._dropped(out, DM_FAILED)
            return
        self.directory.add_dm(item.user, item.channel)
        for out in waiting:
            self._enqueue(item.channel, out, now)

    def tick(self, now: float) -> None:
        """Open again the DMs whose last try failed for a passing reason, when due."""
        for user, (at, failures) in list(self._dm_retry.items()):
            if at <= now:
                self._dm_retry[user] = (float("inf"), failures)     # until its answer comes
                self._open_dm(user)

    def next_deadline(self) -> float | None:
        return min((at for at, _ in self._dm_retry.values() if at != float("inf")), default=None)
