"""Throughput of the plugin store: get, set and incr from 1 and 8 threads (issue #4).

    .venv/bin/python bench/store_bench.py [--quick] [--seconds S] [--dir DIR] [--no-postgres]

Backends: SQLite with synchronous=FULL and NORMAL (a fresh file in DIR, default a temp
dir under $TMPDIR), and PostgreSQL from scripts/postgres-test-server (a fresh schema,
dropped afterwards). `get` reads one key; `set` writes a small dict to a key per thread;
`incr` bumps one shared counter, so 8 threads contend for the same row. Every number is
measured by this run: completed calls divided by wall-clock time.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from rtmbotd.store import PluginStore, Store  # noqa: E402
from rtmbotd.store.url import resolve_url  # noqa: E402

OPS = ("get", "set", "incr")
THREADS = (1, 8)


def operation(ps: PluginStore, name: str) -> Callable[[int, int], object]:
    if name == "get":
        return lambda thread, n: ps.get("config")
    if name == "set":
        return lambda thread, n: ps.__setitem__(f"last:{thread}", {"n": n, "who": "bench"})
    return lambda thread, n: ps.incr("hits")


def measure(ps: PluginStore, name: str, threads: int, seconds: float) -> float:
    """Calls per second of `name` from `threads` threads, run together for `seconds`."""
    op = operation(ps, name)
    op(0, 0)                                          # warm the pool and the statement cache
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        start.wait()
        n = 0
        while time.monotonic() < deadline[0]:
            op(i, n)
            n += 1
        counts[i] = n
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    began = time.monotonic()
    deadline[0] = began + seconds
    start.wait()
    for w in workers:
        w.join()
    return sum(counts) / (time.monotonic() - began)


def run_backend(url: str, synchronous: str, seconds: float) -> dict[tuple[str, int], float]:
    with Store.open(url, synchronous=synchronous) as store:
        ps = store.plugin("bench-" + uuid.uuid4().hex[:6])
        ps["config"] = {"channels": ["C1", "C2"], "limit": 10}
        results = {(op, t): measure(ps, op, t, seconds) for op in OPS for t in THREADS}
        ps.clear()
    return results


def postgres_url() -> str | None:
    done = subprocess.run([str(REPO / "scripts" / "postgres-test-server")], capture_output=True, text=True)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode != 0 or not last.startswith("STORE_TEST_POSTGRES_URL="):
        print(f"PostgreSQL not available: {done.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return last.partition("=")[2]


def filesystem_of(path: Path) -> str:
    done = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True)
    lines = done.stdout.split()
    return lines[-1] if done.returncode == 0 and len(lines) > 1 else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="0.2 s per cell instead of 1.5 s")
    parser.add_argument("--seconds", type=float, help="seconds per cell")
    parser.add_argument("--dir", type=Path, help="where the SQLite files go (default: a temp dir)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.2 if args.quick else 1.5)

    workdir = Path(tempfile.mkdtemp(prefix="rtmbotd-store-bench-", dir=args.dir))
    rows: list[tuple[str, dict[tuple[str, int], float]]] = []
    try:
        for sync in ("FULL", "NORMAL"):
            url = f"sqlite:///{workdir}/bench-{sync.lower()}.sqlite"
            rows.append((f"SQLite synchronous={sync}", run_backend(url, sync, seconds)))
        pg = None if args.no_postgres else postgres_url()
        if pg:
            schema = "bench_" + uuid.uuid4().hex[:8]
            admin = create_engine(resolve_url(pg), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
            try:
                url = make_url(pg).update_query_dict({"options": f"-csearch_path={schema}"})
                rows.append(("PostgreSQL (127.0.0.1)", run_backend(url.render_as_string(hide_password=False),
                                                                   "FULL", seconds)))
            finally:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
                admin.dispose()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"store ops/s, {seconds:g} s per cell; Python {platform.python_version()}, SQLite "
          f"{sqlite3.sqlite_version}, {os.cpu_count()} CPUs; SQLite files on {filesystem_of(workdir.parent)}")
    header = ["backend"] + [f"{op} x{t}" for op in OPS for t in THREADS]
    widths = [max(26, len(header[0]))] + [max(9, len(h)) for h in header[1:]]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for name, results in rows:
        cells = [f"{results[(op, t)]:,.0f}" for op in OPS for t in THREADS]
        print("  ".join([name.ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells, widths[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
