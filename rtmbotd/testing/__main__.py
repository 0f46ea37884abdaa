"""`python -m rtmbotd.testing`: run a fake Slack in the foreground until SIGTERM/SIGINT.

Prints `FAKE_SLACK_URL=http://127.0.0.1:PORT/api/` once listening; drive it with
`FakeSlackClient(url)` or POST /_control/<name>.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from rtmbotd.testing.fakeslack import FakeSlack


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rtmbotd.testing",
                                     description="Run a fake Slack (Web API, RTM, Socket Mode).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind, 0 for any free one")
    parser.add_argument("--bot-token", help="accept only this xoxb-/xoxp- token")
    parser.add_argument("--app-token", help="accept only this xapp- token")
    parser.add_argument("--ack-timeout", type=float, help="Socket Mode ack timeout in seconds")
    parser.add_argument("--no-echo", action="store_true",
                        help="do not echo the bot's own messages back as events")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake = FakeSlack(host=args.host, port=args.port, bot_token=args.bot_token,
                     app_token=args.app_token)
    if args.ack_timeout is not None:
        fake.ack_timeout = args.ack_timeout
    fake.echo_own_messages = not args.no_echo
    with fake:
        print(f"FAKE_SLACK_URL={fake.url}", flush=True)
        while not stop.wait(3600):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
