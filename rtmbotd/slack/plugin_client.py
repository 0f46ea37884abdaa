"""The `slack_client` plugins get: python-rtmbot's `api_call(method, **kwargs)` on slack_sdk.

slack_sdk is imported on a plugin's first call, so a daemon whose plugins never call the
Web API does not carry it.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from rtmbotd.slack.proxy import proxy_for
from rtmbotd.slack.web import form_value

log = logging.getLogger(__name__)


class PluginSlackClient:
    """Synchronous Web API access for plugin code (runs on the plugin's own thread)."""

    def __init__(self) -> None:
        self._settings: tuple[str, str] | None = None
        self._web: Any = None                     # slack_sdk.WebClient for _settings
        self._lock = threading.Lock()

    def configure(self, token: str | None, base_url: str) -> None:
        with self._lock:
            settings = (token, base_url) if token else None
            if settings != self._settings:
                self._settings, self._web = settings, None

    @property
    def web(self) -> Any:
        """slack_sdk's WebClient for the current token, or None without one."""
        with self._lock:
            if self._web is None and self._settings is not None:
                from slack_sdk import WebClient
                token, base_url = self._settings
                self._web = WebClient(token=token, base_url=base_url)
                # Set after: given no proxy, slack_sdk takes HTTPS_PROXY itself, NO_PROXY
                # unread. None leaves it to urllib, which reads both (loopback then needs
                # NO_PROXY too).
                self._web.proxy = proxy_for(base_url)
            return self._web

    def api_call(self, method: str, **kwargs: Any) -> dict:
        """Call a Web API method; returns Slack's JSON body, errors included (like slackclient)."""
        web = self.web
        if web is None:
            return {"ok": False, "error": "not_configured"}
        from slack_sdk.errors import SlackApiError
        # Form-encoded, as python-rtmbot's slackclient sent it: Slack takes a JSON body on
        # most write methods only; users.info, conversations.history... ignored its arguments.
        form = {key: form_value(value) for key, value in kwargs.items() if value is not None}
        try:
            return web.api_call(method, data=form).data
        except SlackApiError as exc:
            data = exc.response.data
            return data if isinstance(data, dict) else {"ok": False, "error": str(exc)}
