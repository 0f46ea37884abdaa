"""`rtmbotd -c CONF status`: a running daemon's metrics, read back as a short summary."""
from __future__ import annotations

import os
import urllib.request
from typing import Any

from rtmbotd.errors import ConfigError, RtmbotdError
from rtmbotd.metrics.address import EXAMPLE, Address


class DaemonUnreachable(RtmbotdError):
    """Nothing (or not rtmbotd) answers on METRICS."""

    exit_code = os.EX_UNAVAILABLE


def scrape(address: Address, timeout: float = 5.0) -> dict[str, Any]:
    """GET /metrics and parse it with prometheus_client's parser: family name -> family."""
    from prometheus_client.parser import text_string_to_metric_families
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # this host: never a proxy
    with opener.open(address.url, timeout=timeout) as response:
        text = response.read().decode("utf-8")
    return {family.name: family for family in text_string_to_metric_families(text)}


def _samples(families: dict[str, Any], family: str, suffix: str = "") -> list[tuple[dict, float]]:
    fam = families.get(family)
    name = family + suffix
    return [(s.labels, s.value) for s in fam.samples if s.name == name] if fam else []


def _value(families: dict[str, Any], family: str, suffix: str = "", **labels: str) -> float:
    return sum(v for lab, v in _samples(families, family, suffix) if labels.items() <= lab.items())


def _by(families: dict[str, Any], family: str, key: str, suffix: str = "_total") -> dict[str, float]:
    out: dict[str, float] = {}
    for lab, v in _samples(families, family, suffix):
        out[lab.get(key, "")] = out.get(lab.get(key, ""), 0.0) + v
    return out


def _counts(values: dict[str, float]) -> str:
    shown = [f"{int(v)} {k}" for k, v in sorted(values.items(), key=lambda kv: (-kv[1], kv[0])) if v]
    return ", ".join(shown) or "none"


def summarize(families: dict[str, Any]) -> str:
    """The human summary of one scrape."""
    f = families
    version = next((lab.get("version", "?") for lab, _ in _samples(f, "rtmbotd_build_info")), "?")
    reconnects = _by(f, "rtmbotd_reconnects", "reason")
    reloads = _by(f, "rtmbotd_reloads", "result")
    events = _by(f, "rtmbotd_events_received", "type")
    lines = [
        f"rtmbotd {version}",
        f"link: {'connected' if _value(f, 'rtmbotd_connected') else 'NOT connected'}; "
        f"reconnects: {_counts(reconnects)}",
        f"generation: {int(_value(f, 'rtmbotd_generation'))}; reloads: {_counts(reloads)}"
        + ("" if _value(f, "rtmbotd_config_last_reload_successful") else " (the last one was REJECTED)"),
        f"events received: {int(sum(events.values()))} ({_counts(events)})",
    ]
    calls = {lab["plugin"]: lab for lab, _ in _samples(f, "rtmbotd_plugin_calls", "_total")}
    slowest = {lab["plugin"]: v for lab, v in _samples(f, "rtmbotd_plugin_call_slowest_seconds")}
    busy = {lab["plugin"]: v for lab, v in _samples(f, "rtmbotd_plugin_busy")}
    names = sorted(set(calls) | set(busy))
    lines.append(f"plugins: {len(names)}" + ("" if names else " (none loaded)"))
    width = max((len(n) for n in names), default=0)
    for name in names:
        ok = _value(f, "rtmbotd_plugin_calls", "_total", plugin=name, outcome="ok")
        err = _value(f, "rtmbotd_plugin_calls", "_total", plugin=name, outcome="error")
        line = f"  {name:<{width}}  {int(ok + err)} call(s), {int(err)} error(s)"
        if name in slowest:
            line += f", slowest {slowest[name]:.3f} s"
        if busy.get(name):
            line += f", {int(busy[name])} running past PLUGIN_TIMEOUT now"
        lines.append(line)
    lines.append(f"outbox: {int(_value(f, 'rtmbotd_outbox_queued'))} queued; "
                 f"{int(_value(f, 'rtmbotd_messages_sent', '_total'))} sent, "
                 f"failed: {_counts(_by(f, 'rtmbotd_messages_failed', 'reason'))}")
    store = _by(f, "rtmbotd_store_operations", "outcome")
    lines.append(f"store: {int(store.get('ok', 0))} operation(s) ok, {int(store.get('error', 0))} failed")
    if "rtmbotd_cluster_leader" in f:
        lines.append(f"cluster: {'leader' if _value(f, 'rtmbotd_cluster_leader') else 'follower'}")
    else:
        lines.append("cluster: not in cluster mode")
    return "\n".join(lines)


def status(config: Any) -> str:
    """The summary of the daemon running with `config`; ConfigError or DaemonUnreachable."""
    address = config.metrics
    if address is None:
        raise ConfigError(f"{config.path}: METRICS is not set, so the daemon has no metrics to read: "
                          f"set METRICS: \"{EXAMPLE}\" and reload (systemctl status rtmbotd shows its status line)")
    try:
        families = scrape(address)
    except (OSError, ValueError) as exc:
        why = getattr(exc, "reason", None) or exc
        raise DaemonUnreachable(f"no rtmbotd answers at {address.url} ({why}): is it running? "
                                "(systemctl status rtmbotd)") from None
    if "rtmbotd_build_info" not in families:
        raise DaemonUnreachable(f"{address.url} is not an rtmbotd's metrics")
    return f"metrics: {address.url}\n" + summarize(families)
