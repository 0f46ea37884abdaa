"""Which proxy the environment names for a URL: one rule for every client rtmbotd opens.

`HTTPS_PROXY`/`HTTP_PROXY` as urllib reads them, `NO_PROXY` honoured, and loopback
never proxied (a fake Slack or a local relay is reached directly). The Web API session
(aiohttp), the websockets and the plugins' slack_sdk client all ask here, so the daemon's
clients cannot disagree about a host (slack_sdk, told "no proxy", falls back to urllib,
which proxies loopback unless NO_PROXY names it).
"""
from __future__ import annotations

import urllib.parse
import urllib.request
from urllib.parse import quote, unquote

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_HTTP_SCHEME = {"wss": "https", "ws": "http"}     # a websocket uses the proxy of its HTTP twin


def proxy_for(url: str) -> str | None:
    """The proxy URL for `url` (credentials included, never log it), or None to connect directly."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if host in LOOPBACK or urllib.request.proxy_bypass(host):
        return None
    proxy = urllib.request.getproxies().get(_HTTP_SCHEME.get(parts.scheme, parts.scheme))
    return _as_url(proxy) if proxy else None


def _as_url(proxy: str) -> str:
    """`proxy` read as urllib reads it (no scheme means http://, the credentials run to the
    last `@`), written as a URL every client parses alike: credentials percent-encoded.

    `user:pw@proxy:3128` would otherwise be refused by aiohttp and websockets, and a `#`,
    `/` or `?` in a password would cut the URL short and put the password in their errors.
    """
    scheme, sep, rest = proxy.partition("://")
    if not sep:
        scheme, rest = "http", proxy
    userinfo, at, hostport = rest.rpartition("@")
    if not at:
        return f"{scheme}://{rest}"
    user, colon, password = userinfo.partition(":")
    credentials = quote(unquote(user), safe="") + (":" + quote(unquote(password), safe="") if colon else "")
    return f"{scheme}://{credentials}@{hostport}"
