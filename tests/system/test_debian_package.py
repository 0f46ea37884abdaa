"""The Debian package under a real systemd: build, install, run, reload, restarts, purge.

One bookworm container (systemd-nspawn, overlay over a cached mmdebstrap tree) is booted
for the module, and the tests run in file order, but none relies on what an earlier one
left: each first brings the container to the state it starts from (`ensure_fresh_install`,
`ensure_installed`, `ensure_bot`), so `-k` can pick any of them. The fake Slack runs on
the host's loopback, which the container shares. Each check is printed with its result,
even under -q. Nothing here asserts how long something took: waits have generous
deadlines, and durations are only printed.
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))  # whatever pytest's import mode, nspawn.py sits beside this file

from checks import expect, say, step  # noqa: E402
from nspawn import Container, run_host, wait_until  # noqa: E402
from service import (BOT_TOKEN, CONF, PLUGINS, STAGE, UNIT, add_plugin, apt_install,  # noqa: E402
                     ask, config_text, is_installed, pings, replies, restarted, settle, show,
                     unique, write_config)

DROPINS = "/etc/systemd/system/rtmbotd.service.d"
SECURITY_LIMIT = 1.5
BOT_PLUGINS = ("counter", "ping")   # what ensure_bot() leaves installed


# -- fixtures (deb, stage, rootfs and fake are in conftest.py) -----------------------------------


@pytest.fixture(scope="module")
def container(rootfs: Path, stage: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    started = time.monotonic()
    console = tmp_path_factory.mktemp("nspawn") / "console.log"
    with Container(rootfs, bind_ro={stage: STAGE}, log_path=console) as c:
        state = c.wait_running(timeout=90)
        failed = c.failed_units()
        # 'degraded' only means some unit failed; in a container that is typically a unit
        # needing hardware or a writable /sys, which says nothing about rtmbotd.
        say(f"  container booted in {time.monotonic() - started:.0f}s: {state}"
              + (f" (failed units: {', '.join(failed)})" if failed else ""))
        yield c


@pytest.fixture(autouse=True)
def _diagnose_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a failed check, show what systemd and the daemon said."""
    say("")  # -v prints the test's name without a newline
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed or "container" not in request.fixturenames:
        return
    c: Container = request.getfixturevalue("container")
    if c.pid is None:
        return
    status = c.run("systemctl", "status", "--no-pager", "-n", "0", UNIT, check=False).stdout
    journal = c.run("journalctl", "-u", UNIT, "--no-pager", "-n", "40", "-o", "short-monotonic",
                    check=False).stdout
    say(f"\n  --- systemctl status {UNIT}\n{status}\n  --- journal (last 40)\n{journal}")


# -- helpers ---------------------------------------------------------------------------------------


def plugins_present(c: Container) -> set[str]:
    return set(c.run("ls", "-A", PLUGINS, check=False).stdout.split())


def ensure_installed(c: Container) -> None:
    """The package installed (by this test if no earlier one did)."""
    if is_installed(c):
        return
    step("install the package first")
    proc = apt_install(c)
    expect(proc.returncode == 0, "apt-get install ./rtmbotd.deb",
           f"exit {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def config_as_shipped(c: Container) -> bool:
    """rtmbot.conf unchanged since the package installed it (its conffile checksum)."""
    conffiles = c.run("dpkg-query", "-W", "-f=${Conffiles}", "rtmbotd", check=False).stdout
    shipped = {line.split()[0]: line.split()[1] for line in conffiles.splitlines()
               if len(line.split()) >= 2}
    now = c.run("md5sum", CONF, check=False).stdout.split()
    return bool(now) and shipped.get(CONF) == now[0]


def ensure_fresh_install(c: Container) -> None:
    """The package as a first install leaves it: shipped config, no plugins, no drop-ins."""
    if (is_installed(c) and config_as_shipped(c) and not plugins_present(c)
            and not c.exists(DROPINS)):
        return
    step("purge and install again: this test starts from a fresh install")
    c.run("apt-get", "purge", "-y", "rtmbotd", check=False, timeout=120)
    c.run("rm", "-rf", DROPINS)
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "reset-failed", check=False)
    proc = apt_install(c)
    expect(proc.returncode == 0, "apt-get install ./rtmbotd.deb", f"exit {proc.returncode}")


