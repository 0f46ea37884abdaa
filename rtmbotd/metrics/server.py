"""GET /metrics with prometheus_client's own server (a WSGI app on wsgiref, a daemon thread).

The daemon's loop calls `serve` at start and after each valid reload: it binds where
METRICS says before the old address is let go, so a reload to an address that cannot
be bound is rejected with the old one still served.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from rtmbotd.metrics.address import Address, MetricsError, bind_failed, probe_bind

log = logging.getLogger(__name__)


class MetricsServer:
    """At most one listening exposition server."""

    def __init__(self) -> None:
        self.address: Address | None = None
        self._httpd: Any = None

    def serve(self, address: Address | None, recorder: Any) -> None:
        """Serve `recorder`'s metrics on `address` from now on (None: nowhere); MetricsError
        (nothing changed) when `address` cannot be bound."""
        if address == self.address:
            return
        if address is None:
            log.info("metrics: no longer listening on %s", self.address)
            self.close()
            return
        from rtmbotd import __version__
        registry = recorder.enable(__version__).registry
        old, old_address = self._httpd, self.address
        if old is not None and old_address.port == address.port:
            # Same port, other host: the old socket must go first. Leaving LISTEN frees the
            # port at once; nothing waits for its thread (serve_forever's 0.5 s poll).
            _stop_listening(old)
            try:
                httpd = _listen(address, registry)
            except MetricsError:
                _closer(old)
                self._restore(old_address, registry)
                raise
        else:
            httpd = _listen(address, registry)
        self._httpd, self.address = httpd, address
        if old is not None:
            _closer(old)
        log.info("metrics: serving http://%s/metrics", address)

    def _restore(self, address: Address, registry: Any) -> None:
        """Listen again where the old socket was (freed a moment ago, so it rarely fails)."""
        try:
            self._httpd = _listen(address, registry)
        except MetricsError as exc:
            self._httpd, self.address = None, None
            log.error("metrics: %s; no metrics served until a reload", exc)

    def close(self) -> threading.Thread:
        """Stop listening; returns the thread finishing the shutdown (joinable)."""
        httpd, self._httpd, self.address = self._httpd, None, None
        return _closer(httpd)


def _listen(address: Address, registry: Any) -> Any:
    from prometheus_client import start_http_server
    try:
        httpd, _thread = start_http_server(address.port, address.host, registry=registry)
    except OSError as exc:
        raise bind_failed(address, exc) from None
    return httpd


def _stop_listening(httpd: Any) -> None:
    """Take the listening socket out of LISTEN now: its port is free for a new bind (both
    sockets have SO_REUSEADDR) and serve_forever's poll wakes instead of timing out."""
    try:
        httpd.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _closer(httpd: Any) -> threading.Thread:
    """Stop `httpd` on a thread of its own: shutdown() waits for serve_forever's thread,
    which the loop never does."""
    if httpd is not None:
        _stop_listening(httpd)

    def close() -> None:
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
    thread = threading.Thread(target=close, name="metrics-close", daemon=True)
    thread.start()
    return thread


def check_listen(address: Address, config_path: str | os.PathLike) -> None:
    """For --check-config: can the daemon of `config_path` listen on `address`? That daemon
    itself holding it (`systemctl reload` checks before the SIGHUP) counts as yes; any
    other process, a second rtmbotd included, is a MetricsError naming it."""
    try:
        probe_bind(address)
    except MetricsError as exc:
        if not exc.in_use:
            raise
        from rtmbotd.metrics.holder import is_daemon_of, listening_pids
        holders = listening_pids(address.port)
        if not holders or not all(is_daemon_of(pid, config_path) for pid in holders):
            raise
