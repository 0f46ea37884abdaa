"""Waiting on a condition with a deadline: the way tests wait, never a bare sleep.

`wait_until` is the one wait of the tests, the benchmarks and the fake Slack. By default
it polls the predicate; given `changes` (the fake's journal, a notify listener) it sleeps
until that source reports a change instead, so a wait ends as soon as it can.
"""
from __future__ import annotations

import time
from typing import Callable, Hashable, Protocol, TypeVar, Union

T = TypeVar("T")


class Changes(Protocol):
    """Something a predicate reads that can say when it changed."""

    def change_token(self) -> Hashable:
        """An opaque value that differs once anything changed."""

    def wait_for_change(self, token: Hashable, timeout: float) -> None:
        """Return once the state differs from `token`, or after `timeout` seconds."""


def wait_until(predicate: Callable[[], T], timeout: float = 5.0,
               what: Union[str, Callable[[], str]] = "condition", *,
               interval: float | None = None, changes: Changes | None = None) -> T:
    """The first truthy `predicate()` within `timeout` seconds; TimeoutError naming `what`.

    `what` may be a callable, called only on timeout, to say what was seen instead.
    Without `changes` the predicate is polled every `interval` (0.01 s); with `changes`
    it is re-checked on every change, and also every `interval` if one is given (for
    predicates that read something else too, e.g. whether a child process still lives).
    """
    deadline = time.monotonic() + timeout
    while True:
        token = changes.change_token() if changes is not None else None
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            described = what() if callable(what) else what
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {described}")
        if changes is None:
            time.sleep(min(left, 0.01 if interval is None else interval))
        else:
            changes.wait_for_change(token, left if interval is None else min(left, interval))