def ensure_bot(c: Container, fake: Any, *, socket_mode: bool = False) -> dict[str, str]:
    """The service as the tests below start from, whatever ran before them: installed,
    configured for the fake Slack (RTM, or Socket Mode), plugins ping and counter only, no
    test drop-ins, active and answering. Its start-limit counter is cleared
    (`reset-failed`), so each test has the whole StartLimitBurst= to itself."""
    ensure_installed(c)
    why = []
    if c.exists(DROPINS):
        c.run("rm", "-rf", DROPINS)
        c.run("systemctl", "daemon-reload")
        why.append("drop-ins removed")
    wanted = config_text(fake.url, socket_mode=socket_mode)
    if c.run("cat", CONF, check=False).stdout != wanted:
        write_config(c, wanted)
        why.append("config for the fake Slack" + (" in Socket Mode" if socket_mode else ""))
    present = plugins_present(c)
    for extra in sorted(present - set(BOT_PLUGINS)):
        c.run("rm", "-rf", f"{PLUGINS}/{extra}")
        why.append(f"plugin {extra} removed")
    for missing in BOT_PLUGINS:
        if missing not in present:
            add_plugin(c, missing)
            why.append(f"plugin {missing} added")
    c.run("systemctl", "reset-failed", UNIT, check=False)
    if why or show(c, "ActiveState")["ActiveState"] != "active":
        step("restart into the test's starting state: " + (", ".join(why) or "was not active"))
        c.run("systemctl", "restart", UNIT, timeout=90)
    props = settle(c)
    expect(props["ActiveState"] == "active", "service active",
           f"{props['ActiveState']}/{props['SubState']} status={props['StatusText']!r}")
    pings(fake, "the bot answers", timeout=30)
    return props


def journal_cursor(c: Container) -> str:
    out = c.run("journalctl", "-u", UNIT, "-n", "0", "--show-cursor", "--no-pager",
                check=False).stdout
    match = re.search(r"^-- cursor: (\S+)", out, re.M)
    return match.group(1) if match else ""


def journal_since(c: Container, cursor: str) -> str:
    args = ["--after-cursor", cursor] if cursor else []
    return c.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat", *args, check=False).stdout


def count_of(text: str) -> int:
    """The number in the counter example's answer ('N message(s) seen in this channel')."""
    match = re.search(r"\d+", text)
    return int(match.group()) if match else -1


def count(fake: Any) -> int:
    return count_of(ask(fake, "count", lambda t: "seen" in t, timeout=30))


# -- checks on the host ----------------------------------------------------------------------------


def test_unit_security_rating() -> None:
    unit = REPO / "packaging/systemd" / UNIT
    proc = run_host(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                    timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout + proc.stderr)
    figure = float(match.group(1)) if match else None
    say(f"    systemd-analyze security --offline=yes: {match.group(0) if match else proc.stderr}")
    expect(figure is not None and figure <= SECURITY_LIMIT,
           f"exposure level <= {SECURITY_LIMIT}", str(figure))


