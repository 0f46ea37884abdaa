"""Beliefs that expire on the local monotonic clock: never trust one past its lease.

Each renewing query measures the monotonic clock *before* it is sent and gets back how
long the lease has left by PostgreSQL's clock (`expires_at - db_now`). The belief holds
until `sent + remaining` locally: the server granted `remaining` at some moment after
`sent`, so this is never later than the true expiry (a query delayed in flight, or a
process paused by SIGSTOP, only makes it earlier). Pure: tests pass times in.
"""
from __future__ import annotations



def valid_until(sent: float, remaining: float | None) -> float:
    """The local monotonic time a belief granted `remaining` seconds by a query sent at `sent` lapses."""
    if remaining is None or remaining <= 0:
        return sent
    return sent + remaining

