"""python-rtmbot 0.4 class-style plugin API (`Plugin`, `Job`), so 0.4 plugins run unchanged.

`from rtmbot.core import Plugin, Job` keeps working: when no real `rtmbot` package is
installed, the plugin loader aliases `rtmbot.core` to this module.
"""
from __future__ import annotations

import time
from typing import Any


class Plugin:
    """Base class of a class-style plugin; rtmbotd calls its `process_<event>` methods."""

    def __init__(self, name: str | None = None, slack_client: Any = None,
                 plugin_config: dict | None = None) -> None:
        self.name = name if name is not None else type(self).__name__
        self.plugin_config = plugin_config if plugin_config is not None else {}
        self.slack_client = slack_client
        self.jobs: list[Job] = []
        self.debug = bool(self.plugin_config.get("DEBUG", False))
        self.outputs: list = []
        # Set by rtmbotd before register_jobs() runs (the per-plugin store).
        self.store: Any = getattr(self, "store", None)

    def register_jobs(self) -> None:
        """Override to append `Job` instances to `self.jobs`."""
        raise NotImplementedError


class Job:
    """A periodic job of a class-style plugin: `run(slack_client)` returns outputs.

    `interval` is seconds (`Job(900)`, as in 0.4) or a five-field cron expression
    (`Job("*/15 * * * *")`, run at those times in `TIMEZONE`); the loader checks it.
    """

    def __init__(self, interval: float | str) -> None:
        self.interval = interval
        self.lastrun = 0.0

    def __str__(self) -> str:
        return "{} {} {}".format(self.__class__, self.interval, self.lastrun)

    __repr__ = __str__

    def check(self) -> bool:
        """True when the job is due again (0.4 API): `interval` seconds have passed since
        the last run, or one of the cron expression's times (system time zone)."""
        if isinstance(self.interval, str):
            from rtmbotd.runtime.cron import parse, system_zone
            due = parse(self.interval).next_after(self.lastrun, system_zone())
            return due is not None and due <= time.time()
        return self.lastrun + self.interval < time.time()

    def run(self, slack_client: Any) -> list:
        raise NotImplementedError


class UnknownChannel(Exception):
    """Kept for 0.4 compatibility: raised by nothing in rtmbotd."""
