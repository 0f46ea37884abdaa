"""CPU time and memory of another process, read from /proc (Linux only)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
_SCHEDSTAT = os.path.exists("/proc/self/schedstat")


def cpu_seconds(pid: int) -> float:
    """Time the process (all its threads) spent on a CPU, in seconds.

    From each thread's /proc/PID/task/TID/schedstat (nanoseconds, exact) when the kernel
    has them; else utime + stime from /proc/PID/stat, counted in whole clock ticks
    (10 ms): over a 10 s window one tick more or less is 0.1 % of a core, as large as
    what an idle daemon uses, so the tick count cannot rank two idle processes.
    A thread that ended takes its time with it: read it over windows where threads stay.
    """
    if not _SCHEDSTAT:
        return _ticks_seconds(pid)
    total_ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                total_ns += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue                          # the thread ended meanwhile
    return total_ns / 1e9


def _ticks_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])   # fields 14 and 15 of proc(5)
    return (utime + stime) / CLK_TCK


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def rss_mib(pid: int) -> float:
    """Resident set size now (VmRSS), in MiB."""
    return _status_kib(pid, "VmRSS") / 1024.0


def peak_rss_mib(pid: int) -> float:
    """The highest resident set size so far (VmHWM), in MiB."""
    return _status_kib(pid, "VmHWM") / 1024.0


@dataclass(frozen=True)
class CpuUse:
    cpu_s: float
    wall_s: float

    @property
    def percent_of_core(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else float("nan")


def idle_cpu(pid: int, seconds: float) -> CpuUse:
    """CPU the process used while we slept `seconds` (nothing is sent to it meanwhile)."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    return CpuUse(cpu1 - cpu0, t1 - t0)
