"""GET /metrics with prometheus_client's own server (a WSGI app on wsgiref, a daemon thread).

The daemon's loop calls `serve` at start and after each valid reload: it binds where
METRICS says before the old address is let go, so a reload to an address that cannot
be bound is rejected with the old one still served.
"""
from __future__ import annotations

import logging
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
        try:
            httpd = _listen(address, registry)
        except MetricsError:
            old = self.address
            if old is None or old.port != address.port:
                raise
            self.close().join()   # same port, other host: the old socket must go first
            try:
                httpd = _listen(address, registry)
            except MetricsError:
                self._httpd, self.address = _listen(old, registry), old
                raise
        old = self._httpd
        self._httpd, self.address = httpd, address
        if old is not None:
            _closer(old)
        log.info("metrics: serving http://%s/metrics", address)

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


def _closer(httpd: Any) -> threading.Thread:
    """shutdown() waits for serve_forever's next poll (up to 0.5 s): never on the loop."""
    def close() -> None:
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
    thread = threading.Thread(target=close, name="metrics-close", daemon=True)
    thread.start()
    return thread


def check_listen(address: Address) -> None:
    """For --check-config: can the daemon listen on `address`? The running daemon's own
    exposition server holding it (`systemctl reload` checks first) counts as yes."""
    try:
        probe_bind(address)
    except MetricsError as exc:
        from rtmbotd.metrics.summary import scrape
        if not exc.in_use:
            raise
        try:
            families = scrape(address, timeout=3.0)
        except OSError:
            raise exc from None
        if "rtmbotd_build_info" not in families:
            raise
