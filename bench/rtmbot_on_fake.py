"""Run the installed python-rtmbot 0.4.1 against the fake Slack, its files left as installed.

    <throwaway venv>/bin/python bench/rtmbot_on_fake.py --api-url URL -c rtmbot.conf

Runs under the throwaway venv's interpreter and applies three shims in this process
before `rtmbot.bin.run_rtmbot.main()` (python-rtmbot's own `rtmbot` command) starts:

1. slackclient 1.x builds every Web API URL as `https://slack.com/api/<method>`
   (`SlackRequest.post_http_request`, host hard-coded): the `requests` module it calls is
   wrapped so that prefix goes to the fake's URL instead. The websocket URL comes from the
   fake's `rtm.start` answer and needs nothing.
2. PyYAML 3.x, which rtmbot pins, looks up `collections.Hashable`, gone since Python 3.10:
   it is aliased to `collections.abc.Hashable` so the config file can be read at all.
3. slackclient reads its websocket non-blocking and counts on TLS's "want read"
   (`SSLError` errno 2) when no frame is waiting, as it gets from wss://slack.com. Over the
   fake's plain ws:// the same condition raises BlockingIOError, which slackclient does not
   expect; websocket-client's `recv` re-raises it as `ssl.SSLWantReadError` so slackclient
   sees exactly what it sees on TLS. Its read logic (one frame per `rtm_read`) is unchanged.
"""
from __future__ import annotations

import argparse
import collections
import collections.abc
import ssl
import sys

SLACK_API = "https://slack.com/api/"


def shim_yaml() -> None:
    if not hasattr(collections, "Hashable"):
        collections.Hashable = collections.abc.Hashable


def shim_api_url(api_url: str) -> None:
    import slackclient.slackrequest as slackrequest

    real = slackrequest.requests

    class RequestsToFake:
        """`requests` with POSTs to https://slack.com/api/ sent to the fake instead."""

        def __getattr__(self, name):
            return getattr(real, name)

        def post(self, url, *args, **kwargs):
            if url.startswith(SLACK_API):
                url = api_url + url[len(SLACK_API):]
            return real.post(url, *args, **kwargs)

    slackrequest.requests = RequestsToFake()


def shim_plain_websocket() -> None:
    import websocket._core as core

    recv = core.recv

    def recv_like_tls(sock, bufsize):
        try:
            return recv(sock, bufsize)
        except BlockingIOError as exc:
            raise ssl.SSLWantReadError(2, "The operation did not complete (read)") from exc

    core.recv = recv_like_tls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", required=True, help="the fake's Web API URL, ending in /api/")
    parser.add_argument("-c", "--config", required=True)
    args = parser.parse_args()
    # This script's folder (bench/) must not shadow anything rtmbot or its plugins import.
    here = sys.path.pop(0)
    assert here.endswith("bench"), here
    api_url = args.api_url if args.api_url.endswith("/") else args.api_url + "/"
    shim_yaml()
    shim_api_url(api_url)
    shim_plain_websocket()
    from rtmbot.bin import run_rtmbot

    sys.argv = ["rtmbot", "--config", args.config]
    run_rtmbot.main()


if __name__ == "__main__":
    main()
