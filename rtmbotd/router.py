"""Turn plugin outputs into outbox messages: validate, resolve the target, queue.

Targets may be a channel id, `#name`, `@user` or a user id; names wait for the
directory's first listing and users wait for their DM channel to be opened.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

from rtmbotd.slack.directory import Directory, NeedsDM, UnknownTarget
from rtmbotd.outbox import Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Output:
    target: str
    text: str | None
    extra: dict
    plugin: str
    tag: Any = None          # rides along to the outbox (restored messages)


@dataclass(frozen=True)
class DMOpened:
    user: str
    channel: str | None
    error: str | None = None


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


def _plain_json(extra: dict) -> dict | None:
    """`extra` round-tripped through JSON (valid UTF-8), or None when it is not JSON."""
    try:
        return json.loads(json.dumps(extra, ensure_ascii=True))
    except (TypeError, ValueError):
        return None


def parse_output(item: Any, plugin: str) -> Output | None:
    """An `outputs` entry as an Output; None (logged) when it is malformed."""
    if isinstance(item, dict):
        target = item.get("channel")
        extra = {k: v for k, v in item.items() if k not in ("channel", "text")}
        text = item.get("text")
        if isinstance(target, str) and target and (text is None or isinstance(text, str)) \
                and (text or extra.get("blocks") or extra.get("attachments")):
            clean = _plain_json(extra) if extra else {}
            if clean is None:
                log.error("plugin %s: output to %r ignored: its fields are not plain JSON "
                          "(use dicts and lists, e.g. block.to_dict())", plugin, target)
                return None
            return Output(_utf8(target), _utf8(text) if text else text, clean, plugin)
    elif isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str) and item[0]:
        text = item[1]
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            text = str(text)
        if isinstance(text, str) and text:
            return Output(_utf8(item[0]), _utf8(text), {}, plugin)
    log.error("plugin %s: output %.200r ignored: use [channel, text] or a dict with channel and text/blocks",
              plugin, item)
    return None


class Router:
    def __init__(self, outbox: Outbox, directory: Directory, open_dm: Callable[[str], None],
                 dropped: Callable[[Output], None] | None = None) -> None:
        self.outbox = outbox
        self.directory = directory
        self._open_dm = open_dm
        self._dropped = dropped or (lambda out: None)
        self._waiting_dm: dict[str, list[Output]] = defaultdict(list)
        self._waiting_listing: list[Output] = []

    @property
    def waiting(self) -> int:
        return len(self._waiting_listing) + sum(len(v) for v in self._waiting_dm.values())

    def route(self, out: Output, now: float) -> None:
        if self.directory.needs_listing(out.target):
            self._waiting_listing.append(out)
            return
        try:
            where = self.directory.resolve(out.target)
        except UnknownTarget as exc:
            log.error("plugin %s: message to %r dropped: %s", out.plugin, out.target, exc)
            self._dropped(out)
            return
        if isinstance(where, NeedsDM):
            first = where.user not in self._waiting_dm
            self._waiting_dm[where.user].append(out)
            if first:
                self._open_dm(where.user)
            return
        self.outbox.enqueue(where, out.text, out.plugin, now, out.extra, tag=out.tag)

    def directory_loaded(self, now: float) -> None:
        waiting, self._waiting_listing = self._waiting_listing, []
        for out in waiting:
            self.route(out, now)

    def dm_opened(self, item: DMOpened, now: float) -> None:
        waiting = self._waiting_dm.pop(item.user, [])
        if item.channel is None:
            for out in waiting:
                log.error("plugin %s: message to %r dropped: cannot open a DM (%s)", out.plugin, out.target,
                          item.error)
                self._dropped(out)
            return
        self.directory.add_dm(item.user, item.channel)
        for out in waiting:
            self.outbox.enqueue(item.channel, out.text, out.plugin, now, out.extra, tag=out.tag)

    def pending_records(self) -> list[dict]:
        """Outputs still waiting on a name or DM, as outbox records (for the durable outbox)."""
        outs = self._waiting_listing + [o for v in self._waiting_dm.values() for o in v]
        return [{"channel": o.target, "text": o.text, "plugin": o.plugin, "extra": o.extra} for o in outs]
