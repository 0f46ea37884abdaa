"""Drive the real `rtmbotd` process: config and plugins on disk, a real NOTIFY_SOCKET,
real signals, and the fake Slack over real sockets."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from rtmbotd.testing.notify_listener import NotifyListener
from rtmbotd.testing.waiting import wait_until  # noqa: F401  (re-exported for the e2e tests)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "plugins"
REPO = Path(__file__).resolve().parents[2]


def rtmbotd_command() -> list[str]:
    script = Path(sys.executable).parent / "rtmbotd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rtmbotd"]


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                                             "SLACK_TOKEN", "SLACK_APP_TOKEN", "SLACK_API_URL",
                                                             "JOURNAL_STREAM", "INVOCATION_ID", "STORE_URL",
                                                             "CREDENTIALS_DIRECTORY")}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env



class Rtmbotd:
    """A real rtmbotd process with its own config dir, plugins and log file.

    Its waits have generous deadlines (a shared, loaded machine is slow; only a failure
    waits that long), never a limit on how fast something must be: that is bench/'s job.
    """

    def __init__(self, tmp_path: Path, fake, *, mode: str = "rtm", settings: dict | None = None,
                 fixtures: tuple[str, ...] = (), plugins: dict[str, str] | None = None,
                 notify: bool = True, env: dict | None = None) -> None:
        self.dir = tmp_path
        self.fake = fake
        self.mode = mode
        self.conf = tmp_path / "rtmbot.conf"
        self.plugins_dir = tmp_path / "plugins"
        self.plugins_dir.mkdir(exist_ok=True)
        self.log_path = tmp_path / "stderr.log"
        self.settings = {"SLACK_TOKEN": "xoxb-e2e", "SLACK_API_URL": fake.url if fake else "http://127.0.0.1:9/api/",
                         "RATE_LIMIT": 0, "STORE_URL": f"sqlite:///{tmp_path / 'store.sqlite'}"}
        if mode == "socket_mode":
            self.settings["SLACK_APP_TOKEN"] = "xapp-e2e"
        self.settings.update(settings or {})
        for case in fixtures:
            for folder in (FIXTURES / case / "plugins").iterdir():
                self.add_plugin_dir(folder)
        for name, code in (plugins or {}).items():
            self.write_plugin(name, code)
        self.write_config()
        self.notify = NotifyListener(tmp_path / "notify.sock") if notify else None
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None

    def add_plugin_dir(self, folder: Path) -> None:
        import shutil
        shutil.copytree(folder, self.plugins_dir / folder.name, dirs_exist_ok=True)

    def write_plugin(self, name: str, code: str, filename: str | None = None) -> Path:
        folder = self.plugins_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (filename or f"{name}.py")
        path.write_text(textwrap.dedent(code))
        return path

    def write_config(self, text: str | None = None) -> None:
        self.conf.write_text(text if text is not None else yaml.safe_dump(self.settings))

    def start(self, *args: str, wait_ready: bool = True, wait_connected: bool = True) -> "Rtmbotd":
        env = clean_env(**self.extra_env)
        if self.notify is not None:
            env["NOTIFY_SOCKET"] = self.notify.path
        self._log = open(self.log_path, "ab")
        opened = self.fake.connections_opened if self.fake else 0
        self.proc = subprocess.Popen(rtmbotd_command() + ["-c", str(self.conf), *args], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.dir)
        if wait_ready and self.notify is not None:
            self.notify.wait_for("READY", "1", timeout=60)
        if wait_connected and self.fake:
            self.fake.wait_until(lambda: self.fake.connections_opened > opened, timeout=60)
            self.wait_log(r"connected to Slack", timeout=60)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 30.0, count: int = 1) -> str:
        rx = re.compile(pattern)
        wait_until(lambda: len(rx.findall(self.log())) >= count, timeout,
                   lambda: f"log line /{pattern}/ x{count}; the log ends:\n{self.log()[-3000:]}")
        return self.log()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def say(self, text: str, *, channel: str = "D1ALICE", user: str = "U1ALICE", replies: int = 1,
            timeout: float = 30.0) -> list[str]:
        before = len(self.fake.sent_messages())
        self.fake.message(text, channel=channel, user=user)
        msgs = self.fake.wait_for_messages(before + replies, timeout=timeout)
        return [m["text"] for m in msgs[before:]]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.notify is not None:
            self.notify.close()
        if getattr(self, "_log", None):
            self._log.close()
