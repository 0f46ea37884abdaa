"""Prometheus metrics for a sysadmin's scraper (METRICS: "host:port").

The daemon calls a `Recorder` at the places things happen; until METRICS is set its
methods do nothing and prometheus_client is not even imported (measured: it and its
server cost about 1.7 MiB resident and 10-40 ms of imports).
`address` parses and probes METRICS, `live` defines the metrics, `server` serves
`/metrics` with prometheus_client's own server, `summary` is `rtmbotd status`.
"""
from rtmbotd.metrics.address import Address, MetricsError, parse_address
from rtmbotd.metrics.recorder import Recorder

__all__ = ["Address", "MetricsError", "Recorder", "parse_address"]
