"""The `slack_client` plugins get: python-rtmbot's `api_call(method, **kwargs)` on slack_sdk."""
from __future__ import annotations

import logging
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from rtmbotd.slack.web import proxy_for

log = logging.getLogger(__name__)


class PluginSlackClient:
    """Synchronous Web API access for plugin code (runs on the plugin's own thread)."""

    def __init__(self) -> None:
        self.web: WebClient | None = None

    def configure(self, token: str | None, base_url: str) -> None:
        self.web = WebClient(token=token, base_url=base_url, proxy=proxy_for(base_url)) if token else None

    def api_call(self, method: str, **kwargs: Any) -> dict:
        """Call a Web API method; returns Slack's JSON body, errors included (like slackclient)."""
        if self.web is None:
            return {"ok": False, "error": "not_configured"}
        try:
            return self.web.api_call(method, json=kwargs).data
        except SlackApiError as exc:
            data = exc.response.data
            return data if isinstance(data, dict) else {"ok": False, "error": str(exc)}
