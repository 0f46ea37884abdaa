"""METRICS: where the exposition server listens, and whether it can listen there."""
from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass

from rtmbotd.errors import ConfigError

EXAMPLE = "127.0.0.1:9810"


class MetricsError(ConfigError):
    """METRICS is malformed or cannot be listened on; the message starts with METRICS."""

    def __init__(self, message: str, in_use: bool = False) -> None:
        super().__init__(message)
        self.in_use = in_use


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Where a client on this host scrapes it (a wildcard bind answers on loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://{Address(host, self.port)}/metrics"


def parse_address(text: str) -> Address:
    """`host:port` or `[v6]:port` -> Address; MetricsError saying what is wrong."""
    value = text.strip()
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            sep = ""
    elif ":" in host:
        sep = ""                      # a bare IPv6 address needs brackets
    if not sep or not host or not (port.isascii() and port.isdigit()):     # "²".isdigit(), int("²") fails
        raise MetricsError(f"METRICS: must be host:port like {EXAMPLE!r} (IPv6: '[::1]:9810'), got {text!r:.60}")
    number = int(port)
    if not 1 <= number <= 65535:
        raise MetricsError(f"METRICS: port must be 1 to 65535, got {number}")
    try:
        host.encode("idna")           # what getaddrinfo does first: a label over 63 or empty raises
    except UnicodeError:
        raise MetricsError(f"METRICS: {host[:70]!r} is not a host name (labels of 1 to 63 characters)") from None
    return Address(host, number)


def bind_failed(address: Address, exc: OSError) -> MetricsError:
    """One line naming METRICS, for a bind that failed at start, reload or check."""
    if exc.errno == errno.EACCES and address.port < 1024:
        why = "permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE; choose 1024 or above)"
    elif exc.errno == errno.EADDRINUSE:
        from rtmbotd.metrics.holder import who_holds
        why = f"address already in use by {who_holds(address.port)}"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = "no such address on this host"
    elif isinstance(exc, socket.gaierror):
        why = f"cannot resolve {address.host!r}"
    else:
        why = exc.strerror or str(exc)
    return MetricsError(f"METRICS: cannot listen on {address}: {why}", in_use=exc.errno == errno.EADDRINUSE)


def probe_bind(address: Address) -> None:
    """Bind and release `address` as the exposition server would; MetricsError if it cannot."""
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _, sockaddr = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as http.server does
            sock.bind(sockaddr)
    except OSError as exc:
        raise bind_failed(address, exc) from None
