"""`TestBot`: the real rtmbotd engine, in-process, wired to a FakeSlack."""
from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable

import yaml

from rtmbotd.config import load_config
from rtmbotd.testing.waiting import wait_until


class TestBot:
    """Runs rtmbotd on a thread against `fake`; `say()` sends a message and returns replies.

    `plugins` is a list of plugin folders (each becomes `plugins/<folder name>`), or give
    `base_path`, a folder that has `plugins/` in it. `settings` adds config keys (plugin
    sections, RATE_LIMIT, ...). `mode` is "rtm" or "socket_mode".
    """

    __test__ = False   # not a pytest test class

    def __init__(self, fake: Any, *, plugins: Iterable[str | os.PathLike] = (), base_path: str | None = None,
                 mode: str = "rtm", settings: dict | None = None, workdir: str | None = None) -> None:
        self.fake = fake
        self.mode = mode
        self._own_dir = None if workdir else tempfile.TemporaryDirectory(prefix="rtmbotd-test-")
        self.workdir = Path(workdir or self._own_dir.name)
        if base_path is None:
            (self.workdir / "plugins").mkdir(parents=True, exist_ok=True)
            for folder in plugins:
                folder = Path(folder).resolve()
                link = self.workdir / "plugins" / folder.name
                if not link.exists():
                    link.symlink_to(folder, target_is_directory=True)
            base_path = str(self.workdir)
        conf = {"SLACK_TOKEN": "xoxb-test", "SLACK_API_URL": fake.url, "BASE_PATH": str(Path(base_path).resolve()),
                "RATE_LIMIT": 0, "STORE_URL": f"sqlite:///{self.workdir / 'store.sqlite'}"}
        if mode == "socket_mode":
            conf["SLACK_APP_TOKEN"] = "xapp-test"
        conf.update(settings or {})
        self.config_path = self.workdir / "rtmbot.conf"
        self.config_path.write_text(yaml.safe_dump(conf))
        self.daemon = None
        self._thread: threading.Thread | None = None
        self.exit_code: int | None = None

    def start(self, timeout: float = 10.0) -> "TestBot":
        from rtmbotd.daemon import Daemon
        config = load_config(self.config_path, env={})
        self.daemon = Daemon(config, install_signals=False)
        opened = self.fake.connections_opened

        def run() -> None:
            self.exit_code = asyncio.run(self.daemon.run())

        self._thread = threading.Thread(target=run, name="rtmbotd-testbot", daemon=True)
        self._thread.start()
        self.fake.wait_until(lambda: self.fake.connections_opened > opened
                             and self.fake.open_connections() > 0, timeout=timeout)
        self.wait_linked(timeout)
        return self

    def wait_linked(self, timeout: float = 10.0) -> None:
        """Until the engine has its link to Slack (hello received)."""
        def linked() -> bool:
            conn = self.daemon.connector
            return conn is not None and conn.link is not None

        wait_until(linked, timeout, "the bot to connect to the fake Slack", interval=0.005)

    def say(self, text: str, *, channel: str = "D1ALICE", user: str = "U1ALICE", replies: int = 1,
            timeout: float = 5.0) -> list[str]:
        """Send `text` as `user` and return the texts of the next `replies` bot messages."""
        before = len(self.fake.sent_messages())
        self.fake.message(text, channel=channel, user=user)
        if replies == 0:
            return []
        msgs = self.fake.wait_for_messages(before + replies, timeout=timeout)
        return [m.get("text") for m in msgs[before:]]

    @property
    def sent(self) -> list[dict]:
        return self.fake.sent_messages()

    def reload(self) -> None:
        self.daemon.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self._thread is not None and self._thread.is_alive():
            self.daemon.send_signal(signal.SIGTERM)
            self._thread.join(timeout)
        if self._own_dir is not None:
            self._own_dir.cleanup()
            self._own_dir = None
        return self.exit_code

    def __enter__(self) -> "TestBot":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
