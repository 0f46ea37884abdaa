"""Boot a Debian rootfs under a real systemd with systemd-nspawn, and run commands in it.

For the system tests: `build_rootfs` makes (and caches) a bookworm tree with mmdebstrap from
the host's own apt mirror; `Container` boots it with an overlay over the cached tree, runs
commands inside with nsenter, and always tears it down. Every external step has a timeout.
"""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from rtmbotd.testing.waiting import wait_until  # noqa: F401  (used here and by the test module)

log = logging.getLogger(__name__)


SOURCES_FILE = Path("/etc/apt/sources.list.d/debian.sources")
CACHE_DIR = Path(os.environ.get("RTMBOTD_TEST_CACHE", "/var/cache/rtmbotd-test"))
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# What commands run inside the container see: no host variables leak in.
INSIDE_ENV = ["env", "-i", f"PATH={CLEAN_PATH}", "LANG=C.UTF-8", "TERM=dumb",
              "SYSTEMD_PAGER=cat", "SYSTEMD_COLORS=0", "DEBIAN_FRONTEND=noninteractive"]


class ContainerError(RuntimeError):
    """The container could not be booted or a command in it failed."""


# -- the rootfs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AptSource:
    uri: str
    suite: str
    components: str

    def line(self) -> str:
        return f"deb {self.uri} {self.suite} {self.components}"


def apt_sources(release: str = "bookworm", path: Path = SOURCES_FILE) -> list[AptSource]:
    """The host's mirrors for `release` (its main, -updates and -security suites).

    Read from the deb822 file at run time, so no mirror host is written into the repo.
    """
    if not path.exists():
        raise ContainerError(f"{path} not found: cannot tell which Debian mirror to use")
    sources: list[AptSource] = []
    for stanza in path.read_text().split("\n\n"):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            key, _, value = raw.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "deb").split():
            continue
        components = fields.get("components", "main")
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                if suite == release or suite.startswith(release + "-"):
                    sources.append(AptSource(uri, suite, components))
    if not any(s.suite == release for s in sources):
        raise ContainerError(f"no {release} suite in {path}")
    return sources


def build_rootfs(packages: Iterable[str], release: str = "bookworm",
                 cache_dir: Path = CACHE_DIR, timeout: float = 600) -> Path:
    """A bookworm tree with `packages`, made by mmdebstrap once and cached by their hash.

    The tree is only ever booted with --volatile=overlay, so it stays pristine between runs.
    """
    sources = apt_sources(release)
    wanted = sorted(set(packages))
    key_text = "\n".join(["v1", release, "minbase", *wanted, *(s.line() for s in sources)])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    root = cache_dir / f"rootfs-{release}-{key}"
    if _has_systemd(root):
        log.info("rootfs: cached %s", root)
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the loser finds it cached
        if _has_systemd(root):
            return root
        # Only one tree is kept: drop those of other package lists and interrupted builds.
        for old in cache_dir.glob("rootfs-*"):
            if old.is_dir() and old != root:
                log.info("rootfs: removing stale %s", old)
                shutil.rmtree(old, ignore_errors=True)
        tmp = cache_dir / f"rootfs-{release}-{key}.tmp"
        cmd = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
               "--include=" + ",".join(wanted), release, str(tmp),
               *(s.line() for s in sources)]
        log.info("rootfs: building %s", root)
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout, env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"})
            if proc.returncode != 0:
                raise ContainerError(f"mmdebstrap failed ({proc.returncode}):\n"
                                     f"{proc.stderr[-4000:]}")
            tmp.rename(root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    log.info("rootfs: built in %.0fs", time.monotonic() - started)
    return root


def _has_systemd(root: Path) -> bool:
    return (root / "usr/lib/systemd/systemd").exists() or (root / "lib/systemd/systemd").exists()


# -- the container ---------------------------------------------------------------------------------


def die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the test process dies, whatever kills it.

    systemd-nspawn turns SIGTERM into an orderly power-off of the container.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# Where systemd tracks processes: the unified and name=systemd hierarchies of a hybrid host
# (cgroup v1), or the one cgroup2 tree.
CGROUP_TREES = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))
CGROUP2_ROOT = Path("/sys/fs/cgroup")