def test_lintian(deb: Path) -> None:
    proc = run_host(["lintian", "--allow-root", "--tag-display-limit", "0", "--fail-on", "error",
                     str(deb)], timeout=300)
    tags = [line for line in proc.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    for line in tags:
        say(f"      {line}")
    errors = [line for line in tags if line.startswith("E: ")]
    expect(proc.returncode == 0 and not errors, "lintian reports no errors",
           f"{len(errors)} errors, {len(tags) - len(errors)} other tags, exit {proc.returncode}")


# -- install and first start ----------------------------------------------------------------------


def test_install(container: Container) -> None:
    c = container
    if is_installed(c):
        step("purge first: this test installs")
        c.run("apt-get", "purge", "-y", "rtmbotd", timeout=120)
    started = time.monotonic()
    proc = apt_install(c)
    expect(proc.returncode == 0, "apt-get install ./rtmbotd.deb (offline, deps in the rootfs)",
           f"exit {proc.returncode} in {time.monotonic() - started:.0f}s"
           + ("" if proc.returncode == 0 else "\n" + proc.stdout[-2000:] + proc.stderr[-2000:]))
    downloads = re.findall(r"^Get:\d+ \w+://.*$", proc.stdout, re.M)
    expect(not downloads, "nothing downloaded from a mirror", "; ".join(downloads[:3]))


def test_installed_files(container: Container) -> None:
    c = container
    ensure_fresh_install(c)
    link = c.run("readlink", "-f", "/usr/bin/rtmbotd", check=False).stdout.strip()
    expect(link == "/opt/venvs/rtmbotd/bin/rtmbotd", "/usr/bin/rtmbotd -> the venv", link)
    python = c.run("readlink", "-f", "/opt/venvs/rtmbotd/bin/python3", check=False).stdout.strip()
    expect(python.startswith("/usr/bin/python3"), "the venv uses Debian's python3", python)
    version = c.run("rtmbotd", "--version", check=False)
    expect(version.returncode == 0, "rtmbotd --version runs",
           (version.stdout + version.stderr).strip())
    # The bundled libraries import under the unit's strictest settings (W^X memory, seccomp).
    imports = c.run("systemd-run", "--wait", "--pipe", "--quiet", "-p", "User=rtmbot",
                    "-p", "MemoryDenyWriteExecute=yes", "-p", "SystemCallFilter=@system-service",
                    "-p", "PrivateUsers=yes", "/opt/venvs/rtmbotd/bin/python", "-c",
                    "import slack_sdk, websockets, aiohttp, yaml, daemon, sqlalchemy, "
                    "psycopg; print('SQLAlchemy', sqlalchemy.__version__, 'psycopg',"
                    " psycopg.__version__, psycopg.pq.__impl__)", check=False, timeout=60)
    expect(imports.returncode == 0 and "SQLAlchemy 2." in imports.stdout,
           "bundled libraries import under MemoryDenyWriteExecute/seccomp",
           (imports.stdout + imports.stderr).strip()[-500:])
    expect(c.exists(f"/lib/systemd/system/{UNIT}"), f"/lib/systemd/system/{UNIT} installed")
    stat = c.run("stat", "-c", "%U:%G %a", CONF, "/etc/rtmbot", PLUGINS,
                 check=False).stdout.split("\n")
    expect(stat[0] == "root:rtmbot 640", f"{CONF} is root:rtmbot 0640", stat[0])
    expect(stat[1] == "root:rtmbot 750", "/etc/rtmbot is root:rtmbot 0750", stat[1])
    expect(stat[2] == "root:rtmbot 750", f"{PLUGINS} is root:rtmbot 0750", stat[2])
    conffiles = c.run("dpkg-query", "-W", "-f=${Conffiles}", "rtmbotd").stdout
    expect(CONF in conffiles, f"{CONF} is a conffile")
    token = c.run("grep", "-E", r"^\s*SLACK_TOKEN\s*:", CONF, check=False).stdout.strip()
    expect(not token, "the shipped config sets no token", token)
    examples = c.run("ls", "/usr/share/rtmbotd/plugins", check=False).stdout.split()
    expect("counter" in examples and "repeat" in examples,
           "example plugins in /usr/share/rtmbotd/plugins", " ".join(examples))
    plugins = sorted(plugins_present(c))
    expect(plugins == [], f"{PLUGINS} starts empty", " ".join(plugins))
    expect(c.exists("/usr/share/man/man8/rtmbotd.8.gz") or
           c.run("dpkg", "-L", "rtmbotd").stdout.count("/usr/share/man/man8/rtmbotd.8.gz"),
           "man page rtmbotd(8) in the package")
    user = c.run("getent", "passwd", "rtmbot", check=False).stdout.strip()
    fields = user.split(":")
    expect(len(fields) == 7 and int(fields[2]) < 1000 and fields[5] == "/var/lib/rtmbot"
           and fields[6] in ("/usr/sbin/nologin", "/bin/false"),
           "system user rtmbot, home /var/lib/rtmbot, no shell", user)
    expect(c.run("getent", "group", "rtmbot", check=False).returncode == 0, "group rtmbot exists")
    pycache = c.run("sh", "-c", "dpkg -L rtmbotd | grep -c __pycache__ || true").stdout.strip()
    expect(pycache == "0", "no byte-code shipped in the package (postinst compiles it)", pycache)


def test_systemd_analyze_verify(container: Container) -> None:
    ensure_installed(container)
    proc = container.run("systemd-analyze", "verify", f"/lib/systemd/system/{UNIT}", check=False)
    output = (proc.stdout + proc.stderr).strip()
    expect(proc.returncode == 0 and not output, "systemd-analyze verify prints nothing",
           output or f"exit {proc.returncode}")
    proc = container.run("systemd-analyze", "security", "--no-pager", UNIT, check=False)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    say(f"    (installed unit, inside the container: {match.group(0) if match else '?'})")


def test_first_start_is_calm(container: Container) -> None:
    c = container
    ensure_fresh_install(c)
    props = settle(c)
    expect(props["ActiveState"] == "active", "service active after install",
           f"{props['ActiveState']}/{props['SubState']}")
    status = props.get("StatusText", "")
    expect("SLACK_TOKEN" in status and CONF in status,
           "status line says where the token goes", repr(status))
    expect(props["NRestarts"] == "0", "no restarts", props["NRestarts"])
    stat = c.run("stat", "-c", "%U:%G %a", CONF, "/etc/rtmbot", "/var/lib/rtmbot",
                 check=False).stdout.split("\n")
    expect(stat[0] == "root:rtmbot 640" and stat[1] == "root:rtmbot 750",
           "starting the unit kept /etc/rtmbot root:rtmbot (ConfigurationDirectory=)",
           f"{stat[0]}; {stat[1]}")
    expect(stat[2] == "rtmbot:rtmbot 750", "StateDirectory /var/lib/rtmbot owned by rtmbot",
           stat[2])
    check = c.run("runuser", "-u", "rtmbot", "--", "rtmbotd", "-c", CONF, "--check-config",
                  check=False)
    expect(check.returncode == 78 and "SLACK_TOKEN" in check.stderr,
           "rtmbotd --check-config refuses the tokenless shipped config, as a reload would",
           (check.stdout + check.stderr).strip())
    check = c.run("runuser", "-u", "rtmbot", "--", "env", f"SLACK_TOKEN={BOT_TOKEN}",
                  "rtmbotd", "-c", CONF, "--check-config", check=False)
    expect(check.returncode == 0, "with a token it accepts the shipped config",
           (check.stdout + check.stderr).strip())


# -- talking to (fake) Slack ---------------------------------------------------------------------


def test_start_and_reply_rtm(container: Container, fake: Any) -> None:
    c = container
    ensure_installed(c)
    step("stop, write a config pointing at the fake Slack, plugins ping and counter only")
    c.run("systemctl", "stop", UNIT, timeout=60)
    c.run("rm", "-rf", DROPINS)
    c.run("systemctl", "daemon-reload")
    write_config(c, config_text(fake.url))
    c.sh(f"rm -rf {PLUGINS}/*")
    for name in BOT_PLUGINS:
        add_plugin(c, name)
    opened = fake.state().get("connections_opened_by_mode", {}).get("rtm", 0)
    proc = c.run("systemctl", "start", UNIT, check=False, timeout=90)
    expect(proc.returncode == 0, "systemctl start", (proc.stdout + proc.stderr).strip())
    props = settle(c)
    expect(props["ActiveState"] == "active", "service active",
           f"{props['ActiveState']}/{props['SubState']} status={props['StatusText']!r}")
    try:
        fake.wait_for_connections(1, mode="rtm", timeout=30)
        connected = True
    except TimeoutError as exc:
        connected = str(exc)
    expect(connected is True, "daemon opened an RTM connection to the fake", str(connected))
    now = fake.state().get("connections_opened_by_mode", {}).get("rtm", 0)
    expect(now > opened, "a new RTM connection was counted", f"{opened} -> {now}")
    pings(fake, "ping -> pong over RTM", timeout=30)
    before = count(fake)
    for _ in range(3):
        fake.message("hello counter")
    answer = replies(fake, "count", lambda t: "seen" in t, "counter plugin answers")
    expect(count_of(answer) >= before + 3, "counter counted the messages",
           f"{before} before, then {answer!r}")


def test_reload_adds_plugin_without_reconnecting(container: Container, fake: Any) -> None:
    c = container
    props = ensure_bot(c, fake)
    before = fake.state()["connections_opened"]
    pid = props["MainPID"]
    step("add plugin echo, systemctl reload")
    add_plugin(c, "echo")
    proc = c.run("systemctl", "reload", UNIT, check=False, timeout=60)
    expect(proc.returncode == 0, "systemctl reload", (proc.stdout + proc.stderr).strip())
    n = unique()
    replies(fake, f"echo hi {n}", lambda t: t == f"echoed: hi {n}", "the new plugin answers",
            timeout=30)
    pings(fake, "the old plugin still answers")
    after = fake.state()["connections_opened"]
    expect(after == before, "no new Slack connection", f"connections_opened {before} -> {after}")
    props = settle(c)
    expect(props["MainPID"] == pid and props["ActiveState"] == "active",
           "same process, still active", f"MainPID {pid} -> {props['MainPID']}")


def test_reload_with_broken_config_fails_and_keeps_running(container: Container,
                                                          fake: Any) -> None:
    c = container
    pid = ensure_bot(c, fake)["MainPID"]
    good = c.run("cat", CONF).stdout
    step("break the YAML, systemctl reload")
    write_config(c, good + "BROKEN: [unclosed\n")
    try:
        proc = c.run("systemctl", "reload", UNIT, check=False, timeout=60)
        expect(proc.returncode != 0, "systemctl reload fails",
               f"exit {proc.returncode} {(proc.stdout + proc.stderr).strip()}")
        props = settle(c)
        expect(props["ActiveState"] == "active" and props["MainPID"] == pid,
               "service still active, same process",
               f"{props['ActiveState']} MainPID {pid} -> {props['MainPID']}")
        pings(fake, "old config and plugins still answer")
    finally:
        step("restore the good config and reload")
        write_config(c, good)
        c.run("systemctl", "reload", UNIT, check=False, timeout=60)


# -- restarts: by hand, by the watchdog, in a crash loop ----------------------------------------------


def test_ten_manual_restarts_all_succeed(container: Container, fake: Any) -> None:
    """An administrator iterating on a plugin: systemd 252 counts each `systemctl restart`
    toward StartLimitBurst=, and 5 in 300 s refused the sixth (start-limit-hit)."""
    c = container
    pid = ensure_bot(c, fake)["MainPID"]
    limits = show(c, "StartLimitBurst", "StartLimitIntervalUSec")
    step(f"ten systemctl restart in a row (StartLimitBurst={limits['StartLimitBurst']}, "
         f"StartLimitIntervalUSec={limits['StartLimitIntervalUSec']})")
    started = time.monotonic()
    pids = [pid]
    for n in range(1, 11):
        proc = c.run("systemctl", "restart", UNIT, check=False, timeout=90)
        props = settle(c)
        ok = (proc.returncode == 0 and props["ActiveState"] == "active"
              and props["MainPID"] not in pids)
        expect(ok, f"restart {n} succeeds, a new process is active"
               + (" (the sixth, refused with 5 starts in 300 s)" if n == 6 else ""),
               f"exit {proc.returncode} {(proc.stdout + proc.stderr).strip()} "
               f"{props['ActiveState']}/{props['SubState']} Result={props['Result']} "
               f"MainPID {pids[-1]} -> {props['MainPID']}")
        pids.append(props["MainPID"])
    say(f"    (ten restarts took {time.monotonic() - started:.0f}s)")
    pings(fake, "answers after ten restarts", timeout=30)


def test_watchdog_restarts_frozen_daemon(container: Container, fake: Any) -> None:
    c = container
    ensure_bot(c, fake)
    step("drop-in WatchdogSec=3s, restart")
    c.sh(f"mkdir -p {DROPINS}")
    c.write_file(f"{DROPINS}/system-test-watchdog.conf",
                 "[Service]\nWatchdogSec=3s\nTimeoutAbortSec=5s\n")
    try:
        c.run("systemctl", "daemon-reload")
        c.run("systemctl", "restart", UNIT, timeout=90)
        props = settle(c)
        expect(props["ActiveState"] == "active", "active with a 3s watchdog",
               f"{props['ActiveState']}/{props['SubState']}")
        pings(fake, "answers after the restart", timeout=30)
        pid, restarts = props["MainPID"], int(props["NRestarts"])
        # Four pings systemd took note of span more than one WatchdogSec: a daemon that
        # pings is left running.
        stamps: set[str] = set()

        def pinged() -> bool:
            now = show(c, "WatchdogTimestampMonotonic", "MainPID")
            if now["MainPID"] == pid and now["WatchdogTimestampMonotonic"] not in ("", "0"):
                stamps.add(now["WatchdogTimestampMonotonic"])
            return len(stamps) >= 4 or now["MainPID"] != pid
        wait_until(pinged, timeout=60, interval=0.2, what="four watchdog pings")
        props = show(c, "MainPID", "NRestarts", "ActiveState")
        expect(props["ActiveState"] == "active" and props["MainPID"] == pid
               and int(props["NRestarts"]) == restarts,
               "survives several watchdog intervals (it sends WATCHDOG=1)",
               f"{len(stamps)} pings seen, {props['ActiveState']} MainPID {pid} -> "
               f"{props['MainPID']} NRestarts={props['NRestarts']}")
        step(f"kill -STOP {pid} (host view: inside the container)")
        c.run("kill", "-STOP", pid)
        try:
            now = wait_until(restarted(c, pid, restarts), timeout=60, interval=0.5,
                             what="a watchdog restart")
            expect(True, "watchdog killed the frozen daemon and systemd restarted it",
                   f"MainPID {pid} -> {now['MainPID']}, NRestarts {restarts} -> {now['NRestarts']}")
        except TimeoutError as exc:
            c.run("kill", "-CONT", pid, check=False)
            expect(False, "watchdog restart", str(exc))
        journal = c.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat", check=False).stdout
        expect("Watchdog timeout" in journal, "journal records the watchdog timeout")
        pings(fake, "answers again after the watchdog restart", timeout=30)
    finally:
        step("remove the drop-in, restart without it")
        c.run("rm", "-rf", DROPINS)
        c.run("systemctl", "daemon-reload")
        c.run("systemctl", "restart", UNIT, check=False, timeout=90)


def test_crash_loop_ends_failed(container: Container, fake: Any) -> None:
    """A daemon that fails at every start is retried, then left failed (start-limit-hit);
    `systemctl reset-failed` and a start bring it back."""
    c = container
    ensure_bot(c, fake)
    good = c.run("cat", CONF).stdout
    step("LOGFILE where the unit cannot write (the sandbox keeps /etc read-only), restart")
    write_config(c, good + 'LOGFILE: "/etc/rtmbot/cannot-write-here.log"\n')
    cursor = journal_cursor(c)
    started = time.monotonic()
    try:
        c.run("systemctl", "restart", UNIT, check=False, timeout=90)

        def given_up() -> dict[str, str] | None:
            props = show(c, "ActiveState", "SubState", "Result", "NRestarts", "ExecMainStatus")
            return props if props["ActiveState"] == "failed" else None
        try:
            props = wait_until(given_up, timeout=300, interval=0.5,
                               what="the crash loop to leave the unit failed")
        except TimeoutError as exc:
            expect(False, "the crash loop ends in failed", str(exc))
        say(f"    (failed after {time.monotonic() - started:.0f}s, "
            f"{props['NRestarts']} automatic restarts)")
        # Result= keeps the first failure (exit-code); start-limit-hit is what a
        # restart of a healthy unit used to end in.
        expect(props["SubState"] == "failed" and props["Result"] == "exit-code",
               "left failed, no further restart scheduled",
               f"{props['ActiveState']}/{props['SubState']} Result={props['Result']}")
        expect(props["ExecMainStatus"] == "73", "each start failed with 73 (LOGFILE cannot "
               "be opened), which Restart=on-failure retries", props["ExecMainStatus"])
        expect(int(props["NRestarts"]) >= 10, "retried automatically before giving up",
               f"NRestarts={props['NRestarts']}")
        journal = journal_since(c, cursor)
        expect("Start request repeated too quickly" in journal,
               "systemd gave up on the start limit: 'Start request repeated too quickly'")
    finally:
        write_config(c, good)
    step("restore the config, systemctl reset-failed, start")
    c.run("systemctl", "reset-failed", UNIT)
    proc = c.run("systemctl", "start", UNIT, check=False, timeout=90)
    props = settle(c)
    expect(proc.returncode == 0 and props["ActiveState"] == "active",
           "reset-failed and start recover the unit",
           f"exit {proc.returncode} {(proc.stdout + proc.stderr).strip()} "
           f"{props['ActiveState']}/{props['SubState']}")
    pings(fake, "answers again", timeout=30)


def test_store_survives_restart(container: Container, fake: Any) -> None:
    c = container
    props = ensure_bot(c, fake)
    fake.message("hello again")
    before = count(fake)
    pid, restarts = props["MainPID"], int(props["NRestarts"])
    step(f"systemctl kill -s KILL (pid {pid}): systemd restarts it")
    c.run("systemctl", "kill", "-s", "KILL", UNIT)
    try:
        wait_until(restarted(c, pid, restarts), timeout=60, interval=0.5,
                   what="a restart after SIGKILL")
    except TimeoutError as exc:
        expect(False, "restarted after SIGKILL", str(exc))
    pings(fake, "answers after the restart", timeout=30)
    after = count(fake)
    expect(after > before >= 0, "counter kept counting across kill -9 and restart",
           f"'count' said {before} before, {after} after")


def test_socket_mode(container: Container, fake: Any) -> None:
    c = container
    ensure_bot(c, fake)
    step("configure SLACK_APP_TOKEN, restart")
    write_config(c, config_text(fake.url, socket_mode=True))
    opened = fake.state().get("connections_opened_by_mode", {}).get("socket_mode", 0)
    c.run("systemctl", "restart", UNIT, timeout=90)
    props = settle(c)
    expect(props["ActiveState"] == "active", "active in Socket Mode",
           f"{props['ActiveState']}/{props['SubState']} status={props['StatusText']!r}")
    try:
        fake.wait_for_connections(1, mode="socket_mode", timeout=30)
        connected = True
    except TimeoutError as exc:
        connected = str(exc)
    expect(connected is True, "daemon opened a Socket Mode connection", str(connected))
    now = fake.state().get("connections_opened_by_mode", {}).get("socket_mode", 0)
    expect(now > opened, "a new Socket Mode connection was counted", f"{opened} -> {now}")
    pings(fake, "ping -> pong over Socket Mode", timeout=30)


def test_stop_is_clean(container: Container, fake: Any) -> None:
    c = container
    ensure_bot(c, fake)
    cursor = journal_cursor(c)
    started = time.monotonic()
    c.run("systemctl", "stop", UNIT, timeout=90)
    took = time.monotonic() - started
    props = show(c, "ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    expect(props["ActiveState"] == "inactive", "inactive after systemctl stop",
           f"{props['ActiveState']} ({took:.1f}s)")
    expect(props["Result"] == "success" and props["ExecMainStatus"] == "0",
           "clean exit (status 0, result success)",
           f"Result={props['Result']} ExecMainStatus={props['ExecMainStatus']}")
    journal = journal_since(c, cursor)
    lines = journal.splitlines()
    expect(any(re.search(r": stopped$", line) for line in lines),
           "the daemon said it stopped", "\n".join(lines[-5:]))
    forced = [line for line in lines if re.search(r"timed out|Killing|stop deadline", line)]
    expect(not forced, "nothing had to be forced (no stop deadline, no SIGKILL)",
           "; ".join(forced))


# -- package life cycle ----------------------------------------------------------------------------


def test_remove_keeps_config_and_state(container: Container, fake: Any) -> None:
    c = container
    ensure_bot(c, fake)
    proc = c.run("apt-get", "remove", "-y", "rtmbotd", check=False, timeout=120)
    expect(proc.returncode == 0, "apt-get remove", f"exit {proc.returncode}")
    active = c.run("systemctl", "is-active", UNIT, check=False).stdout.strip()
    expect(active != "active", "service stopped", active)
    expect(c.run("pgrep", "-u", "rtmbot", check=False).returncode != 0,
           "no rtmbot process left")
    for path in (CONF, f"{PLUGINS}/ping/ping.py", "/var/lib/rtmbot"):
        expect(c.exists(path), f"{path} kept")
    expect(c.run("getent", "passwd", "rtmbot", check=False).returncode == 0, "user rtmbot kept")
    expect(not c.exists("/opt/venvs/rtmbotd"), "/opt/venvs/rtmbotd removed (with its byte-code)")


def upgrade_in_place(c: Container, fake: Any, pid: str) -> None:
    """`apt-get install --reinstall` of the same version (prerm upgrade, postinst configure):
    the service is restarted by it and answers."""
    step("upgrade in place (apt-get install --reinstall)")
    proc = apt_install(c, "--reinstall")
    expect(proc.returncode == 0, "apt-get install --reinstall", f"exit {proc.returncode}")
    props = settle(c)
    expect(props["ActiveState"] == "active" and props["MainPID"] != pid,
           "service restarted by the upgrade", f"MainPID {pid} -> {props['MainPID']}")
    pings(fake, "answers after the upgrade", timeout=30)


def test_reinstall_and_upgrade_keep_config_and_plugins(container: Container,
                                                       fake: Any) -> None:
    c = container
    if not c.exists(f"{PLUGINS}/ping") or is_installed(c):
        ensure_bot(c, fake)
        step("apt-get remove: this test installs over a kept config")
        c.run("apt-get", "remove", "-y", "rtmbotd", timeout=120)
    conf_before = c.run("cat", CONF).stdout
    proc = apt_install(c)
    expect(proc.returncode == 0, "install again over the kept config", f"exit {proc.returncode}")
    expect(c.run("cat", CONF).stdout == conf_before, "config kept as edited")
    props = settle(c)
    expect(props["ActiveState"] == "active", "service started with the kept config",
           f"{props['ActiveState']} status={props['StatusText']!r}")
    pings(fake, "kept plugin answers", timeout=30)
    upgrade_in_place(c, fake, props["MainPID"])


def test_store_survives_upgrade(container: Container, fake: Any) -> None:
    c = container
    pid = ensure_bot(c, fake)["MainPID"]
    fake.message("hello before the upgrade")
    before = count(fake)
    upgrade_in_place(c, fake, pid)
    after = count(fake)
    expect(after > before >= 0, "counter kept counting across the upgrade",
           f"'count' said {before} before, {after} after")


def test_purge_leaves_nothing(container: Container) -> None:
    c = container
    ensure_installed(c)
    proc = c.run("apt-get", "purge", "-y", "rtmbotd", check=False, timeout=120)
    expect(proc.returncode == 0, "apt-get purge", f"exit {proc.returncode}")
    for path in ("/etc/rtmbot", "/var/lib/rtmbot", "/var/log/rtmbot", "/opt/venvs/rtmbotd",
                 f"/lib/systemd/system/{UNIT}",
                 f"/etc/systemd/system/multi-user.target.wants/{UNIT}"):
        expect(not c.exists(path), f"{path} gone")
    expect(c.run("getent", "passwd", "rtmbot", check=False).returncode != 0, "user rtmbot gone")
    expect(c.run("getent", "group", "rtmbot", check=False).returncode != 0, "group rtmbot gone")
    status = c.run("dpkg-query", "-W", "-f=${db:Status-Status}", "rtmbotd", check=False)
    expect(status.stdout.strip() in ("", "not-installed"), "dpkg forgot the package",
           status.stdout.strip())
