from rtmbotd.runtime.scheduler import Scheduler


class Clock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


def test_first_run_immediately_then_every_interval():
    clock = Clock()
    s = Scheduler(clock)
    s.add("job", 10, "target")
    assert [e.key for e in s.due(100.0)] == ["job"]
    s.done("job")
    assert s.due(105.0) == []
    assert s.next_deadline() == 110.0
    assert [e.key for e in s.due(110.0)] == ["job"]


def test_busy_job_is_skipped_not_piled_up():
    s = Scheduler(Clock())
    s.add("job", 10, None)
    assert len(s.due(100.0)) == 1
    # still running at the next two deadlines
    assert s.due(110.0) == []
    assert s.due(125.0) == []
    s.done("job")
    assert len(s.due(130.0)) == 1


def test_deadlines_do_not_drift():
    s = Scheduler(Clock())
    s.add("job", 10, None)
    s.due(100.0)
    s.done("job")
    s.due(113.5)       # ran late
    s.done("job")
    assert s.next_deadline() == 120.0


def test_remove_where():
    s = Scheduler(Clock())
    s.add(("a", 1), 5, None)
    s.add(("b", 1), 5, None)
    assert s.remove_where(lambda k: k[0] == "a") == 1
    assert len(s) == 1


def test_rejects_non_positive_interval():
    import pytest
    with pytest.raises(ValueError):
        Scheduler(Clock()).add("x", 0, None)


# -- cron jobs: wall-clock times in a zone, on injected clocks ---------------------------

from datetime import datetime, timezone  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

from rtmbotd.runtime.cron import parse  # noqa: E402
from rtmbotd.runtime.scheduler import CATCH_UP  # noqa: E402

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


class Clocks:
    """A monotonic and a wall clock that move together unless a test jumps one."""

    def __init__(self, wall: datetime):
        self.mono = 1000.0
        self.wall = wall.timestamp()

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def cron_scheduler(start: datetime, zone=BERLIN):
    clocks = Clocks(start)
    return Scheduler(lambda: clocks.mono, lambda: clocks.wall, zone), clocks


def runs_until(s, clocks, end: datetime, zone=BERLIN) -> list[str]:
    """Sleep to each next deadline as the daemon's loop does; the local times jobs ran at."""
    ran = []
    while True:
        deadline = s.next_deadline()
        if deadline is None or clocks.wall + (deadline - clocks.mono) > end.timestamp():
            return ran
        clocks.advance(max(0.0, deadline - clocks.mono))
        for entry in s.due(clocks.mono):
            ran.append(datetime.fromtimestamp(clocks.wall, zone).isoformat())
            s.done(entry.key)


def local(zone, *args, fold=0):
    return datetime(*args, tzinfo=zone, fold=fold)


def test_daily_job_runs_once_when_berlin_springs_forward():
    # 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 never happens, Debian runs it at 03:00
    s, clocks = cron_scheduler(local(BERLIN, 2026, 3, 28, 12))
    s.add("job", parse("30 2 * * *"), None)
    assert runs_until(s, clocks, local(BERLIN, 2026, 3, 31, 12)) == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]


def test_daily_job_runs_once_when_berlin_falls_back():
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice, the job runs at the first
    s, clocks = cron_scheduler(local(BERLIN, 2026, 10, 24, 12))
    s.add("job", parse("30 2 * * *"), None)
    assert runs_until(s, clocks, local(BERLIN, 2026, 10, 26, 12)) == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_daily_job_registered_in_the_repeated_hour_waits_for_the_next_day():
    # 02:10 CET, the second pass: today's 02:30 (CEST) is over
    s, clocks = cron_scheduler(local(BERLIN, 2026, 10, 25, 2, 10, fold=1))
    s.add("job", parse("30 2 * * *"), None)
    assert runs_until(s, clocks, local(BERLIN, 2026, 10, 26, 12)) == ["2026-10-26T02:30:00+01:00"]


def test_daily_job_across_new_york_dst_changes():
    # 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST
    s, clocks = cron_scheduler(local(NEW_YORK, 2026, 3, 7, 12), NEW_YORK)
    s.add("spring", parse("30 2 * * *"), None)
    assert runs_until(s, clocks, local(NEW_YORK, 2026, 3, 9, 12), NEW_YORK) == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    s, clocks = cron_scheduler(local(NEW_YORK, 2026, 10, 31, 12), NEW_YORK)
    s.add("fall", parse("30 1 * * *"), None)
    assert runs_until(s, clocks, local(NEW_YORK, 2026, 11, 2, 12), NEW_YORK) == [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]


def test_hourly_job_runs_every_real_hour_across_fall_back():
    # Debian schedules jobs of hourly granularity or finer by the clock: 02:00 twice
    s, clocks = cron_scheduler(local(BERLIN, 2026, 10, 25, 0, 30))
    s.add("job", parse("0 * * * *"), None)
    assert runs_until(s, clocks, local(BERLIN, 2026, 10, 25, 3, 30)) == [
        "2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"]