def own_cgroups(name: str) -> list[Path]:
    """A fresh cgroup named `name` in each tree systemd tracks processes in.

    With --keep-unit (and no machined) a container's systemd takes nspawn's own cgroup as
    its root. Two containers started from one cgroup would then share every unit's
    cgroup (both have /system.slice/rtmbotd.service), and systemd in one cannot kill
    (EIO) or tell apart the other's processes: `systemctl kill` fails. So each container
    started beside another gets cgroups of its own.
    """
    trees = [tree for tree in CGROUP_TREES if (tree / "cgroup.procs").exists()]
    if not trees and (CGROUP2_ROOT / "cgroup.controllers").exists():
        trees = [CGROUP2_ROOT]
    made = []
    for tree in trees:
        path = tree / f"rtmbotd-test-{name}"
        path.mkdir(exist_ok=True)
        made.append(path)
    return made


def remove_cgroups(paths: list[Path]) -> None:
    """rmdir each cgroup and what the container's systemd left under it, deepest first."""
    for path in paths:
        for folder, _, _ in sorted(os.walk(path), key=lambda w: -w[0].count("/")):
            try:
                os.rmdir(folder)
            except OSError as exc:
                log.warning("teardown: cgroup %s not removed: %s", folder, exc)


def start_in(cgroups: list[Path]) -> Callable[[], None]:
    """preexec_fn: move the child into `cgroups`, then die_with_parent."""
    def enter() -> None:
        for path in cgroups:
            (path / "cgroup.procs").write_text("0")
        die_with_parent()
    return enter


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name may contain spaces and parentheses: split after the last ')'
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Container:
    """A booted container: `with Container(root, binds) as c: c.run("systemctl", ...)`.

    Several may boot the same tree at once: --volatile=overlay makes nspawn lock it shared
    and gives each its own tmpfs upper layer. Give each a `machine` name then: it is the
    container's host name, and nspawn keys its runtime files under /run by that name.
    """

    def __init__(self, root: Path, bind_ro: dict[Path, str] | None = None,
                 log_path: Path | None = None, machine: str | None = None) -> None:
        self.root = root
        self.bind_ro = bind_ro or {}
        self.machine = machine
        self.cgroups: list[Path] = []
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="nspawn-", suffix=".log")[1])
        self.nspawn: subprocess.Popen | None = None
        self.pid: int | None = None  # the container's systemd, as the host sees it

    # context manager: the container is torn down whatever happens
    def __enter__(self) -> Container:
        try:
            self.boot()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def boot(self, timeout: float = 60) -> None:
        cmd = ["systemd-nspawn", "-D", str(self.root), "--register=no", "--keep-unit",
               "--console=pipe", "--volatile=overlay", "--quiet"]
        if self.machine:
            cmd.append(f"--machine={self.machine}")
            self.cgroups = own_cgroups(self.machine)
        for host_dir, inside in self.bind_ro.items():
            cmd.append(f"--bind-ro={host_dir}:{inside}")
        cmd.append("-b")
        log.info("boot: %s", shlex.join(cmd))
        with open(self.log_path, "wb") as out:
            self.nspawn = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True,
                                           env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"},
                                           preexec_fn=start_in(self.cgroups))

        def systemd_pid() -> int | None:
            self._check_nspawn()
            for kid in _children(self.nspawn.pid):
                if _comm(kid) == "systemd":
                    return kid
            return None

        self.pid = wait_until(systemd_pid, timeout=timeout, what="the container's systemd", interval=0.2)
        log.info("boot: container systemd is host pid %d", self.pid)

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_running(self, timeout: float = 90) -> str:
        """`systemctl is-system-running --wait`: 'running', or 'degraded' (see failed_units).

        Just after boot() finds the container's systemd it may not listen yet, and a
        systemctl then fails at once with no state (a CI run lost every system test to
        "system state ''"). So first wait for its socket /run/systemd/private (what
        systemctl as root talks to), then ask, asking again while no state comes back;
        all within `timeout`.
        """
        deadline = time.monotonic() + timeout
        private = Path(f"/proc/{self.pid}/root/run/systemd/private")

        def listening() -> bool:
            self._check_nspawn()
            return private.is_socket()

        wait_until(listening, timeout=timeout, interval=0.1,
                   what=f"the container's systemd to listen on {private}")
        asked: list[subprocess.CompletedProcess] = []

        def state() -> str:
            left = deadline - time.monotonic()
            asked.append(self.run("systemctl", "is-system-running", "--wait", check=False,
                                  timeout=max(5.0, left)))
            return asked[-1].stdout.strip()

        try:
            found = wait_until(state, timeout=max(0.0, deadline - time.monotonic()),
                               interval=0.2, what="a system state")
        except TimeoutError:
            found = ""
        if found not in ("running", "degraded"):
            last = asked[-1] if asked else None
            raise ContainerError(
                f"system state {found!r} after {len(asked)} tries (systemctl exited "
                f"{last.returncode if last else '?'}: "
                f"{last.stderr.strip() if last else ''!r}):\n{self.console_tail()}")
        return found

    def _check_nspawn(self) -> None:
        """ContainerError if systemd-nspawn has exited (the container is gone)."""
        if self.nspawn is None or self.nspawn.poll() is not None:
            code = self.nspawn.returncode if self.nspawn is not None else None
            raise ContainerError(f"systemd-nspawn exited with {code}:\n" + self.console_tail())

    def failed_units(self) -> list[str]:
        out = self.run("systemctl", "list-units", "--state=failed", "--plain", "--no-legend",
                       check=False).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def run(self, *argv: str, input: str | bytes | None = None, timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run `argv` inside the container (all its namespaces, a clean environment)."""
        if self.pid is None:
            raise ContainerError("container is not booted")
        cmd = ["nsenter", "-t", str(self.pid), "-a", "--wd=/", *INSIDE_ENV, *argv]
        text = not isinstance(input, bytes)
        try:
            proc = subprocess.run(cmd, input=input, capture_output=True, text=text,
                                  timeout=timeout,
                                  stdin=subprocess.DEVNULL if input is None else None)
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"timed out after {timeout:g}s: {shlex.join(argv)}") from exc
        if check and proc.returncode != 0:
            raise ContainerError(f"{shlex.join(argv)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}{proc.stderr}")
        return proc

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run("sh", "-ec", script, **kwargs)

    def write_file(self, path: str, content: str, mode: str = "0644",
                   owner: str = "root:root") -> None:
        self.sh(f"umask 077; cat > {shlex.quote(path)}.tmp && "
                f"chown {owner} {shlex.quote(path)}.tmp && chmod {mode} {shlex.quote(path)}.tmp && "
                f"mv {shlex.quote(path)}.tmp {shlex.quote(path)}", input=content)

    def exists(self, path: str) -> bool:
        return self.run("test", "-e", path, check=False).returncode == 0

    def teardown(self, timeout: float = 20) -> None:
        """Power the container off (nspawn turns SIGTERM into a clean shutdown); kill if stuck."""
        if self.nspawn is None:
            return
        if self.nspawn.poll() is None:
            self.nspawn.send_signal(signal.SIGTERM)
            try:
                self.nspawn.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("teardown: container did not power off in %gs, killing it", timeout)
                if self.pid is not None:
                    try:  # killing a pid namespace's init kills everything in it
                        os.kill(self.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    os.killpg(self.nspawn.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.nspawn.wait(timeout=timeout)
        log.info("teardown: systemd-nspawn exited %s", self.nspawn.returncode)
        self.nspawn = None
        self.pid = None
        remove_cgroups(self.cgroups)
        self.cgroups = []


def deb_depends(deb: Path) -> list[str]:
    """Package names in a .deb's Depends and Pre-Depends (first alternative, no versions)."""
    names = []
    for field in ("Depends", "Pre-Depends"):
        value = subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True,
                               text=True, check=True, timeout=30).stdout.strip()
        for item in filter(None, (part.strip() for part in value.split(","))):
            names.append(item.split("|")[0].split("(")[0].split(":")[0].strip())
    return names


def run_host(argv: Sequence[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run a host command with a timeout, capturing its output."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kwargs)
