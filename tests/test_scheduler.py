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
