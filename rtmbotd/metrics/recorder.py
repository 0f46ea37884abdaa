"""What the daemon tells the metrics, as one object every part can hold from the start.

Each hook is a no-op until `enable()` (METRICS set, at start or by a reload) rebinds
the hooks to `live.LiveMetrics`: callers keep the same object and pay one attribute
look-up and an empty call while metrics are off. Hooks taking a duration may be called
from plugin threads (prometheus_client's metrics are thread-safe); the rest from the loop.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

# Labels come from Slack (event types, error codes): bounded, and never free text.
LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")
LABEL_MAX = 64

# rtmbotd_messages_failed_total{reason} for outputs given up before Slack saw them; the
# other reasons are Slack's own error codes for what it refused.
BAD_OUTPUT = "bad_output"              # not [channel, text] / a dict with channel and text, not plain JSON
UNKNOWN_TARGET = "unknown_target"      # a #name or @user no listing knows
DM_FAILED = "dm_failed"                # conversations.open refused for good
INTERNAL_ERROR = "internal_error"      # a bug of rtmbotd's while routing it
DROP_REASONS = (BAD_OUTPUT, UNKNOWN_TARGET, DM_FAILED, INTERNAL_ERROR)


def label(value: Any, other: str = "other") -> str:
    """A label value safe to export: short and made of Slack-name characters, else `other`."""
    text = str(value) if value is not None else ""
    if not text or len(text) > LABEL_MAX or not set(text) <= LABEL_CHARS:
        return other
    return text


class Recorder:
    """The hooks; all no-ops until enabled."""

    live: Any = None

    def enable(self, version: str) -> Any:
        """Record from now on (imports prometheus_client); returns the live metrics."""
        if self.live is None:
            from rtmbotd.metrics.live import LiveMetrics
            self.live = LiveMetrics(version)
            for name in HOOKS:
                setattr(self, name, getattr(self.live, name))
        return self.live

    def connected(self, up: bool) -> None:
        """The Slack link is up (hello seen) or not."""

    def event_received(self, kind: str) -> None:
        """An RTM frame or Socket Mode event of type `kind` arrived."""

    def plugin_call(self, plugin: str, seconds: float, ok: bool) -> None:
        """A callback or job of `plugin` finished (on the plugin's thread)."""

    def plugins_busy(self, plugins: Iterable[str], stuck: Iterable[str]) -> None:
        """Of the running `plugins`, these calls run longer than PLUGIN_TIMEOUT now."""

    def message_sent(self, waited: float | None) -> None:
        """Slack accepted a message that waited `waited` seconds in the outbox."""

    def message_failed(self, reason: str) -> None:
        """A message was dropped for good: one of DROP_REASONS, or Slack's error code."""

    def outbox_queued(self, count: Callable[[], int]) -> None:
        """Messages waiting to go out now: `count()`, called only while metrics are on (the
        loop tells after every turn, and counting costs more than an empty call)."""

    def reconnect(self, reason: str) -> None:
        """The link is being replaced: drop, goodbye, disconnect or error."""

    def reloaded(self, ok: bool, generation: int) -> None:
        """A reload ended: swapped in (`generation` now runs) or rejected."""

    def generation(self, number: int) -> None:
        """The plugin generation running now."""

    def store_operation(self, seconds: float, ok: bool) -> None:
        """One store read or write finished (on the caller's thread)."""

    def cluster_leader(self, leader: bool) -> None:
        """Cluster mode only: this node leads (1) or follows (0)."""


HOOKS = tuple(name for name, value in vars(Recorder).items()
              if callable(value) and not name.startswith("_") and name != "enable")
