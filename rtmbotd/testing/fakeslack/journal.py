"""What happened at the fake Slack (messages, calls, acks, sockets), readable and awaitable from any thread."""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Callable, TypeVar

from rtmbotd.testing.waiting import wait_until

MODES = ("rtm", "socket_mode")

T = TypeVar("T")


class Journal:
    """The fake's record book; the loop thread writes, any thread reads or waits on a Condition.

    Waiters get woken on every change; predicates run without the lock held, so they may
    call any read method.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self.connections_opened: Counter[str] = Counter()
        self.connections_open: Counter[str] = Counter()
        self._open_ids: dict[str, list[int]] = {mode: [] for mode in MODES}
        self._reset()

    def _reset(self) -> None:
        self._messages: list[dict] = []
        self._rejected: list[dict] = []
        self._edits: list[dict] = []
        self._calls: list[dict] = []
        self._accepted: list[dict] = []      # calls the fake answered ok: the api_calls read-back
        self._files: list[dict] = []
        self._call_counts: Counter[str] = Counter()
        self._frames: dict[str, list[str | bytes]] = {mode: [] for mode in MODES}
        self._pending: dict[str, dict] = {}
        self._envelopes: list[dict] = []
        self._delivered: list[dict] = []
        self._acks: list[dict] = []
        self._redeliveries: list[dict] = []
        self._violations = 0

    def _changed(self) -> None:
        self._generation += 1
        self._cond.notify_all()

    def clear(self) -> None:
        """Forget messages, calls, frames, acks and violations (connection counters stay)."""
        with self._cond:
            self._reset()
            self._changed()

    # -- writers (loop thread) ----------------------------------------------------------

    def message(self, record: dict) -> None:
        with self._cond:
            self._messages.append(record)
            self._changed()

    def rejected(self, record: dict) -> None:
        with self._cond:
            self._rejected.append(record)
            self._changed()

    def edit(self, record: dict) -> None:
        with self._cond:
            self._edits.append(record)
            self._changed()

    def web_call(self, method: str, params: dict, token_kind: str | None, received_at: float) -> None:
        with self._cond:
            self._calls.append({"method": method, "params": params, "token_kind": token_kind,
                                "received_at": received_at})
            self._call_counts[method] += 1
            self._changed()

    def api_call(self, method: str, params: dict) -> None:
        with self._cond:
            self._accepted.append({"method": method, **params})
            self._changed()

    def file(self, record: dict) -> None:
        with self._cond:
            self._files.append(record)
            self._changed()

    def frame(self, mode: str, data: str | bytes) -> None:
        with self._cond:
            self._frames[mode].append(data)
            self._changed()

    def violation(self) -> None:
        with self._cond:
            self._violations += 1
            self._changed()

    def connection_opened(self, mode: str, connection: int) -> None:
        with self._cond:
            self.connections_opened[mode] += 1
            self.connections_open[mode] += 1
            self._open_ids[mode].append(connection)
            self._changed()

    def connection_closed(self, mode: str, connection: int) -> None:
        with self._cond:
            self.connections_open[mode] -= 1
            self._open_ids[mode].remove(connection)
            self._changed()

    def envelope_sent(self, envelope: dict, sent_at: float, connection: int) -> None:
        with self._cond:
            self._pending[envelope["envelope_id"]] = {
                "envelope_id": envelope["envelope_id"],
                "type": envelope["type"],
                "retry_attempt": envelope["retry_attempt"],
                "connection": connection,
                "sent_at": sent_at,
                "timed_out": False,
                "envelope": envelope,
            }
            self._envelopes.append(envelope)
            self._delivered.append({"envelope_id": envelope["envelope_id"], "type": envelope["type"],
                                    "event_id": envelope["payload"].get("event_id"),
                                    "retry_attempt": envelope["retry_attempt"], "connection": connection})
            self._changed()

    def ack(self, envelope_id: str, payload: Any, now: float, connection: int) -> None:
        with self._cond:
            pending = self._pending.pop(envelope_id, None)
            self._acks.append({
                "envelope_id": envelope_id,
                "type": pending["type"] if pending else None,
                "latency_s": now - pending["sent_at"] if pending else None,
                "payload": payload,
                "connection": connection,
            })
            self._changed()

    def timed_out(self, envelope_id: str) -> dict | None:
        """Mark a still-unacked envelope as timed out; its pending record, or None if acked."""
        with self._cond:
            pending = self._pending.get(envelope_id)
            if pending is not None:
                pending["timed_out"] = True
                self._changed()          # a wait on `unacked()` sees it
            return pending

    def redelivered(self, envelope_id: str, retry_envelope_id: str | None, reason: str) -> None:
        with self._cond:
            self._redeliveries.append({"envelope_id": envelope_id,
                                       "retry_envelope_id": retry_envelope_id,
                                       "reason": reason})
            self._changed()

    # -- readers (any thread) -----------------------------------------------------------

    def messages(self, channel: str | None = None) -> list[dict]:
        with self._cond:
            return [dict(m) for m in self._messages if channel is None or m["channel"] == channel]

    def rejected_messages(self) -> list[dict]:
        with self._cond:
            return [dict(m) for m in self._rejected]

    def edits(self) -> list[dict]:
        with self._cond:
            return [dict(e) for e in self._edits]

    def web_calls(self, method: str | None = None) -> list[dict]:
        with self._cond:
            return [dict(c) for c in self._calls if method is None or c["method"] == method]

    def api_calls(self, method: str | None = None) -> list[dict]:
        with self._cond:
            return [dict(c) for c in self._accepted if method is None or c["method"] == method]

    def files(self) -> list[dict]:
        with self._cond:
            return [dict(f) for f in self._files]

    def web_call_counts(self) -> dict[str, int]:
        with self._cond:
            return dict(self._call_counts)

    def frames(self, mode: str) -> list[str | bytes]:
        with self._cond:
            return list(self._frames[mode])

    def violations(self) -> int:
        with self._cond:
            return self._violations

    def acks(self) -> list[dict]:
        with self._cond:
            return [dict(a) for a in self._acks]

    def unacked(self) -> list[dict]:
        with self._cond:
            return [{k: v for k, v in p.items() if k != "sent_at"} for p in self._pending.values()]

    def redeliveries(self) -> list[dict]:
        with self._cond:
            return [dict(r) for r in self._redeliveries]

    def envelopes(self) -> list[dict]:
        with self._cond:
            return [dict(e) for e in self._envelopes]

    def deliveries(self, event_id: str | None = None) -> list[dict]:
        """Which connection got which envelope, in order: `{"envelope_id", "type", "event_id",
        "retry_attempt", "connection"}` (connection ids as in `connection_ids`)."""
        with self._cond:
            return [dict(d) for d in self._delivered if event_id is None or d["event_id"] == event_id]

    def delivered_on(self, envelope_id: str) -> int | None:
        """The connection id envelope `envelope_id` was sent on."""
        with self._cond:
            return next((d["connection"] for d in self._delivered if d["envelope_id"] == envelope_id), None)

    def connection_ids(self, mode: str = "socket_mode") -> list[int]:
        """Ids of the open connections of `mode`, oldest first."""
        with self._cond:
            return list(self._open_ids[mode])

    def last_event_envelope(self, event_id: str | None) -> dict | None:
        """The latest events_api envelope sent for `event_id` (None: for any event)."""
        with self._cond:
            for envelope in reversed(self._envelopes):
                if envelope["type"] == "events_api" and event_id in (None, envelope["payload"].get("event_id")):
                    return envelope
            return None

    def open_count(self, mode: str | None = None) -> int:
        with self._cond:
            if mode is None:
                return sum(self.connections_open.values())
            return self.connections_open[mode]

    def opened_by_mode(self) -> dict[str, int]:
        with self._cond:
            return {mode: self.connections_opened[mode] for mode in MODES}

    # -- waiting --------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], T], timeout: float) -> T:
        """The first truthy value of `predicate()`, re-checked on every change; TimeoutError after `timeout`."""
        return wait_until(predicate, timeout, "a condition on the fake Slack", changes=self)

    def change_token(self) -> int:
        with self._cond:
            return self._generation

    def wait_for_change(self, token: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._generation != token, timeout)

    def notify(self) -> None:
        """Wake waiters whose predicates look at state outside the journal."""
        with self._cond:
            self._changed()
