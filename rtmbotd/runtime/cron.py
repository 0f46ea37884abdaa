"""Cron expressions for `crontable` and `Job`, evaluated by cronsim in a time zone.

cronsim follows Debian cron, DST included: a job at a fixed time of day runs once
when that time is skipped (at the first minute after the jump) or repeated (at its
first occurrence). We own only which expressions we accept (five fields, the
crontab(5) @-names) and the zone; parsing and stepping through time are cronsim's.
"""
from __future__ import annotations

import functools
import io
import logging
import os
import reprlib
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

log = logging.getLogger(__name__)

# crontab(5)'s names for common schedules; @reboot has no meaning for a job of a plugin.
NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELDS = "minute hour day-of-month month day-of-week"
# Every value of every field listed is about 360 characters. cronsim reads the text
# again for each next time, on the daemon's loop: 1.7 MB of list took 0.6 s.
MAX_LENGTH = 1000
_SHOWN = reprlib.Repr()       # error texts show the start of a huge expression, not all of it
_SHOWN.maxstring, _SHOWN.maxother = 80, 80
_LOCALTIME = "/etc/localtime"


class CronSyntaxError(ValueError):
    """A crontable entry or Job whose expression is not five-field cron; names the expression."""


@dataclass(frozen=True)
class CronSchedule:
    """A validated five-field expression (`text` as written, `fields` as cronsim reads it)."""

    text: str
    fields: str

    def next_after(self, wall: float, zone: tzinfo) -> float | None:
        """The first cron time strictly after wall time `wall` in `zone` (None: never again)."""
        start = datetime.fromtimestamp(wall, zone)
        times = CronSim(self.fields, start)
        # Debian's rule for a repeated hour makes cronsim step in local time: from the
        # second pass of 01:xx it may answer the first pass, which is already over.
        for _ in range(4):
            try:
                found = next(times).timestamp()
            except StopIteration:
                return None
            if found > wall:
                return found
        return None

    def __str__(self) -> str:
        return self.text


def parse(text: object) -> CronSchedule:
    """Validate `text` as a cron expression (raises CronSyntaxError naming it)."""
    if not isinstance(text, str):
        raise CronSyntaxError(f"cron expression must be text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise CronSyntaxError(f"cron expression {shown(text)}: {len(text)} characters, at most {MAX_LENGTH}")
    fields = " ".join(text.split())
    if fields.startswith("@"):
        if fields.lower() not in NICKNAMES:
            raise CronSyntaxError(f"cron expression {shown(text)}: unknown name (known: {', '.join(NICKNAMES)})")
        fields = NICKNAMES[fields.lower()]
    parts = fields.split()
    if len(parts) != 5:
        raise CronSyntaxError(f"cron expression {shown(text)}: has {len(parts)} field(s), needs 5 ({FIELDS})")
    # cronsim also reads Quartz's L, W and # (last day, nearest weekday, nth weekday);
    # Debian cron does not, and a crontable should mean what it means in a crontab.
    day, weekday = parts[2].upper(), parts[4].upper()
    if "L" in day or "W" in day or "#" in weekday or "L" in weekday:
        raise CronSyntaxError(f"cron expression {shown(text)}: L, W and # are not standard cron "
                              f"(Debian cron has no 'last day' or 'nth weekday')")
    try:
        # An early moment: cronsim checks the fields as it reads them, and a day that
        # never comes (Feb 30) shows as no next time within its 50 years.
        found = next(CronSim(fields, datetime(2000, 1, 1, tzinfo=timezone.utc)), None)
    except CronSimError as exc:
        raise CronSyntaxError(f"cron expression {shown(text)}: {str(exc).lower()} field") from None
    if found is None:
        raise CronSyntaxError(f"cron expression {shown(text)}: never matches a date")
    return CronSchedule(text, fields)


def shown(value: object) -> str:
    """repr() cut short for error texts (a huge list, a 400-digit interval)."""
    return _SHOWN.repr(value)


def zone_named(name: str) -> tzinfo:
    """The IANA zone `name` (raises ValueError saying why not)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name like Europe/Berlin or UTC)") from None


def system_zone() -> tzinfo:
    """The system's time zone: $TZ when it names one, else /etc/localtime, else UTC.

    A zone object with its DST rules, not today's fixed offset, so a job planned in
    March still runs at 09:00 in July.
    """
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return zone_named(name)
        except ValueError:
            log.warning("TZ=%s is no known time zone; using %s", name, _LOCALTIME)
    try:
        with open(_LOCALTIME, "rb") as file:
            return _zone_from(file.read())
    except (OSError, ValueError):
        return timezone.utc


@functools.lru_cache(maxsize=4)
def _zone_from(data: bytes) -> tzinfo:
    """One zone object per /etc/localtime content: zones compare by identity, and a
    reload that finds the same zone must not plan every cron job again."""
    return ZoneInfo.from_file(io.BytesIO(data), key="localtime")
