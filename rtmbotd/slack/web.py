"""Slack Web API calls on the daemon's loop (slack_sdk's AsyncWebClient, keep-alive)."""
from __future__ import annotations

import asyncio
import logging
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

# Slack error codes worth retrying; every other `ok: false` answer is final, since
# sending the same request again gets the same answer (and would block its channel).
TRANSIENT_ERRORS = frozenset({
    "ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
    "team_added_to_org",
})
AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked"})


@dataclass
class WebError(Exception):
    """A failed Web API call: `error` is Slack's code or a transport problem."""

    method: str
    error: str
    retry_after: float | None = None
    status: int | None = None
    transport: bool = False      # never got an answer: network, timeout, HTTP 5xx

    def __str__(self) -> str:
        extra = f" (retry after {self.retry_after:g} s)" if self.retry_after else ""
        return f"{self.method}: {self.error}{extra}"

    @property
    def permanent(self) -> bool:
        """Retrying cannot help: Slack answered, and not with a passing condition."""
        if self.transport or self.status == 429 or (self.status or 0) >= 500:
            return False
        return self.error not in TRANSIENT_ERRORS

    @property
    def auth(self) -> bool:
        return self.error in AUTH_ERRORS


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url`, honouring NO_PROXY (slack_sdk does not)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if urllib.request.proxy_bypass(host) or host in ("127.0.0.1", "localhost", "::1"):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class SlackWeb:
    """One token's Web API client; must be created and used on the daemon's loop."""

    def __init__(self, token: str, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=timeout))
        self._client = AsyncWebClient(token=token, base_url=base_url, timeout=int(timeout),
                                      proxy=proxy_for(base_url), session=self._session,
                                      retry_handlers=[], logger=logging.getLogger("rtmbotd.slack.sdk"))

    async def call(self, method: str, *, json: bool = False, **params: Any) -> dict:
        """Call `method`; return the response body or raise WebError."""
        try:
            if json:
                resp = await self._client.api_call(method, json=params)
            else:
                resp = await self._client.api_call(method, params=params or None)
            return resp.data if isinstance(resp.data, dict) else {"ok": True}
        except SlackApiError as exc:
            r = exc.response
            retry = r.headers.get("Retry-After") or r.headers.get("retry-after")
            error = (r.data or {}).get("error") if isinstance(r.data, dict) else None
            raise WebError(method, error or f"http_{r.status_code}", _seconds(retry), r.status_code,
                           transport=r.status_code >= 500) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise WebError(method, f"{type(exc).__name__}: {exc}".rstrip(": "), transport=True) from None
        except (TypeError, ValueError) as exc:   # the request itself cannot be encoded
            raise WebError(method, f"bad request: {type(exc).__name__}: {exc}") from None

    async def paginate(self, method: str, key: str, **params: Any) -> list[dict]:
        """Every item of a cursor-paginated listing."""
        items: list[dict] = []
        cursor = None
        for _ in range(1000):
            page = await self.call(method, **params, limit=200, **({"cursor": cursor} if cursor else {}))
            items.extend(x for x in page.get(key) or [] if isinstance(x, dict))
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return items

    async def close(self) -> None:
        await self._session.close()


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
