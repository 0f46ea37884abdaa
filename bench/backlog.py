"""Draining a saved backlog (issue 11, item 2): the real `rtmbotd` process starts with
1,000, 10,000 and 60,000 messages in its store's outbox and sends them at the rate
limit's pace while a user's DMs are answered and the watchdog keeps pinging.

    .venv/bin/python bench/backlog.py [--quick] [--sizes 1000,10000,60000] [--no-pin]

One column per backlog size, side by side. Numbers come from this run only.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from children import REPO, BenchError, RtmbotdProcess, pin_cpus  # noqa: E402
from procstat import peak_rss_mib  # noqa: E402
from report import Latency, Table, machine_lines, ms, num  # noqa: E402
from workload import wait_connected  # noqa: E402

from rtmbotd import __version__  # noqa: E402
from rtmbotd.store import Store  # noqa: E402
from rtmbotd.testing.fakeslack import FakeSlack  # noqa: E402

REPEAT = REPO / "plugins" / "repeat"
CHANNELS = 20                 # the backlog is spread over this many channels
RATE = 50                     # RATE_LIMIT per channel: 20 x 50 x 0.9 (the outbox's margin) = 900 msg/s
DM_EVERY = 0.2                # s between a reply and the next DM during the drain
IDLE_DMS = 30
WATCHDOG_USEC = 2_000_000     # pings every 1 s
GOAL_DM = 0.100


@dataclass
class SizeResult:
    size: int
    to_ready: float | None = None
    drain_s: float | None = None
    during: Latency | None = None
    idle: Latency | None = None
    watchdog_gap: float | None = None
    rows_left: int | None = None
    rss_peak: float | None = None
    lost: int | None = None
    errors: list[str] = field(default_factory=list)


class Sent:
    """Reads the fake's journal of accepted messages incrementally (no copy of 60,000 dicts per look)."""

    def __init__(self, fake: FakeSlack) -> None:
        self.journal = fake.journal
        self.seen = 0
        self.backlog = 0
        self.replies: dict[str, float] = {}      # DM token -> received_at

    def scan(self) -> None:
        with self.journal._cond:                 # noqa: SLF001 - a benchmark reading the fake's journal
            new = self.journal._messages[self.seen:]   # noqa: SLF001
        self.seen += len(new)
        for m in new:
            text = m.get("text") or ""
            if text.startswith("backlog "):
                self.backlog += 1
            elif m["channel"] == "D1ALICE" and '"' in text:
                self.replies[text.split('"')[1]] = m["received_at"]

    def wait(self, predicate, timeout: float):  # noqa: ANN001, ANN201
        def check():  # noqa: ANN202
            self.scan()
            return predicate()
        try:
            return self.journal.wait_until(check, timeout)
        except TimeoutError:
            raise BenchError(f"timed out after {timeout:g} s: {self.backlog} backlog message(s) seen, "
                             f"replies to {sorted(self.replies)[:5]}") from None


def seed(url: str, size: int) -> None:
    with Store.open(url) as store:
        store.save_outbox([{"channel": f"C2BACK{i % CHANNELS:03d}", "text": f"backlog {i}", "plugin": "bench"}
                           for i in range(size)])


def dm(fake: FakeSlack, sent: Sent, token: str, timeout: float = 30.0) -> float:
    written_at = fake.message(token, channel="D1ALICE", user="U1ALICE")
    sent.wait(lambda: token in sent.replies, timeout)
    return sent.replies[token] - written_at


