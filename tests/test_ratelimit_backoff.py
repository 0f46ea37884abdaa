from rtmbotd.slack.backoff import Backoff
from rtmbotd.ratelimit import RateLimiter


def test_burst_then_rate():
    rl = RateLimiter(rate=1.0, burst=3, now=0.0)
    for _ in range(3):
        assert rl.next_allowed(0.0) == 0.0
        rl.take(0.0)
    assert rl.next_allowed(0.0) == 1.0
    assert rl.next_allowed(1.0) == 1.0
    rl.take(1.0)
    assert rl.next_allowed(1.5) == 2.0


def test_zero_rate_is_unlimited():
    rl = RateLimiter(rate=0, burst=1, now=0.0)
    for _ in range(100):
        rl.take(0.0)
    assert rl.next_allowed(0.0) == 0.0


def test_backoff_grows_caps_and_honours_retry_after():
    b = Backoff(base=1.0, cap=8.0, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    b.reset()
    assert b.next_delay(at_least=30.0) == 30.0


def test_backoff_jitter_range():
    b = Backoff(base=4.0, cap=60.0, rand=lambda: 0.0)
    assert b.next_delay() == 2.0
