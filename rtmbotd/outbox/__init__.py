"""The outbox: every plugin output on its way to Slack.

- `queue`: `Outbox`, per-channel ordered, rate-limited, fair queues (pure bookkeeping)
- `journal`: `Journal`, the durable copy: one store row per output that waited, written
  and deleted in batches per loop turn by one writer thread (`writer`)
"""
from __future__ import annotations

from rtmbotd.outbox.queue import (RATE_MARGIN, RETRY_BASE, RETRY_CAP, SOCKET_WINDOW, TEXT_LIMIT, Message,
                                  Outbox, split_text)

__all__ = ["Message", "Outbox", "RATE_MARGIN", "RETRY_BASE", "RETRY_CAP", "SOCKET_WINDOW", "TEXT_LIMIT",
           "split_text"]