def test_leap_day():
    s, clocks = cron_scheduler(local(BERLIN, 2027, 1, 1))
    s.add("job", parse("0 12 29 2 *"), None)
    assert runs_until(s, clocks, local(BERLIN, 2033, 1, 1)) == [
        "2028-02-29T12:00:00+01:00", "2032-02-29T12:00:00+01:00"]


def test_weekly_runs_sunday_midnight():
    s, clocks = cron_scheduler(local(BERLIN, 2026, 12, 2, 15))      # a Wednesday
    s.add("job", parse("@weekly"), None)
    assert runs_until(s, clocks, local(BERLIN, 2026, 12, 20, 1)) == [
        "2026-12-06T00:00:00+01:00", "2026-12-13T00:00:00+01:00", "2026-12-20T00:00:00+01:00"]


def test_steps_ranges_names_and_lists():
    s, clocks = cron_scheduler(local(BERLIN, 2026, 12, 4, 10, 40))   # a Friday
    s.add("job", parse("*/20 9-10 * * MON-FRI"), None)
    s.add("other", parse("0 8,12 * DEC sat,SUN"), None)
    assert runs_until(s, clocks, local(BERLIN, 2026, 12, 7, 10, 30)) == [
        "2026-12-05T08:00:00+01:00", "2026-12-05T12:00:00+01:00",
        "2026-12-06T08:00:00+01:00", "2026-12-06T12:00:00+01:00",
        "2026-12-07T09:00:00+01:00", "2026-12-07T09:20:00+01:00", "2026-12-07T09:40:00+01:00",
        "2026-12-07T10:00:00+01:00", "2026-12-07T10:20:00+01:00"]


def test_times_before_registration_are_not_replayed():
    s, clocks = cron_scheduler(local(BERLIN, 2026, 12, 7, 9, 0, 30))
    s.add("job", parse("0 9 * * *"), None)
    assert s.due(clocks.mono) == []
    assert s.next_deadline() == clocks.mono + 24 * 3600 - 30


def test_cron_deadline_is_the_wall_time_on_the_monotonic_clock():
    s, clocks = cron_scheduler(local(BERLIN, 2026, 12, 7, 8, 59, 59, 250000))
    s.add("job", parse("* * * * *"), None)
    assert s.next_deadline() == clocks.mono + 0.75


def test_clock_set_back_runs_a_job_neither_early_nor_twice():
    s, clocks = cron_scheduler(local(BERLIN, 2026, 12, 7, 8, 59))
    s.add("job", parse("0 9 * * *"), None)
    clocks.advance(60)
    assert len(s.due(clocks.mono)) == 1
    s.done("job")
    clocks.wall -= 3600        # NTP steps the clock back an hour: 08:00 again
    clocks.advance(3600)       # the monotonic deadline for 09:00 tomorrow is not reached;
    assert s.due(clocks.mono) == []     # and at 09:00 again by the wall clock: not a second run
    assert s.next_deadline() == clocks.mono + 24 * 3600


def test_woken_before_the_wall_time_moves_the_deadline():
    s, clocks = cron_scheduler(local(BERLIN, 2026, 12, 7, 8, 59))
    s.add("job", parse("0 9 * * *"), None)
    clocks.mono += 60          # the two clocks drifted: by the wall it is 08:59:59.5
    clocks.wall += 59.5
    assert s.due(clocks.mono) == []
    assert s.next_deadline() == clocks.mono + 0.5


def test_clock_set_forward_runs_the_job_when_the_loop_next_wakes():
    s, clocks = cron_scheduler(local(BERLIN, 2026, 12, 7, 8))
    s.add("job", parse("0 9 * * *"), None)
    clocks.wall += 3600 + 5     # suspend or a clock step: 09:00:05 by the wall clock
    clocks.mono += 1
    assert len(s.due(clocks.mono)) == 1
    s.done("job")
    assert s.next_deadline() == clocks.mono + 24 * 3600 - 5


def test_busy_cron_job_is_skipped_not_piled_up():
    s, clocks = cron_scheduler(local(BERLIN, 2026, 12, 7, 8, 59, 30))
    s.add("job", parse("* * * * *"), None)
    clocks.advance(30)
    assert len(s.due(clocks.mono)) == 1
    clocks.advance(60)
    assert s.due(clocks.mono) == []       # still running at 09:01
    s.done("job")
    clocks.advance(60)
    assert len(s.due(clocks.mono)) == 1   # 09:02


def test_set_zone_plans_cron_jobs_again():
    s, clocks = cron_scheduler(datetime(2026, 12, 7, 7, 0, tzinfo=timezone.utc), timezone.utc)
    s.add("job", parse("0 9 * * *"), None)
    assert s.next_deadline() == clocks.mono + 2 * 3600       # 09:00 UTC
    s.set_zone(BERLIN, clocks.mono)
    assert s.next_deadline() == clocks.mono + 1 * 3600       # 09:00 CET is 08:00 UTC


