"""The processes a benchmark starts: their environment, logs, notify socket and stop.

Every child talks to 127.0.0.1 only: proxy variables are removed and NO_PROXY names the
loopback, so no library can route the fake Slack's traffic anywhere else.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import yaml

import rtmbotd.testing.notify_listener

REPO = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 10.0
_DROPPED_ENV = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                "INVOCATION_ID", "JOURNAL_STREAM", "SLACK_TOKEN", "SLACK_APP_TOKEN",
                "SLACK_API_URL", "STORE_URL", "CREDENTIALS_DIRECTORY", "PYTHONPATH",
                "PYTHONHOME", "VIRTUAL_ENV"}


_child_cpus: set[int] | None = None


def pin_cpus(enabled: bool = True) -> str:
    """Keep this process (the driver and the fake) on one CPU and every child on another.

    Call before any thread starts: threads inherit the affinity of the one that made them.
    Without it, where the scheduler happens to put each process on a 2-core VM moves a
    floor's median by 2× from run to run; pinned, every system gets one core of its own,
    as it would with Slack on another machine. Returns a line saying what was done.
    """
    global _child_cpus
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled:
        return "not pinned (--no-pin): the scheduler places every process"
    if len(cpus) < 2:
        return f"not pinned: only CPU {cpus} available"
    os.sched_setaffinity(0, {cpus[0]})
    _child_cpus = {cpus[1]}
    return f"benchmark and fake Slack pinned to CPU {cpus[0]}, the system under test to CPU {cpus[1]}"


class BenchError(RuntimeError):
    """A system under test did not do what the benchmark needs; the column shows why."""


def child_env(**extra: str) -> dict[str, str]:
    """This environment without proxies or service variables, with NO_PROXY=loopback."""
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and k not in _DROPPED_ENV}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class NotifyListener(rtmbotd.testing.notify_listener.NotifyListener):
    """rtmbotd.testing's stand-in for NOTIFY_SOCKET; a wait that times out is a BenchError."""

    def wait_for(self, key: str, value: str | None = None, *, after: int = 0, timeout: float = 20.0) -> int:
        try:
            return super().wait_for(key, value, after=after, timeout=timeout)
        except TimeoutError as exc:
            raise BenchError(str(exc)) from None


class Child:
    """One process under test, its output in a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = workdir
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.spawned_at = 0.0

    def start(self) -> "Child":
        log = open(self.log_path, "ab")
        try:
            self.spawned_at = time.monotonic()
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.workdir,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        finally:
            log.close()
        if _child_cpus:
            os.sched_setaffinity(self.proc.pid, _child_cpus)   # before it starts any thread
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError(f"{self.name} was not started")
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited with status {self.proc.returncode}: "
                             f"{self.log_tail(400)!r}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode


def rtmbotd_argv() -> list[str]:
    """The rtmbotd console script beside this interpreter, else `python -m rtmbotd`."""
    script = Path(sys.executable).parent / "rtmbotd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rtmbotd"]


class RtmbotdProcess(Child):
    """The real `rtmbotd` with its own config, plugin folders and NOTIFY_SOCKET."""

    def __init__(self, workdir: Path, api_url: str, mode: str, plugin_dirs: Sequence[Path],
                 settings: dict | None = None, name: str = "rtmbotd",
                 argv: Sequence[str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        plugins = workdir / "plugins"
        plugins.mkdir(exist_ok=True)
        for folder in plugin_dirs:
            shutil.copytree(folder, plugins / folder.name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        config = {"SLACK_TOKEN": "xoxb-bench", "SLACK_API_URL": api_url,
                  "RATE_LIMIT": 0,   # the per-channel limit would pace a burst to 1 msg/s
                  "BASE_PATH": str(workdir)}
        if mode == "socket_mode":
            config["SLACK_APP_TOKEN"] = "xapp-bench"
        config.update(settings or {})
        self.config_path = workdir / "rtmbot.conf"
        self.config_path.write_text(yaml.safe_dump(config))
        self.notify = NotifyListener(workdir / "notify.sock")
        super().__init__(name, [*(argv or rtmbotd_argv()), "-c", str(self.config_path)], workdir,
                         child_env(NOTIFY_SOCKET=self.notify.path))

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Monotonic time READY=1 arrived for the first start."""
        try:
            return self.notify.at(self.notify.wait_for("READY", "1", timeout=timeout))
        except BenchError:
            self.check_alive()
            raise

    def stop(self) -> int | None:
        try:
            return super().stop()
        finally:
            self.notify.close()
