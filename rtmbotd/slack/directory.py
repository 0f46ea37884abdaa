"""A cache of the workspace's users and channels, kept current from Slack's events.

Resolves an output's target: a channel id, `#name`, `@user` or a user id (a DM).
Pure: the daemon feeds it API listings and events, and asks it when to list again
(on a connect once the listing is old, and after a failed one).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtmbotd.slack.web import WebError

log = logging.getLogger(__name__)

LISTING_MAX_AGE = 900.0     # a connect lists again once the listing is older
LISTING_RETRY = 10.0        # at least this long after a listing failed for a passing reason

_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]+$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")


@dataclass(frozen=True)
class DirectoryListed:
    """The answer to a listing of channels and users (conversations.list, users.list)."""

    channels: list
    users: list
    error: WebError | None


@dataclass(frozen=True)
class NeedsDM:
    """The target is a user without a known DM channel: open one with conversations.open."""

    user: str


class UnknownTarget(LookupError):
    """No channel or user matches the target."""


class Directory:
    def __init__(self) -> None:
        self.loaded = False
        self.channels: dict[str, dict] = {}       # id -> {"id", "name", ...}
        self.channel_ids: dict[str, str] = {}     # name -> id
        self.users: dict[str, dict] = {}          # id -> user object
        self.user_ids: dict[str, str] = {}        # name / display name -> id
        self.dms: dict[str, str] = {}             # user id -> DM channel id
        self.listed_at: float | None = None       # when the last listing started
        self.retry_at: float | None = None        # when to list again after a failure

    # -- loading and events -------------------------------------------------
    def load(self, channels: list[dict], users: list[dict]) -> None:
        for chan in channels:
            self.add_channel(chan)
        for user in users:
            self.add_user(user)
        self.loaded = True

    def add_channel(self, chan: dict) -> None:
        cid = chan.get("id")
        if not isinstance(cid, str):
            return
        old = self.channels.get(cid)
        if old and old.get("name") and self.channel_ids.get(old["name"]) == cid:
            del self.channel_ids[old["name"]]
        self.channels[cid] = chan
        if chan.get("is_im") and isinstance(chan.get("user"), str):
            self.dms[chan["user"]] = cid
        name = chan.get("name")
        if isinstance(name, str) and name:
            self.channel_ids[name] = cid

    def remove_channel(self, cid: str) -> None:
        chan = self.channels.pop(cid, None)
        if chan and self.channel_ids.get(chan.get("name")) == cid:
            del self.channel_ids[chan["name"]]

    def add_user(self, user: dict) -> None:
        uid = user.get("id")
        if not isinstance(uid, str):
            return
        self.users[uid] = user
        profile = user.get("profile") or {}
        for name in (user.get("name"), profile.get("display_name"), profile.get("real_name")):
            if isinstance(name, str) and name:
                self.user_ids.setdefault(name, uid)
        if isinstance(user.get("name"), str):
            self.user_ids[user["name"]] = uid

    def add_dm(self, user: str, channel: str) -> None:
        self.dms[user] = channel
        self.channels.setdefault(channel, {"id": channel, "is_im": True, "user": user})

    def apply(self, event: dict) -> bool:
        """Update from an RTM/Events API event; True when the event changed the cache."""
        kind = event.get("type")
        chan = event.get("channel")
        if kind in ("channel_created", "group_joined", "im_created", "channel_joined") and isinstance(chan, dict):
            if kind == "im_created" and isinstance(event.get("user"), str):
                chan = {**chan, "is_im": True, "user": event["user"]}
            self.add_channel(chan)
            return True
        if kind in ("channel_rename", "group_rename") and isinstance(chan, dict):
            cid = chan.get("id")
            if isinstance(cid, str):
                self.add_channel({**self.channels.get(cid, {}), **chan})
            return True
        if kind in ("channel_deleted", "group_deleted") and isinstance(chan, str):
            self.remove_channel(chan)
            return True
        if kind in ("user_change", "team_join") and isinstance(event.get("user"), dict):
            self.add_user(event["user"])
            return True
        return False

    # -- listing from the Web API -------------------------------------------
    def connected(self, now: float) -> bool:
        """A link to Slack is up: True when a listing is due (none yet, or an old one); it counts as started."""
        if self.listed_at is not None and now - self.listed_at <= LISTING_MAX_AGE:
            return False
        self.listed_at = now
        return True

    def retry_due(self, now: float) -> bool:
        """True once, when the retry after a failed listing is due."""
        if self.retry_at is None or now < self.retry_at:
            return False
        self.retry_at = None
        return True

    def listed(self, item: DirectoryListed, now: float) -> bool:
        """Take a listing's answer; True when the cache loaded (names can resolve now).

        A passing failure schedules a retry (`retry_at`); a permanent one loads what there
        is, so that outputs waiting for names are dropped rather than kept forever.
        """
        error = item.error
        if error is not None and not error.permanent:
            delay = max(error.retry_after or 0.0, LISTING_RETRY)
            log.warning("cannot list channels and users (%s); retrying in %.0f s", error, delay)
            self.retry_at = now + delay
            return False
        if error is not None:
            log.error("cannot list channels and users (%s): names not listed (%d channels, %d users were) will not resolve", error, len(item.channels), len(item.users))
        self.load(item.channels, item.users)
        return True

    # -- resolution ---------------------------------------------------------
    def resolve(self, target: str) -> str | NeedsDM:
        """A channel id for `target`, or NeedsDM; raises UnknownTarget."""
        target = target.strip()
        if _CHANNEL_ID.match(target):
            return target
        if _USER_ID.match(target):
            return self.dms.get(target) or NeedsDM(target)
        if target.startswith("@"):
            uid = self.user_ids.get(target[1:])
            if uid is None:
                raise UnknownTarget(f"no user named {target}")
            return self.dms.get(uid) or NeedsDM(uid)
        name = target[1:] if target.startswith("#") else target
        cid = self.channel_ids.get(name)
        if cid is None:
            raise UnknownTarget(f"no channel named #{name}")
        return cid

    def needs_listing(self, target: str) -> bool:
        """True when `target` is a name that only a loaded directory can resolve."""
        target = target.strip()
        return not self.loaded and not (_CHANNEL_ID.match(target) or _USER_ID.match(target))
