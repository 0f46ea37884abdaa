"""The fake Slack's workspace: team, users, channels and DMs, rendered as Slack JSON (no I/O)."""
from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

TEAM_ID = "T0TEAM"
TEAM_NAME = "fake-team"
TEAM_DOMAIN = "fake-team"
BOT_USER_ID = "U0BOT"
BOT_NAME = "rtmbot"
BOT_ID = "B0BOT"
APP_ID = "A0APP"

# Every built-in object claims to have been created at this moment (2023-11-14).
CREATED = 1700000000

CONVERSATION_TYPES = ("public_channel", "private_channel", "mpim", "im")

T = TypeVar("T")


@dataclass
class User:
    """A workspace member; `bot_id` is set for bot users."""

    id: str
    name: str
    display_name: str = ""
    real_name: str = ""
    bot_id: str | None = None

    def to_json(self) -> dict:
        """The user object of users.info / users.list."""
        real_name = self.real_name or self.name.capitalize()
        profile = {
            "display_name": self.display_name,
            "display_name_normalized": self.display_name,
            "real_name": real_name,
            "real_name_normalized": real_name,
            "team": TEAM_ID,
        }
        if self.bot_id:
            profile["bot_id"] = self.bot_id
        return {
            "id": self.id,
            "team_id": TEAM_ID,
            "name": self.name,
            "real_name": real_name,
            "deleted": False,
            "is_bot": self.bot_id is not None,
            "is_admin": False,
            "is_app_user": False,
            "tz": "UTC",
            "tz_offset": 0,
            "profile": profile,
        }


@dataclass
class Channel:
    """A conversation: public or private channel, DM (`im_user` set) or group DM."""

    id: str
    name: str
    is_private: bool = False
    members: list[str] = field(default_factory=list)
    im_user: str | None = None
    is_mpim: bool = False
    created: int = CREATED

    @property
    def kind(self) -> str:
        """The conversations.list `types` value this conversation belongs to."""
        if self.im_user is not None:
            return "im"
        if self.is_mpim:
            return "mpim"
        return "private_channel" if self.is_private else "public_channel"

    @property
    def channel_type(self) -> str:
        """The `channel_type` of an Events API message event in this conversation."""
        return {"im": "im", "mpim": "mpim", "private_channel": "group"}.get(self.kind, "channel")

    def to_json(self) -> dict:
        """The conversation object of conversations.info / conversations.list."""
        if self.im_user is not None:
            return {
                "id": self.id,
                "created": self.created,
                "is_im": True,
                "is_org_shared": False,
                "user": self.im_user,
                "is_user_deleted": False,
                "priority": 0,
            }
        return {
            "id": self.id,
            "name": self.name,
            "name_normalized": self.name,
            "is_channel": not self.is_private and not self.is_mpim,
            "is_group": self.is_private and not self.is_mpim,
            "is_im": False,
            "is_mpim": self.is_mpim,
            "is_private": self.is_private or self.is_mpim,
            "is_archived": False,
            "is_general": self.name == "general",
            "is_member": BOT_USER_ID in self.members,
            "is_shared": False,
            "is_org_shared": False,
            "created": self.created,
            "creator": "U1ALICE",
            "num_members": len(self.members),
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
        }


class CursorError(ValueError):
    """A pagination cursor the fake did not hand out."""


def paginate(items: Sequence[T], cursor: str | None, limit: int) -> tuple[list[T], str]:
    """One page of `items` from `cursor` on, and the cursor of the next page ("" at the end)."""
    start = 0
    if cursor:
        try:
            kind, _, offset = base64.b64decode(cursor, validate=True).decode().partition(":")
            start = int(offset)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise CursorError(cursor) from None
        if kind != "offset" or not 0 <= start <= len(items):
            raise CursorError(cursor)
    end = start + limit
    next_cursor = base64.b64encode(f"offset:{end}".encode()).decode() if end < len(items) else ""
    return list(items[start:end]), next_cursor


