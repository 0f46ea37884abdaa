"""Who listens on a METRICS port: this daemon (a reload's --check-config) or another process.

Linux only, read from /proc: the listening sockets of `/proc/net/tcp{,6}` matched to the
processes holding them (`/proc/<pid>/fd`). A process this user may not inspect is simply
not found, and a port held by nobody found counts as held by another process.
"""
from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
LISTEN = "0A"        # TCP_LISTEN in /proc/net/tcp's `st` column


def listening_pids(port: int, proc: Path = PROC) -> set[int]:
    """The processes with a socket listening on TCP `port` (any address, IPv4 or IPv6)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    pids = set()
    if not inodes:
        return pids
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:          # gone, or another user's
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    pids.add(int(entry.name))
                    break
            except OSError:
                continue
    return pids


def config_of(pid: int, proc: Path = PROC) -> Path | None:
    """The config file rtmbotd process `pid` runs with (its `-c`, or the default), resolved;
    None when `pid` is not an rtmbotd (or cannot be read)."""
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().decode("utf-8", "surrogateescape").split("\0")
        cwd = os.readlink(proc / str(pid) / "cwd")
    except OSError:
        return None
    args = _rtmbotd_args(argv)
    if args is None:
        return None
    from rtmbotd.cli import build_parser
    try:
        parsed, _rest = build_parser().parse_known_args(args)
    except SystemExit:           # argparse refusing what it was started with: not a daemon of ours
        return None
    return Path(os.path.realpath(os.path.join(cwd, parsed.config)))


def _rtmbotd_args(argv: list[str]) -> list[str] | None:
    """The arguments after the rtmbotd program in a command line (`rtmbotd -c x`,
    `python /usr/bin/rtmbotd -c x`, `python -m rtmbotd -c x`), or None."""
    argv = argv[:-1] if argv and argv[-1] == "" else argv
    for i, arg in enumerate(argv[:3]):
        if os.path.basename(arg) == "rtmbotd":
            return argv[i + 1:]
    return None


def is_daemon_of(pid: int, config_path: str | os.PathLike, proc: Path = PROC) -> bool:
    """Is `pid` the daemon running with `config_path`: systemd's $MAINPID when set (a
    control process such as ExecReload's --check-config), else an rtmbotd whose config is
    the same file; this very process counts too."""
    if pid == os.getpid():
        return True
    main = os.environ.get("MAINPID", "")
    if main:
        return main.isdigit() and pid == int(main)
    return config_of(pid, proc) == Path(os.path.realpath(config_path))


def who_holds(port: int, proc: Path = PROC) -> str:
    """Words for an error: `another process (pid 1234: rtmbotd -c /etc/x.conf)`."""
    pids = sorted(listening_pids(port, proc))
    if pids == [os.getpid()]:
        return f"this process (pid {pids[0]})"
    others = [describe(pid, proc) for pid in pids if pid != os.getpid()]
    return "another process" + (f" ({'; '.join(others[:3])})" if others else "")


def describe(pid: int, proc: Path = PROC) -> str:
    """`pid 1234: rtmbotd -c /etc/rtmbot/rtmbot.conf`."""
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except OSError:
        return f"pid {pid}"
    args = _rtmbotd_args(argv)
    words = ["rtmbotd", *args] if args is not None else [w for w in argv if w][:1]
    return f"pid {pid}: {' '.join(words)[:120]}" if words else f"pid {pid}"