def run_size(fake: FakeSlack, root: Path, size: int) -> SizeResult:
    result = SizeResult(size)
    fake.clear()
    workdir = root / f"backlog-{size}"
    workdir.mkdir(parents=True)
    url = f"sqlite:///{workdir / 'store.sqlite'}"
    seed(url, size)
    bot = RtmbotdProcess(workdir, fake.url, "rtm", [REPEAT],
                         settings={"STORE_URL": url, "RATE_LIMIT": RATE, "RATE_BURST": 1})
    bot.env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
    sent = Sent(fake)
    try:
        opened = fake.connections_opened
        bot.start()
        ready_at = bot.wait_ready(timeout=120)
        result.to_ready = ready_at - bot.spawned_at
        wait_connected(fake, opened, bot)             # a DM before the link would reach no one
        started = time.monotonic()
        samples: list[float] = []
        i = 0
        while True:
            sent.scan()
            if sent.backlog >= size:
                break
            bot.check_alive()
            samples.append(dm(fake, sent, f"during-{i}"))
            i += 1
            time.sleep(DM_EVERY)                  # pacing the DMs, not waiting for a result
            if time.monotonic() - started > 30 + size / 100:
                raise BenchError(f"drain stalled: {sent.backlog} of {size} sent")
        drained_at = max(m["received_at"] for m in fake.sent_messages() if m["text"].startswith("backlog "))
        result.drain_s = drained_at - ready_at
        result.during = Latency(tuple(samples))
        bot.notify.wait_for("WATCHDOG", "1", after=len(bot.notify))      # the first ping after the drain
        pings = [at for at, fields in list(bot.notify.messages) if "WATCHDOG" in fields and at >= ready_at]
        result.watchdog_gap = max((b - a for a, b in zip(pings, pings[1:])), default=None)
        idle = []
        for j in range(IDLE_DMS):            # paced like the ones during the drain (RATE_LIMIT applies)
            idle.append(dm(fake, sent, f"idle-{j}"))
            time.sleep(DM_EVERY)
        result.idle = Latency(tuple(idle))
        result.rss_peak = peak_rss_mib(bot.pid)
        texts = {m["text"] for m in fake.sent_messages() if m["text"].startswith("backlog ")}
        result.lost = size - len(texts)
    except BenchError as exc:
        result.errors.append(str(exc))
    except Exception:  # noqa: BLE001 - report and go on with the next size
        result.errors.append(traceback.format_exc(limit=3))
    finally:
        bot.stop()
    with Store.open(url) as store:
        result.rows_left = len(store.load_outbox())
    return result


def render(results: list[SizeResult]) -> str:
    pace = CHANNELS * RATE * 0.9
    table = Table([f"{r.size:,} saved" for r in results] + ["goal"], notes_column=True)
    table.add("start → READY=1 (reads the saved rows)", [ms(r.to_ready) for r in results] + [""])
    table.add("drain: READY=1 → last saved message received", [num(r.drain_s, "s", 1) for r in results]
              + [f"the rate limit's pace: {pace:,.0f} msg/s"])
    table.add("  ms per saved message", [num(r.drain_s * 1000 / r.size, "ms", 2) if r.drain_s else "-"
                                         for r in results] + ["linear: the same for every size"])
    table.add("  messages/s", [num(r.size / r.drain_s) if r.drain_s else "-" for r in results] + [""])
    table.add("DM → reply during the drain, median", [ms(r.during.median) if r.during else "-" for r in results]
              + [f"< {GOAL_DM * 1000:.0f} ms"])
    table.add("  p90 / max", [f"{ms(r.during.p90)} / {ms(r.during.max)}" if r.during else "-" for r in results]
              + [""])
    table.add("  DMs answered during the drain", [str(len(r.during.samples)) if r.during else "-" for r in results]
              + [""])
    table.add("DM → reply once idle, median", [ms(r.idle.median) if r.idle else "-" for r in results] + [""])
    table.add("largest gap between watchdog pings", [ms(r.watchdog_gap) for r in results]
              + [f"~{WATCHDOG_USEC / 2e6:g} s (WATCHDOG_USEC/2)"])
    table.add("saved messages lost / rows left after", [f"{num(r.lost)} / {num(r.rows_left)}" for r in results]
              + ["0 / 0"])
    table.add("peak RSS", [num(r.rss_peak, "MiB", 1) for r in results] + [""])
    return table.render()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small backlogs (200, 1,000, 3,000)")
    parser.add_argument("--sizes", help="comma-separated backlog sizes")
    parser.add_argument("--no-pin", action="store_true", help="do not pin driver and daemon to CPUs")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else \
        ([200, 1000, 3000] if args.quick else [1000, 10000, 60000])
    pinning = pin_cpus(not args.no_pin)
    results = []
    with tempfile.TemporaryDirectory(prefix="rtmbotd-backlog-") as tmp, FakeSlack() as fake:
        for i in range(CHANNELS):
            fake.add_channel(f"C2BACK{i:03d}", f"backlog-{i}")
        for size in sizes:
            print(f"backlog of {size:,} ...", file=sys.stderr, flush=True)
            results.append(run_size(fake, Path(tmp), size))
    print(f"rtmbotd {__version__}: draining a saved outbox, RTM, {CHANNELS} channels at RATE_LIMIT {RATE} "
          f"(+ a DM every {DM_EVERY:g} s during the drain)")
    for line in machine_lines():
        print(line)
    print(pinning)
    print()
    print(render(results))
    failed = [f"{r.size}: {e}" for r in results for e in r.errors]
    for line in failed:
        print("error:", line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
