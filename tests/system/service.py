"""The rtmbotd unit inside a system-test container, and the fake Slack it talks to.

What every system-test module needs: the unit's properties and settling, installing the
.deb from the staging bind, the config for the fake Slack, and asking the bot (`pings`).
The fake Slack runs on the host's loopback, which every container shares.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from checks import expect
from nspawn import Container, die_with_parent, wait_until

REPO = Path(__file__).resolve().parents[2]
UNIT = "rtmbotd.service"
CONF = "/etc/rtmbot/rtmbot.conf"
PLUGINS = "/etc/rtmbot/plugins"
STAGE = "/srv/rtmbotd-test"  # read-only bind of the host's staging dir inside the container
# What the container needs beyond the .deb's own Depends (which are added at run time).
# man-db: `systemd-analyze verify` runs `man` to check the unit's Documentation=.
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "procps", "python3", "adduser",
                 "libpam-systemd", "man-db"]
TEST_PLUGINS = ("echo", "ping", "tick")  # tests/system/plugins; the others are the package's examples
BOT_TOKEN = "xoxb-system-test"
APP_TOKEN = "xapp-system-test"


class FakeSlackProcess:
    """`python -m rtmbotd.testing --port 0` on the host's loopback, stopped at the end."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.pop(var, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtmbotd.testing", "--port", "0",
             "--bot-token", BOT_TOKEN, "--app-token", APP_TOKEN],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env, cwd=REPO, preexec_fn=die_with_parent)
        self.url = self._read_url(timeout=30)
        from rtmbotd.testing.fakeslack import FakeSlackClient
        self.client = FakeSlackClient(self.url)

    def _read_url(self, timeout: float) -> str:
        found: list[str] = []

        def reader() -> None:
            for line in self.proc.stdout:
                if line.startswith("FAKE_SLACK_URL="):
                    found.append(line.strip().split("=", 1)[1])
                    return

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        thread.join(timeout)
        if not found:
            self.stop()
            error = (self.proc.stderr.read() or "")[-2000:]
            raise RuntimeError(f"fake Slack did not start: {error}")
        return found[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def show(c: Container, *props: str) -> dict[str, str]:
    out = c.run("systemctl", "show", UNIT, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def settle(c: Container, timeout: float = 60) -> dict[str, str]:
    """The unit's state once no job is running and it is not activating/reloading."""
    def settled() -> dict[str, str] | None:
        props = show(c, "ActiveState", "SubState", "MainPID", "StatusText", "NRestarts",
                     "Result", "ExecMainStatus")
        busy = props["ActiveState"] in ("activating", "deactivating", "reloading")
        return None if busy else props
    return wait_until(settled, timeout=timeout, what=f"{UNIT} to settle", interval=0.2)


def config_text(url: str, *, socket_mode: bool = False, extra: str = "") -> str:
    return (f'SLACK_TOKEN: "{BOT_TOKEN}"\n'
            f'SLACK_API_URL: "{url}"\n'
            + (f'SLACK_APP_TOKEN: "{APP_TOKEN}"\n' if socket_mode else "")
            + "DEBUG: true\nRATE_LIMIT: 0\n" + extra)


def write_config(c: Container, text: str) -> None:
    c.write_file(CONF, text, mode="0640", owner="root:rtmbot")


def add_plugin(c: Container, name: str) -> None:
    source = f"{STAGE}/plugins" if name in TEST_PLUGINS else "/usr/share/rtmbotd/plugins"
    c.sh(f"cp -r {source}/{name} {PLUGINS}/ && "
         f"chown -R root:rtmbot {PLUGINS}/{name} && "
         f"chmod -R g+rX,o-rwx {PLUGINS}/{name}")


def is_installed(c: Container) -> bool:
    status = c.run("dpkg-query", "-W", "-f=${db:Status-Status}", "rtmbotd", check=False)
    return status.stdout.strip() == "installed"


def apt_install(c: Container, *args: str) -> subprocess.CompletedProcess:
    return c.run("apt-get", "install", "-y", "--no-install-recommends", *args,
                 f"{STAGE}/rtmbotd.deb", check=False, timeout=300)


def restarted(c: Container, pid: str, restarts: int) -> Callable[[], dict[str, str] | None]:
    """A wait_until predicate: systemd restarted the unit by itself and it is active again."""
    def check() -> dict[str, str] | None:
        now = show(c, "MainPID", "NRestarts", "ActiveState", "SubState")
        fresh = now["MainPID"] not in (pid, "0") and int(now["NRestarts"]) > restarts
        return now if fresh and now["ActiveState"] == "active" else None
    return check


_asked = iter(range(1, 1_000_000))


def unique() -> int:
    """A number not handed out before in this session, so a late answer cannot count."""
    return next(_asked)


def ask(fake: Any, text: str, expect_text: Callable[[str], bool], timeout: float = 15,
        channel: str = "D1ALICE", resend_every: float = 3) -> str:
    """Send `text` as Alice until a new bot message in `channel` satisfies `expect_text`.

    Resent every few seconds: after a (re)start or a reload the daemon may not be listening
    yet (on systemd 252 `systemctl reload` returns once SIGHUP is sent, not once swapped).
    """
    seen = len(fake.sent_messages(channel))
    sent_at = [float("-inf")]

    def said() -> list[str]:
        return [m.get("text") or "" for m in fake.sent_messages(channel)[seen:]]

    def answered() -> str | None:
        if time.monotonic() - sent_at[0] >= resend_every:
            fake.message(text, channel=channel)
            sent_at[0] = time.monotonic()
        return next((answer for answer in said() if expect_text(answer)), None)

    return wait_until(answered, timeout=timeout, interval=0.2,
                      what=lambda: f"a matching reply to {text!r}; bot said {said()!r}")


def replies(fake: Any, text: str, expect_text: Callable[[str], bool], what: str,
            timeout: float = 15) -> str:
    try:
        answer = ask(fake, text, expect_text, timeout=timeout)
    except TimeoutError as exc:
        expect(False, what, str(exc))
    expect(True, what, repr(answer))
    return answer


def pings(fake: Any, what: str, timeout: float = 15) -> str:
    """`ping N` answered by `pong N` (N unique, so a late answer cannot count)."""
    n = unique()
    return replies(fake, f"ping {n}", lambda t: t == f"pong {n}", what, timeout=timeout)
