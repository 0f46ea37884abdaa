"""Token buckets for per-channel send limits: pure, clock passed in."""
from __future__ import annotations


class RateLimiter:
    """A token bucket: `rate` tokens per second, at most `burst` saved up.

    A rate of 0 means unlimited.
    """

    def __init__(self, rate: float, burst: int, now: float, tokens: float | None = None) -> None:
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self._tokens = float(self.burst) if tokens is None else min(float(self.burst), float(tokens))
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def next_allowed(self, now: float) -> float:
        """The earliest time a send is allowed (now, or a moment in the future)."""
        if self.rate <= 0:
            return now
        self._refill(now)
        if self._tokens >= 1.0:
            return now
        return now + (1.0 - self._tokens) / self.rate

    def take(self, now: float) -> None:
        if self.rate <= 0:
            return
        self._refill(now)
        self._tokens -= 1.0
