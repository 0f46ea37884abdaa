"""rtmbotd beside python-rtmbot 0.4.1 and a floor client, on the same fake Slack (issue #6).

    bench/compare [--quick] [--write-results] [--metrics]

python-rtmbot 0.4.1 comes from PyPI into a throwaway virtualenv under
/tmp/rtmbotd-bench-venvs/ and runs unedited (bench/rtmbot_on_fake.py holds the shims on
its import path). It, rtmbotd (RTM and Socket Mode) and the floor (bench/floor_client.py)
each get their own fake Slack and the same traffic, all running side by side. One table: a
row per metric, a column per system, ratios to the floor of the same protocol. With
--metrics, rtmbotd also runs with METRICS set (scraped every SCRAPE_EVERY s, as a
Prometheus would), side by side with it off: the cost at the median latency is reported.
"""
from __future__ import annotations

import argparse
import datetime
import math
import shutil
import socket
import sys
import threading
import urllib.request
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from children import Child, RtmbotdProcess, child_env, pin_cpus  # noqa: E402
from procstat import CpuUse, cpu_seconds, rss_mib  # noqa: E402
from report import RSS_GOAL_MIB, Latency, Table, machine_lines, ms, num  # noqa: E402
from workload import Burst, burst_run, first_reply, latency_run  # noqa: E402
from results import RESULTS, write_section  # noqa: E402

import rtmbot_venv  # noqa: E402
import rtmbotd_venv  # noqa: E402
from rtmbotd.testing.fakeslack import FakeSlack  # noqa: E402

PLUGIN = BENCH / "compare_plugin" / "repeat.py"
ACTIVE = ["plugins.repeat.RepeatPlugin"]
SETTLE = 1.0
LATENCY_GOAL = 1.5          # × the floor
METRICS_GOAL = 0.03         # METRICS on costs at most 3 % at the median latency
SCRAPE_EVERY = 5.0          # s; Prometheus's default is 15 s, so this is harsher
METRICS_SUFFIX = " +METRICS"


@dataclass(frozen=True)
class Plan:
    latency_events: int
    warmup: int
    burst_events: int
    burst_deadline: float
    idle_s: float
    rounds: int          # latency events go in this many rounds, the systems taking turns
    round_warmup: int    # events not counted at the start of each later round (a system
                         # idled while the others ran; its first replies are slower)


FULL = Plan(latency_events=500, warmup=20, burst_events=5000, burst_deadline=60.0, idle_s=10.0,
            rounds=10, round_warmup=5)
QUICK = Plan(latency_events=60, warmup=5, burst_events=500, burst_deadline=10.0, idle_s=3.0,
             rounds=3, round_warmup=3)


@dataclass
class Result:
    label: str
    protocol: str
    floor: str | None              # label of the floor it is compared with
    latency: Latency | None = None
    burst: Burst | None = None
    idle: CpuUse | None = None
    rss_start: float | None = None
    to_first_reply: float | None = None
    round_medians: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass
class System:
    label: str
    protocol: str
    floor: str | None
    make: Callable[[FakeSlack, Path], Child]   # writes its files, returns it unstarted
    log_lines: list[str] = field(default_factory=list)


def _copy_plugin(workdir: Path) -> None:
    (workdir / "plugins").mkdir(parents=True, exist_ok=True)
    shutil.copy(PLUGIN, workdir / "plugins" / "repeat.py")


def make_rtmbotd(mode: str, ours: rtmbotd_venv.RtmbotdEnv,
                 scraper: "Scraper | None" = None) -> Callable[[FakeSlack, Path], Child]:
    def make(fake: FakeSlack, workdir: Path) -> Child:
        _copy_plugin(workdir)
        settings = {"ACTIVE_PLUGINS": ACTIVE}
        if scraper is not None:
            settings["METRICS"] = scraper.add()
        child = RtmbotdProcess(workdir, fake.url, mode, [], settings=settings, argv=[str(ours.script)])
        if scraper is not None:
            child.stop = _forgotten_first(child.stop, scraper, settings["METRICS"])
        return child
    return make