def test_set_zone_keeps_a_time_that_has_come_but_not_yet_run():
    s, clocks = cron_scheduler(datetime(2026, 12, 7, 7, 0, 30, tzinfo=timezone.utc), timezone.utc)
    s.add("job", parse("* * * * *"), None)
    clocks.advance(30)                       # 07:01:00 came; the loop handles the reload first
    s.set_zone(BERLIN, clocks.mono)
    assert [e.key for e in s.due(clocks.mono)] == ["job"]
    assert s.next_deadline() == clocks.mono + 60


def test_set_zone_keeps_a_resumed_catch_up_run():
    s, clocks = cron_scheduler(datetime(2026, 12, 7, 9, 0, 20, tzinfo=timezone.utc), timezone.utc)
    s.add("job", parse("0 9 * * *"), None, name="p/job")
    s.resume({"p/job": datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc).timestamp()})   # 09:00 today missed by 20 s
    s.set_zone(ZoneInfo("UTC"), clocks.mono)                                         # a reload, the same zone
    assert [e.key for e in s.due(clocks.mono)] == ["job"]


# -- stable names, last_runs and resume (another node carries the schedule on) ----------

def test_job_names_are_stable_with_numbers_for_repeats():
    s = Scheduler(Clock())
    assert s.add(1, 10, None, name="todo/tick").name == "todo/tick"
    assert s.add(2, 10, None, name="todo/tick").name == "todo/tick#2"
    assert s.add(3, 10, None, name="todo/tick").name == "todo/tick#3"
    s.remove_where(lambda k: k == 1)
    assert s.add(4, 10, None, name="todo/tick").name == "todo/tick"      # a reloaded plugin's job


def test_last_runs_are_wall_times_of_each_start():
    s, clocks = cron_scheduler(local(BERLIN, 2026, 12, 7, 8, 59, 30))
    s.add("c", parse("* * * * *"), None, name="p/cron")
    s.add("i", 300, None, name="p/every")
    assert [e.name for e in s.due(clocks.mono)] == ["p/every"]
    started = clocks.wall
    assert s.last_runs() == {"p/every": started}
    clocks.advance(30)
    s.due(clocks.mono)
    assert s.last_runs() == {"p/every": started, "p/cron": started + 30}


def resumed(start, runs, *jobs):
    s, clocks = cron_scheduler(start)
    for name, schedule in jobs:
        s.add(name, schedule, None, name=name)
    s.resume(runs, clocks.mono)
    return s, clocks


def test_resume_interval_job_runs_at_its_next_time():
    start = local(BERLIN, 2026, 12, 7, 9)
    s, clocks = resumed(start, {"p/every": start.timestamp() - 100}, ("p/every", 300))
    assert s.due(clocks.mono) == []
    assert s.next_deadline() == clocks.mono + 200
    assert s.last_runs() == {"p/every": start.timestamp() - 100}


def test_resume_interval_job_overdue_runs_once_at_once():
    start = local(BERLIN, 2026, 12, 7, 9)
    s, clocks = resumed(start, {"p/every": start.timestamp() - 1000}, ("p/every", 300))
    assert len(s.due(clocks.mono)) == 1
    s.done("p/every")
    assert s.due(clocks.mono) == []
    assert s.next_deadline() == clocks.mono + 300


def test_resume_cron_job_runs_at_its_first_time_after_the_last_run():
    start = local(BERLIN, 2026, 12, 7, 9, 10)
    ran = local(BERLIN, 2026, 12, 7, 9).timestamp()
    s, clocks = resumed(start, {"p/cron": ran}, ("p/cron", parse("*/15 * * * *")))
    assert s.due(clocks.mono) == []
    assert s.next_deadline() == clocks.mono + 5 * 60


def test_resume_cron_time_missed_by_under_a_minute_runs_at_once():
    start = local(BERLIN, 2026, 12, 7, 9, 15, int(CATCH_UP) - 20)   # 09:15 passed during the failover
    ran = local(BERLIN, 2026, 12, 7, 9).timestamp()
    s, clocks = resumed(start, {"p/cron": ran}, ("p/cron", parse("*/15 * * * *")))
    assert len(s.due(clocks.mono)) == 1
    s.done("p/cron")
    assert s.next_deadline() == clocks.mono + 15 * 60 - (CATCH_UP - 20)    # then 09:30


def test_resume_older_cron_times_are_not_replayed():
    start = local(BERLIN, 2026, 12, 7, 9, 16, 30)     # 09:15 missed by 90 s
    ran = local(BERLIN, 2026, 12, 7, 8).timestamp()
    s, clocks = resumed(start, {"p/cron": ran}, ("p/cron", parse("*/15 * * * *")))
    assert s.due(clocks.mono) == []
    assert s.next_deadline() == clocks.mono + 13.5 * 60


def test_resume_leaves_jobs_it_does_not_name():
    start = local(BERLIN, 2026, 12, 7, 9)
    s, clocks = resumed(start, {"other/job": 1.0}, ("p/every", 300))
    assert len(s.due(clocks.mono)) == 1
