"""The one redaction every output channel passes: the log, STATUS, stderr, error texts.

Hides Slack tokens of every kind, webhook and response URLs, credentials in URLs and
Authorization headers, so a
secret that ends up in an exception text or a config error never reaches a reader
(STATUS is world-readable through `systemctl status`).
"""
from __future__ import annotations

import re

REDACTED = "[redacted]"     # plain ASCII: safe in any log, terminal or notify datagram

# xoxb- xoxp- xoxa- xoxr- xoxs- xoxe- (any xox?-), xapp-, and rotating xoxe.xoxp-...
_TOKEN = re.compile(r"((?:xoxe\.)?(?:xox[a-z]|xapp)-)[A-Za-z0-9_\-+/=%]+", re.IGNORECASE)
# scheme://user:password@host -> scheme://user:[redacted]@host; scheme://secret@host -> scheme://[redacted]@host
_URL_USERINFO = re.compile(r"(?<![A-Za-z0-9+.\-])([A-Za-z][A-Za-z0-9+.\-]{0,31}://)"
                           r"([^\s/?#@:'\"<>\[\]{}]{0,256})(:[^\s/?#'\"<>\[\]{}]{0,256})?@")
# user:password@host with no scheme (a proxy variable written without http://)
_BARE_USERINFO = re.compile(r"(?<![\w.%+~:/-])([\w.%+~-]{1,256}):[^\s/?#'\"<>\[\]{}]{1,256}@(?=[\w\[])")
# Incoming webhooks and the response_url of slash commands and interactions: the last
# path segment is the credential (anyone holding the URL can post)
_WEBHOOK = re.compile(r"(hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers|commands|actions)/"
                      r"(?:[A-Za-z0-9_-]{1,64}/){1,3})[A-Za-z0-9_-]{1,256}(?![A-Za-z0-9_/-])", re.IGNORECASE)
# (Every repetition that can backtrack is bounded or anchored to a run's start: redact
# runs on every log line, so it must stay linear in the text's length.)
# Authorization: Bearer x / Proxy-Authorization: Basic x, as a header line or in a dict's repr
_AUTH_HEADER = re.compile(r"((?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)(?:([A-Za-z][A-Za-z0-9_-]*)\s+)?"
                          r"(\[redacted\]|[^\s'\",;}\]]+)", re.IGNORECASE)


def _userinfo(match: re.Match) -> str:
    scheme, user, password = match.group(1), match.group(2), match.group(3)
    if password is None:          # a bare userinfo is often a token itself
        return f"{scheme}{REDACTED}@"
    return f"{scheme}{user}:{REDACTED}@"


def _auth(match: re.Match) -> str:
    scheme = match.group(2)
    if match.group(3) == REDACTED:
        return match.group(0)
    return f"{match.group(1)}{scheme + ' ' if scheme else ''}{REDACTED}"


def redact(text: str) -> str:
    """`text` with tokens, URL credentials and Authorization values replaced."""
    text = _AUTH_HEADER.sub(_auth, text)
    text = _URL_USERINFO.sub(_userinfo, text)
    text = _BARE_USERINFO.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    text = _WEBHOOK.sub(lambda m: m.group(1) + REDACTED, text)
    return _TOKEN.sub(lambda m: m.group(1) + REDACTED, text)