class Scraper:
    """GET /metrics of every METRICS system every SCRAPE_EVERY seconds, on a thread."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.scrapes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def add(self) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{sock.getsockname()[1]}"
        self.urls.append(f"http://{address}/metrics")
        return address

    def forget(self, address: str) -> None:
        """No longer scrape `address` (its system stopped after its burst)."""
        self.urls = [url for url in self.urls if url != f"http://{address}/metrics"]

    def start(self) -> "Scraper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while not self._stop.wait(SCRAPE_EVERY):
            for url in self.urls:
                try:
                    with opener.open(url, timeout=5) as response:
                        response.read()
                    self.scrapes += 1
                except OSError:
                    self.failures += 1


def _forgotten_first(stop: Callable[[], int | None], scraper: Scraper, address: str) -> Callable[[], int | None]:
    def forget_then_stop() -> int | None:
        scraper.forget(address)
        return stop()
    return forget_then_stop


def make_floor(mode: str, ours: rtmbotd_venv.RtmbotdEnv) -> Callable[[FakeSlack, Path], Child]:
    def make(fake: FakeSlack, workdir: Path) -> Child:
        workdir.mkdir(parents=True, exist_ok=True)
        return Child(f"floor-{mode}", [str(ours.python), str(BENCH / "floor_client.py"),
                                        "--api-url", fake.url, "--mode", mode], workdir, child_env())
    return make


def make_rtmbot(env: rtmbot_venv.RtmbotEnv) -> Callable[[FakeSlack, Path], Child]:
    def make(fake: FakeSlack, workdir: Path) -> Child:
        _copy_plugin(workdir)
        config = workdir / "rtmbot.conf"
        # Plain YAML that PyYAML 3.13 reads; the keys of python-rtmbot's README.
        config.write_text(f"SLACK_TOKEN: xoxb-bench\nBASE_PATH: {workdir}\n"
                          f"LOGFILE: {workdir / 'rtmbot.log'}\nDEBUG: false\n"
                          f"ACTIVE_PLUGINS:\n  - {ACTIVE[0]}\n")
        return Child("python-rtmbot", [str(env.python), str(BENCH / "rtmbot_on_fake.py"),
                                        "--api-url", fake.url, "-c", str(config)],
                     workdir, child_env())
    return make


class Running:
    """One system on its own fake Slack, started and kept running for the whole comparison."""

    def __init__(self, system: System, workdir: Path) -> None:
        self.system = system
        self.result = Result(system.label, system.protocol, system.floor)
        self.fake = FakeSlack().start()
        # python-rtmbot's repeat example has no check for the bot's own messages and would
        # answer its own replies forever, so no system gets them echoed back.
        self.fake.echo_own_messages = False
        try:
            self.child = system.make(self.fake, workdir)
        except BaseException:
            self.fake.stop()
            raise
        self.samples: list[float] = []
        self.closed = False

    @property
    def ok(self) -> bool:
        return self.result.error is None

    def fail(self, exc: BaseException) -> None:
        self.result.error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
        self.child.stop()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.child.stop()
        self.fake.stop()


def _say(running: Running, what: str) -> None:
    print(f"[{running.system.label}] {what}", file=sys.stderr, flush=True)


def measure_all(systems: list[System], plan: Plan, workroot: Path) -> list[Result]:
    """Start every system, then measure them side by side, phase by phase.

    Starts and bursts run one system at a time (the others idle); idle CPU is read for
    all in the same window; latency runs in rounds that rotate the systems' order, so
    drift in the machine weighs on every column alike.
    """
    running: list[Running] = []
    unstarted: dict[str, Result] = {}
    try:
        for system in systems:
            try:
                r = Running(system, workroot / system.label.replace(" ", "-"))
            except Exception as exc:  # noqa: BLE001 - shown in its column
                traceback.print_exc(file=sys.stderr)
                unstarted[system.label] = Result(system.label, system.protocol, system.floor,
                                                 error=f"{type(exc).__name__}: {exc}")
                continue
            running.append(r)
            _say(r, "starting")
            try:
                opened = r.fake.connections_opened
                r.child.start()
                r.result.to_first_reply = first_reply(r.fake, r.child, opened) - r.child.spawned_at
            except Exception as exc:  # noqa: BLE001 - shown in its column
                r.fail(exc)
        live = [r for r in running if r.ok]
        time.sleep(SETTLE)
        for r in live:
            r.result.rss_start = rss_mib(r.child.pid)
        print(f"idle CPU of all {len(live)} for {plan.idle_s:g} s", file=sys.stderr, flush=True)
        before = {id(r): (cpu_seconds(r.child.pid), time.monotonic()) for r in live}
        time.sleep(plan.idle_s)
        for r in live:
            cpu0, t0 = before[id(r)]
            r.result.idle = CpuUse(cpu_seconds(r.child.pid) - cpu0, time.monotonic() - t0)
        per_round = math.ceil(plan.latency_events / plan.rounds)
        for k in range(plan.rounds):
            print(f"latency round {k + 1}/{plan.rounds}: {per_round} events each", file=sys.stderr,
                  flush=True)
            live = [r for r in running if r.ok]
            for r in live[k % len(live):] + live[:k % len(live)] if live else []:
                try:
                    batch = latency_run(r.fake, r.child, per_round,
                                        plan.warmup if k == 0 else plan.round_warmup)
                    r.samples.extend(batch.samples)
                    r.result.round_medians.append(batch.median)
                except Exception as exc:  # noqa: BLE001
                    r.fail(exc)
        for r in running:
            if r.ok:
                r.result.latency = Latency(tuple(r.samples))
        for r in [r for r in running if r.ok]:
            _say(r, f"burst: {plan.burst_events} events")
            try:
                r.result.burst = burst_run(r.fake, r.child, plan.burst_events, plan.burst_deadline)
                r.child.check_alive()
            except Exception as exc:  # noqa: BLE001
                r.fail(exc)
            # The burst is the last phase: stopped now, a system still busy with it (python-rtmbot
            # answering its backlog at 10/s, rtmbotd's writer deleting saved rows) takes no CPU
            # from the next system's burst (they share one CPU).
            r.close()
    finally:
        for r in running:
            r.close()
    done = {r.system.label: r.result for r in running}
    return [done.get(s.label) or unstarted[s.label] for s in systems]


def ratio(value: float | None, floor: float | None) -> str:
    if value is None or floor is None or floor <= 0 or math.isnan(value) or math.isnan(floor):
        return ""
    r = value / floor
    return f" (×{r:.2f})" if r < 10 else f" (×{r:.0f})"


def build_table(results: list[Result], plan: Plan) -> Table:
    by_label = {r.label: r for r in results}
    table = Table([r.label for r in results])

    def floor_of(r: Result) -> Result | None:
        return by_label.get(r.floor) if r.floor else None

    def cells(fn: Callable[[Result], str]) -> list[str]:
        return [("error" if r.error and fn(r) == "-" else fn(r)) for r in results]

    def lat(attr: str) -> Callable[[Result], str]:
        def cell(r: Result) -> str:
            if not r.latency:
                return "-"
            value = getattr(r.latency, attr)
            f = floor_of(r)
            return ms(value) + (ratio(value, getattr(f.latency, attr)) if f and f.latency else "")
        return cell

    table.section(f"event→reply latency, {plan.latency_events} sequential events in {plan.rounds} "
                  f"rounds (+{plan.warmup}, then +{plan.round_warmup} warm-up)")
    for attr in ("median", "p90", "p99", "max"):
        table.add(f"  {attr}", cells(lat(attr)))
    table.add("  round medians, lowest–highest", cells(
        lambda r: f"{ms(min(r.round_medians))[:-3]}–{ms(max(r.round_medians))}" if r.round_medians
        else "-"))

    def burst(fn: Callable[[Burst], str]) -> Callable[[Result], str]:
        return lambda r: fn(r.burst) if r.burst else "-"

    def rate(r: Result) -> str:
        if not r.burst:
            return "-"
        f = floor_of(r)
        floor_rate = f.burst.replies_per_s if f and f.burst else None
        # A lower rate is worse: the ratio is floor ÷ system, like the latencies.
        return num(r.burst.replies_per_s) + (ratio(floor_rate, r.burst.replies_per_s) if floor_rate else "")

    table.section(f"burst of {plan.burst_events:,} events pushed at once "
                  f"(wait ≤ {plan.burst_deadline:g} s for the replies)")
    table.add("  events the fake could write", cells(burst(
        lambda b: f"{b.pushed:,} in {ms(b.push_s)}" if b.pushed == b.count
        else f"{b.pushed:,} of {b.count:,} (bot not reading)")))
    table.add("  replies/s (first push → last reply)", cells(rate))
    table.add("  replies lost (not answered in the wait)", cells(burst(
        lambda b: f"{b.missing:,}" + ("" if b.missing == 0 else f" after {b.waited_s:.0f} s"))))
    table.add("  duplicate replies", cells(burst(lambda b: f"{b.duplicates}")))
    table.section("resources and start")
    table.add(f"  idle CPU over {plan.idle_s:g} s, % of one core",
              cells(lambda r: num(r.idle.percent_of_core, "%", 3) if r.idle else "-"))
    table.add("  RSS after start", cells(lambda r: num(r.rss_start, "MiB", 1)))
    table.add("  start → first reply", cells(lambda r: ms(r.to_first_reply)))
    return table


def goal_lines(results: list[Result]) -> list[str]:
    by_label = {r.label: r for r in results}
    old = by_label.get("python-rtmbot 0.4.1")
    lines = ["goals for rtmbotd:"]
    for r in results:
        if not r.label.startswith("rtmbotd"):
            continue
        if r.error:
            lines.append(f"  {r.label}: did not finish ({r.error})")
            continue
        f = by_label.get(r.floor) if r.floor else None
        if f and f.latency and not f.error:
            parts = []
            for attr in ("median", "p90", "p99"):
                x = getattr(r.latency, attr) / getattr(f.latency, attr)
                parts.append(f"{attr} ×{x:.2f} {'met' if x <= LATENCY_GOAL else 'MISSED'}")
            lines.append(f"  {r.label}: latency within {LATENCY_GOAL}× of {f.label}: " + ", ".join(parts))
        else:
            lines.append(f"  {r.label}: latency: no floor to compare with")
        lost = r.burst.missing if r.burst else None
        lines.append(f"  {r.label}: zero loss: {lost} lost, {'met' if lost == 0 else 'MISSED'}")
        rss_ok = r.rss_start is not None and r.rss_start <= RSS_GOAL_MIB
        rss = f"RSS {num(r.rss_start, 'MiB', 1)} ≤ {RSS_GOAL_MIB:g} MiB: {'met' if rss_ok else 'MISSED'}"
        if old and old.idle and not old.error:
            cpu_ok = r.idle.percent_of_core <= old.idle.percent_of_core
            lines.append(f"  {r.label}: idle CPU {r.idle.percent_of_core:.3f} % vs python-rtmbot's "
                         f"{old.idle.percent_of_core:.3f} %: {'met' if cpu_ok else 'MISSED'}; {rss}")
        else:
            lines.append(f"  {r.label}: idle CPU: python-rtmbot has no figures to compare with; {rss}")
    return lines


def metrics_lines(results: list[Result], scraper: Scraper) -> list[str]:
    """The cost of METRICS, RTM and Socket Mode side by side: each rtmbotd with it on next
    to the same protocol with it off, from the same run (the rounds rotate, so both saw the
    same machine)."""
    by_label = {r.label: r for r in results}
    pairs = [(off, by_label.get(off.label + METRICS_SUFFIX)) for off in results
             if off.label.startswith("rtmbotd ") and not off.label.endswith(METRICS_SUFFIX)]
    pairs = [(off, on) for off, on in pairs if on is not None]
    table = Table([col for off, _ in pairs for col in (f"{_mode(off)} off", f"{_mode(off)} on", "cost")])

    def row(metric: str, fn: Callable[[Result], float | None], show: Callable[[float], str],
            rate: bool = False) -> None:
        cells = []
        for off, on in pairs:
            a, b = _figure(fn, off), _figure(fn, on)
            cost = _cost(b, a) if rate else _cost(a, b)       # a rate: the cost is going slower
            cells += [show(a) if a is not None else "-", show(b) if b is not None else "-", cost]
        table.add(metric, cells)

    row("latency median", lambda r: r.latency.median, ms)
    row("latency p90", lambda r: r.latency.p90, ms)
    row("latency p99", lambda r: r.latency.p99, ms)
    row("burst replies/s (cost: off ÷ on − 1)", lambda r: r.burst.replies_per_s, num, rate=True)
    row("idle CPU, % of one core", lambda r: r.idle.percent_of_core, lambda v: f"{v:.3f} %")
    row("RSS after start", lambda r: r.rss_start, lambda v: f"{v:.1f} MiB")
    lines = [f"METRICS on vs off (scraped every {SCRAPE_EVERY:g} s: {scraper.scrapes} scrapes, "
             f"{scraper.failures} failed); cost = on ÷ off − 1:", table.render()]
    for off, on in pairs:
        if on.error or off.error or not on.latency or not off.latency:
            lines.append(f"  {_mode(off)}: no figures ({on.error or off.error})")
            continue
        cost = on.latency.median / off.latency.median - 1
        rounds = sorted(b / a - 1 for a, b in zip(off.round_medians, on.round_medians) if a > 0)
        spread = (f"; per round {rounds[len(rounds) // 2] * 100:+.1f} % "
                  f"({rounds[0] * 100:+.1f} to {rounds[-1] * 100:+.1f} %)") if rounds else ""
        lines.append(f"  {_mode(off)}: median {cost * 100:+.1f} % (goal <= {METRICS_GOAL * 100:g} %: "
                     f"{'met' if cost <= METRICS_GOAL else 'MISSED'}){spread}")
    return lines


def _mode(result: Result) -> str:
    return result.label.removeprefix("rtmbotd ")


def _figure(fn: Callable[[Result], float | None], result: Result) -> float | None:
    try:
        value = fn(result)
    except AttributeError:          # that phase has no figures (an error)
        return None
    return None if value is None or math.isnan(value) else value


def _cost(base: float | None, value: float | None) -> str:
    return f"{(value / base - 1) * 100:+.1f} %" if base and value is not None else "-"


def versions_line(env: rtmbot_venv.RtmbotEnv | None, ours: rtmbotd_venv.RtmbotdEnv) -> list[str]:
    v = ours.versions
    libs = ", ".join(f"{p} {v.get(p)}" for p in ("websockets", "aiohttp", "slack_sdk", "PyYAML", "SQLAlchemy"))
    lines = [f"rtmbotd {v.get('rtmbotd')} ({libs}) installed with pip (not editable) in",
             f"         {ours.python.parent.parent}; floor: the same venv, websockets and aiohttp"]
    if env is not None:
        v = env.versions
        lines.append(f"python-rtmbot {v.get('rtmbot')} (slackclient {v.get('slackclient')}, "
                     f"websocket-client {v.get('websocket-client')}, PyYAML {v.get('PyYAML')}, "
                     f"requests {v.get('requests')}) in {env.python.parent.parent}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/compare", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (smaller counts)")
    parser.add_argument("--write-results", action="store_true",
                        help=f"also write {RESULTS.relative_to(BENCH.parent)} from this run's output")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs)")
    parser.add_argument("--metrics", action="store_true",
                        help="also run rtmbotd with METRICS on, scraped, beside it off; report the cost")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the benchmark and the systems to separate CPUs")
    args = parser.parse_args(argv)
    if args.write_results and (args.quick or args.no_pin):
        parser.error("--write-results records a full, pinned run; drop --quick / --no-pin")
    placement = pin_cpus(not args.no_pin)
    plan = QUICK if args.quick else FULL
    began = time.monotonic()
    started_utc = datetime.datetime.now(datetime.timezone.utc)
    workroot = Path(tempfile.mkdtemp(prefix="rtmbotd-bench-compare-"))

    try:
        ours = rtmbotd_venv.ensure(progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (rtmbot_venv.SetupError, OSError, ValueError) as exc:
        print(f"cannot install this checkout of rtmbotd into a venv: {exc}", file=sys.stderr)
        return 1
    env, setup_error = None, None
    try:
        env = rtmbot_venv.ensure(progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (rtmbot_venv.SetupError, OSError, ValueError) as exc:
        setup_error = f"cannot install python-rtmbot 0.4.1: {exc}"
        print(setup_error, file=sys.stderr)

    systems = [
        System("floor RTM", "rtm", None, make_floor("rtm", ours)),
        System("floor Socket Mode", "socket_mode", None, make_floor("socket_mode", ours)),
        System("rtmbotd RTM", "rtm", "floor RTM", make_rtmbotd("rtm", ours)),
        System("rtmbotd Socket Mode", "socket_mode", "floor Socket Mode", make_rtmbotd("socket_mode", ours)),
    ]
    if env is not None:
        systems.append(System("python-rtmbot 0.4.1", "rtm", "floor RTM", make_rtmbot(env)))
    scraper = Scraper() if args.metrics else None
    if scraper is not None:
        for label, mode, floor in (("rtmbotd RTM", "rtm", "floor RTM"),
                                   ("rtmbotd Socket Mode", "socket_mode", "floor Socket Mode")):
            systems.append(System(label + METRICS_SUFFIX, mode, floor, make_rtmbotd(mode, ours, scraper)))
        scraper.start()
    try:
        results = {r.label: r for r in measure_all(systems, plan, workroot)}
    finally:
        if scraper is not None:
            scraper.stop()
    if env is None:
        results["python-rtmbot 0.4.1"] = Result("python-rtmbot 0.4.1", "rtm", "floor RTM",
                                                error=setup_error)
    order = ["python-rtmbot 0.4.1", "rtmbotd RTM", "rtmbotd Socket Mode", "floor RTM",
             "floor Socket Mode"]
    if scraper is not None:
        order[3:3] = ["rtmbotd RTM" + METRICS_SUFFIX, "rtmbotd Socket Mode" + METRICS_SUFFIX]
    ordered = [results[label] for label in order]
    took = time.monotonic() - began

    command = "bench/compare" + (" --quick" if args.quick else "") + \
        (" --metrics" if args.metrics else "") + (" --write-results" if args.write_results else "")
    out = [f"{command}: rtmbotd vs python-rtmbot 0.4.1 vs the floor"
           + (" (QUICK: smoke-test counts)" if args.quick else ""),
           f"date:    {started_utc:%Y-%m-%d %H:%M} UTC, took {took:.0f} s",
           *machine_lines(), *(f"version: {line}" for line in versions_line(env, ours)),
           "setup:   each system on its own fake Slack (rtmbotd.testing.FakeSlack, in the benchmark",
           "         process, 127.0.0.1), all running side by side: started one by one, idle CPU read",
           f"         for all in one window, latency in {plan.rounds} rounds taking turns, bursts one at a time",
           "         (each system stopped after its own, so what it still does takes nothing from the next);",
           "         bot's own messages not echoed back, no rate limit anywhere",
           "         (rtmbotd: RATE_LIMIT: 0); plugin: bench/compare_plugin/repeat.py (RepeatPlugin, via",
           "         ACTIVE_PLUGINS) on python-rtmbot and rtmbotd; DMs to D1ALICE",
           f"cpus:    {placement}",
           "latency: fake's received_at of the reply − the fake's time.monotonic() once it wrote the event;",
           "         (×n) = this ÷ the floor of the same protocol (for replies/s: floor ÷ this)",
           "", build_table(ordered, plan).render(), "", *goal_lines(ordered),
           *(metrics_lines(ordered, scraper) if scraper is not None else [])]
    errors = [f"{r.label}: ERROR {r.error}" for r in ordered if r.error]
    if errors:
        out += ["", *errors]
    if env is not None and env.notes:
        out += ["", "python-rtmbot install: " + "; ".join(env.notes)]
    if env is not None:
        out += ["python-rtmbot runs unedited; bench/rtmbot_on_fake.py shims on its import path: Web API",
                "URL → fake, collections.Hashable for PyYAML 3.x, plain-ws 'no data' seen as TLS's",
                "want-read. Its loop (rtmbot/core.py) sleeps 0.1 s per iteration, and slackclient 1.x's",
                "rtm_read returns at most one frame per call."]
    text = "\n".join(out)
    print(text)
    if args.write_results:
        write_results(text, command)
        print(f"\nwrote {RESULTS}")
    if not args.keep and not errors:
        shutil.rmtree(workroot, ignore_errors=True)
    else:
        print(f"work folder (configs, logs): {workroot}")
    return 1 if any(r.error for r in ordered if r.label.startswith(("rtmbotd", "floor"))) else 0


def write_results(text: str, command: str) -> None:
    write_section("compare", "rtmbotd, python-rtmbot 0.4.1 and the floor (bench/compare)", command, text)


if __name__ == "__main__":
    raise SystemExit(main())
