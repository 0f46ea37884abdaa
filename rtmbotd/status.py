"""What the daemon tells systemd it is doing: the STATUS= line, and stuck plugins.

The line quotes texts from elsewhere (a connection error, a path, plugin names) and
keeps their case: only its first letter is raised.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtmbotd.config import Config
    from rtmbotd.runtime.host import PluginHost

log = logging.getLogger(__name__)

STATUS_EVERY = 5.0


def check_every(plugin_timeout: float) -> float:
    """How often stuck plugins are looked for (and STATUS refreshed)."""
    return min(STATUS_EVERY, max(0.5, plugin_timeout / 2))


def sentence(text: str) -> str:
    """`text` with its first letter raised; `str.capitalize` would lower the rest."""
    return text[:1].upper() + text[1:]


def status_line(config: Config, host: PluginHost, now: float, *, connection: str,
                store: str | None = None, queued: int = 0, hung: int = 0, role: str | None = None) -> str:
    """`connection` is the connector's own words, `store` the store's problem if it has one;
    `queued` counts messages not yet sent, `hung` plugin imports running past IMPORT_TIMEOUT;
    `role` (cluster mode) comes first: `leader` or `follower (leader: node2)`."""
    if not config.has_token:
        line = f"No Slack token: set SLACK_TOKEN in {config.path}, then systemctl reload rtmbotd"
        return f"{role}; {line}" if role else line
    plugins = host.plugins
    loaded = len(plugins.plugins) if plugins else 0
    failed = len(plugins.errors) if plugins else 0
    parts = [*([role, connection] if role else [sentence(connection)]),   # the role word as is: lowercase
             *filter(None, [store]),
             f"generation {host.generation}",
             f"{loaded} plugin(s) loaded" + (f", {failed} failed" if failed else ""),
             f"{queued} message(s) queued"]
    stuck = [f"{w.unit.name} ({w.busy_for(now):.0f} s)" for w in host.stuck(now, config.plugin_timeout)]
    if stuck:
        parts.append("stuck: " + ", ".join(stuck))
    if hung:
        parts.append(f"{hung} import(s) hung")
    return "; ".join(parts)


def report_stuck(host: PluginHost, now: float, limit: float) -> None:
    """Log each plugin call running longer than `limit` once (the worker resets it when done)."""
    for worker in host.stuck(now, limit):
        if not worker.stuck_reported:
            worker.stuck_reported = True
            log.warning("plugin %s stuck in %s for %.0f s (%d call(s) waiting)", worker.unit.name,
                        worker.busy_label, worker.busy_for(now), worker.backlog - 1)