class TsClock:
    """Hands out Slack message timestamps ("1700000000.000100"): unique and increasing."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._last_us = 0

    def next_ts(self) -> str:
        us = max(int(self._clock() * 1_000_000), self._last_us + 1)
        self._last_us = us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"


class Workspace:
    """The team the fake serves: a bot, alice, bob, #general, #random, #secret and alice's DM."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.clock = TsClock()
        self.add_user(BOT_USER_ID, BOT_NAME, display_name=BOT_NAME, bot_id=BOT_ID)
        self.add_user("U1ALICE", "alice", display_name="Alice")
        self.add_user("U2BOB", "bob", display_name="Bob")
        everyone = [BOT_USER_ID, "U1ALICE", "U2BOB"]
        self.add_channel("C1GENERAL", "general", members=everyone, created=CREATED)
        self.add_channel("C2RANDOM", "random", members=["U1ALICE", "U2BOB"], created=CREATED)
        self.add_channel("G3SECRET", "secret", is_private=True,
                         members=[BOT_USER_ID, "U1ALICE"], created=CREATED)
        self.open_dm("U1ALICE")

    def next_ts(self) -> str:
        return self.clock.next_ts()

    def add_user(self, user_id: str, name: str, *, display_name: str | None = None,
                 bot_id: str | None = None) -> User:
        user = User(user_id, name, display_name if display_name is not None else name,
                    bot_id=bot_id)
        self.users[user_id] = user
        return user

    def add_channel(self, channel_id: str, name: str, *, is_private: bool = False,
                    members: list[str] | None = None, created: int | None = None) -> Channel:
        channel = Channel(channel_id, name.lstrip("#"), is_private, list(members or []),
                          created=int(time.time()) if created is None else created)
        self.channels[channel_id] = channel
        return channel

    def rename_channel(self, channel_id: str, new_name: str) -> Channel:
        channel = self.channels[channel_id]
        channel.name = new_name.lstrip("#")
        return channel

    def open_dm(self, user_id: str) -> tuple[Channel, bool]:
        """The bot's DM with `user_id` (KeyError if no such user), and whether it existed."""
        if user_id not in self.users:
            raise KeyError(user_id)
        dm_id = "D" + user_id[1:]
        existing = self.channels.get(dm_id)
        if existing is not None:
            return existing, True
        dm = Channel(dm_id, user_id, members=[BOT_USER_ID, user_id], im_user=user_id)
        self.channels[dm_id] = dm
        return dm, False

    def open_mpim(self, user_ids: list[str]) -> tuple[Channel, bool]:
        """The group DM of the bot and `user_ids`, and whether it existed."""
        for user_id in user_ids:
            if user_id not in self.users:
                raise KeyError(user_id)
        members = sorted(set(user_ids) | {BOT_USER_ID})
        mpim_id = "G" + "".join(m[1:] for m in members).upper()
        existing = self.channels.get(mpim_id)
        if existing is not None:
            return existing, True
        name = "mpdm-" + "--".join(self.users[m].name for m in members) + "-1"
        mpim = Channel(mpim_id, name, is_private=True, members=members, is_mpim=True)
        self.channels[mpim_id] = mpim
        return mpim, False

    def resolve_channel(self, ref: object) -> Channel | None:
        """The conversation a `channel` argument names: an id, `#name`, or a user id (their DM)."""
        if not isinstance(ref, str) or not ref:
            return None
        channel = self.channels.get(ref)
        if channel is not None:
            return channel
        if ref.startswith("#"):
            name = ref[1:]
            return next((c for c in self.channels.values()
                         if c.name == name and c.im_user is None), None)
        if ref in self.users:
            return self.open_dm(ref)[0]
        return None

    def conversations(self, types: list[str]) -> list[Channel]:
        return [c for c in self.channels.values() if c.kind in types]

    def channel_event(self, channel: Channel) -> dict:
        """The `channel` object carried by channel_created / channel_rename events."""
        return {"id": channel.id, "name": channel.name, "created": channel.created,
                "creator": "U1ALICE", "is_private": channel.is_private}
