"""Slack Web API calls on the daemon's loop, over keep-alive connections (slack/http.py)."""
from __future__ import annotations

import json as jsonlib
import logging
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from rtmbotd import __version__
from rtmbotd.slack.http import HttpClient, HttpError, Response

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
        self._auth = {"Authorization": f"Bearer {token}"}
        self._http = HttpClient(base_url, timeout=timeout, proxy=proxy_for(base_url),
                                user_agent=f"rtmbotd/{__version__}")

    async def call(self, method: str, *, json: bool = False, **params: Any) -> dict:
        """Call `method` (JSON body, or form-encoded); return Slack's answer or raise WebError."""
        try:
            if json:
                body = jsonlib.dumps(params, ensure_ascii=False).encode("utf-8")
                ctype = "application/json; charset=utf-8"
            else:
                body = urllib.parse.urlencode({k: _form_value(v) for k, v in params.items()
                                               if v is not None}).encode("ascii")
                ctype = "application/x-www-form-urlencoded"
        except (TypeError, ValueError) as exc:   # the request itself cannot be encoded
            raise WebError(method, f"bad request: {type(exc).__name__}: {exc}") from None
        try:
            resp = await self._http.post(method, body, ctype, self._auth)
        except HttpError as exc:
            raise WebError(method, str(exc), transport=True) from None
        except (OSError, EOFError, ValueError) as exc:   # a gap in HttpClient: retry
            raise WebError(method, f"{type(exc).__name__}: {exc}", transport=True) from None
        return _answer(method, resp)

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
        await self._http.close()


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return jsonlib.dumps(value, ensure_ascii=False)
    return str(value)


def _answer(method: str, resp: Response) -> dict:
    """Slack's JSON answer, or WebError for a refusal, a rate limit or a server failure."""
    retry = _seconds(resp.headers.get("retry-after"))
    try:
        data = jsonlib.loads(resp.body) if resp.body else None
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if resp.status >= 500:
        raise WebError(method, error or f"http_{resp.status}", retry, resp.status, transport=True)
    if resp.status == 429:
        raise WebError(method, error or "ratelimited", retry, 429)
    if not isinstance(data, dict):
        raise WebError(method, f"http_{resp.status}: answer is not a JSON object", retry, resp.status,
                       transport=resp.status == 200)
    if resp.status != 200 or not data.get("ok"):
        raise WebError(method, error or f"http_{resp.status}", retry, resp.status)
    return data


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
