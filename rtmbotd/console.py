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


class Prompt:
    """The input prompt, redrawn after a reply is printed over it."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.interactive = sys.stdin.isatty()

    @property
    def text(self) -> str:
        return f"you ({self.channel})> " if self.interactive else ""


def _print_replies(fake, names: dict, stop: threading.Event, prompt: Prompt) -> None:
    seen = 0
    while not stop.is_set():
        try:
            msgs = fake.wait_for_messages(seen + 1, timeout=0.5)
        except TimeoutError:
            continue
        lines = [f"bot → {names.get(m['channel'], m['channel'])}: {m.get('text') or m.get('blocks')}"
                 for m in msgs[seen:]]
        seen = len(msgs)
        if prompt.interactive:    # over the prompt line, then the prompt again
            sys.stdout.write("\r\033[K" + "\n".join(lines) + "\n" + prompt.text)
        else:
            sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def _read_input(fake, prompt: Prompt, quiet: threading.Event) -> None:
    fake.wait_for_connections(1, timeout=30.0)
    while True:
        try:
            line = input(prompt.text)
        except EOFError:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line.startswith("/join "):
            target = line.split(None, 1)[1].lstrip("#")
            prompt.channel = {"general": "C1GENERAL", "random": "C2RANDOM"}.get(target, target)
            continue
        fake.message(line, channel=prompt.channel)
    # Let the replies of the last lines arrive before ending.
    quiet.wait(1.5)
    os.kill(os.getpid(), signal.SIGTERM)


def run_console(config: Config, *, channel: str = "D1ALICE", overrides: dict | None = None,
                early_signals: list[int] | None = None) -> int:
    from rtmbotd.daemon import Daemon
    from rtmbotd.logsetup import Logging
    from rtmbotd.testing.fakeslack import FakeSlack

    fake = FakeSlack().start()
    try:
        forced = dict(overrides or {})
        forced.update(slack_token="xoxb-console", app_token=None, connection="rtm",
                      api_url=fake.url, daemon=False, logfile=None, rate_limit=0.0)
        config = dataclasses.replace(config, **forced)
        logs = Logging(quiet=True)
        logs.configure(debug=config.debug, logfile=None)
        print(f"rtmbotd console: plugins from {config.plugins_dir}, fake Slack at {fake.url}")
        print(HELP, flush=True)
        names = {"D1ALICE": "you (DM)", "C1GENERAL": "#general", "C2RANDOM": "#random"}
        stop = threading.Event()
        prompt = Prompt(channel)
        threading.Thread(target=_print_replies, args=(fake, names, stop, prompt), daemon=True).start()
        threading.Thread(target=_read_input, args=(fake, prompt, threading.Event()), daemon=True).start()
        daemon = Daemon(config, logging_=logs, overrides=forced, early_signals=early_signals)
        code = asyncio.run(daemon.run())
        stop.set()
        return code
    finally:
        fake.stop()
