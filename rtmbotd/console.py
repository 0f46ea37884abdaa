"""`rtmbotd console`: the real engine on a built-in fake Slack, chatted with in a terminal."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
import threading

from rtmbotd.config import Config

log = logging.getLogger(__name__)

HELP = """\
Type a message and press Enter: it reaches the plugins as a Slack message from
alice. Lines starting with '/join CHANNEL' switch channel (D1ALICE is a DM,
C1GENERAL is #general); Ctrl-D or /quit ends the session."""


def _print_replies(fake, names: dict, stop: threading.Event) -> None:
    seen = 0
    while not stop.is_set():
        try:
            msgs = fake.wait_for_messages(seen + 1, timeout=0.5)
        except TimeoutError:
            continue
        for msg in msgs[seen:]:
            where = names.get(msg["channel"], msg["channel"])
            print(f"bot → {where}: {msg.get('text') or msg.get('blocks')}", flush=True)
        seen = len(msgs)


def _read_input(fake, channel: str, quiet: threading.Event) -> None:
    interactive = sys.stdin.isatty()
    current = channel
    fake.wait_for_connections(1, timeout=30.0)
    while True:
        try:
            line = input(f"you ({current})> " if interactive else "")
        except EOFError:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line.startswith("/join "):
            current = line.split(None, 1)[1].lstrip("#")
            current = {"general": "C1GENERAL", "random": "C2RANDOM"}.get(current, current)
            continue
        fake.message(line, channel=current)
    # Let the replies of the last lines arrive before ending.
    quiet.wait(1.5)
    os.kill(os.getpid(), signal.SIGTERM)


def run_console(config: Config, *, channel: str = "D1ALICE", overrides: dict | None = None) -> int:
    from rtmbotd.daemon import Daemon
    from rtmbotd.logsetup import Logging
    from rtmbotd.testing.fake_slack import FakeSlack

    fake = FakeSlack().start()
    try:
        forced = dict(overrides or {})
        forced.update(slack_token="xoxb-console", app_token=None, connection="rtm",
                      api_url=fake.url, daemon=False, logfile=None, rate_limit=0.0)
        config = dataclasses.replace(config, **forced)
        logs = Logging()
        logs.configure(debug=config.debug, logfile=None)
        if not config.debug:
            logging.getLogger().setLevel(logging.WARNING)
        print(f"rtmbotd console: plugins from {config.plugins_dir}, fake Slack at {fake.url}")
        print(HELP, flush=True)
        names = {"D1ALICE": "you (DM)", "C1GENERAL": "#general", "C2RANDOM": "#random"}
        stop = threading.Event()
        threading.Thread(target=_print_replies, args=(fake, names, stop), daemon=True).start()
        threading.Thread(target=_read_input, args=(fake, channel, threading.Event()), daemon=True).start()
        daemon = Daemon(config, logging_=logs, overrides=forced)
        code = asyncio.run(daemon.run())
        stop.set()
        return code
    finally:
        fake.stop()
