"""What a benchmark prints: the machine it ran on, percentiles, and side-by-side tables."""
from __future__ import annotations

import math
import os
import platform
import statistics
from dataclasses import dataclass, field
from typing import Sequence


# The resident-memory goal of both benchmarks, in MiB after start. aiohttp for the Web
# API costs about 9.4 MiB over the hand-written client it replaced (issue 10); 40 MiB
# leaves room for that and for the plugins' own imports.
RSS_GOAL_MIB = 40.0

# Read at import, before a benchmark pins itself to one CPU (children.pin_cpus).
_NPROC = len(os.sched_getaffinity(0))


def machine_lines() -> list[str]:
    """nproc, CPU model, memory, kernel and Python, read from this machine."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return [
        f"machine: {os.cpu_count()} cores (nproc {_NPROC}), {model}{mem}",
        f"system:  Linux {platform.release()}, {platform.python_implementation()} "
        f"{platform.python_version()}",
    ]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


@dataclass(frozen=True)
class Latency:
    """Event→reply latencies of one run, in seconds."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p90(self) -> float:
        return percentile(self.samples, 90)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)

    @property
    def max(self) -> float:
        return max(self.samples) if self.samples else math.nan


def ms(seconds: float | None) -> str:
    """A duration in milliseconds with about three significant digits."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    value = seconds * 1000.0
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def num(value: float | int | None, unit: str = "", digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}{(' ' + unit) if unit else ''}"


@dataclass
class Table:
    """Rows of metrics, one column per system; cells are already-formatted strings."""

    columns: list[str]
    rows: list[tuple[str, list[str]]] = field(default_factory=list)
    notes_column: bool = False      # the last column is text (goals), aligned left

    def add(self, metric: str, cells: Sequence[str]) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{metric}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append((metric, list(cells)))

    def section(self, title: str) -> None:
        self.rows.append((title, [""] * len(self.columns)))

    def render(self) -> str:
        head = ["metric", *self.columns]
        widths = [max(len(head[0]), *(len(m) for m, _ in self.rows))]
        for i, col in enumerate(self.columns):
            widths.append(max(len(col), *(len(cells[i]) for _, cells in self.rows)))

        def line(cells: Sequence[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
            if self.notes_column:
                rest[-1] = cells[-1].ljust(widths[-1])
            return " | ".join([first, *rest]).rstrip()

        out = [line(head), "-+-".join("-" * w for w in widths)]
        out.extend(line([metric, *cells]) for metric, cells in self.rows)
        return "\n".join(out)
