"""Per-channel token buckets the fake Slack enforces on the bot's messages (pure, clock passed in)."""
from __future__ import annotations


class ChannelRateLimit:
    """`per_second` messages per channel, with up to `burst` saved up; independent of rtmbotd's own limiter."""

    def __init__(self, per_second: float, burst: int) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be > 0")
        self.per_second = float(per_second)
        self.burst = max(1, int(burst))
        self._buckets: dict[str, tuple[float, float]] = {}  # channel -> (tokens, stamp)

    def take(self, channel: str, now: float) -> float:
        """Spend a token for one message: 0.0 if allowed, else seconds until one is available."""
        tokens, stamp = self._buckets.get(channel, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - stamp) * self.per_second)
        if tokens >= 1.0:
            self._buckets[channel] = (tokens - 1.0, now)
            return 0.0
        self._buckets[channel] = (tokens, now)
        return (1.0 - tokens) / self.per_second
