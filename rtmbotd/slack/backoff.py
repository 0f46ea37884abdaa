"""Exponential reconnect backoff with full jitter: pure, random source injectable."""
from __future__ import annotations

import random
from typing import Callable


class Backoff:
    """Delays of base·2ⁿ capped at `cap`, each drawn uniformly from [delay/2, delay]."""

    def __init__(self, base: float = 1.0, cap: float = 60.0,
                 rand: Callable[[], float] = random.random) -> None:
        self.base = base
        self.cap = cap
        self._rand = rand
        self.failures = 0

    def next_delay(self, at_least: float = 0.0) -> float:
        """The wait before the next attempt; `at_least` honours a server's Retry-After."""
        ceiling = min(self.cap, self.base * (2 ** min(self.failures, 30)))
        self.failures += 1
        return max(at_least, ceiling * (0.5 + 0.5 * self._rand()))

    def reset(self) -> None:
        self.failures = 0
