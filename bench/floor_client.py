"""The floor: the least a Slack client can do to answer a DM, on rtmbotd's own libraries.

    python bench/floor_client.py --api-url URL --mode rtm|socket_mode

RTM: `rtm.connect` over HTTP (urllib), then on a `websockets` connection each user
message in a DM is answered at once with an RTM message frame. Socket Mode:
`apps.connections.open`, each envelope acked at once on the socket, and the answer
posted with `chat.postMessage` over one keep-alive `aiohttp.ClientSession` (the library
the daemon posts with, without its SlackWeb layer). No plugin machinery,
no queue, no loop of its own: the reply is written in the read handler. The reply
text is the `repeat` plugin's, so the benchmark matches replies the same way.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import urllib.parse
import urllib.request

from websockets.asyncio.client import connect

from rtmbotd.slack.proxy import LOOPBACK

BOT_TOKEN = "xoxb-bench"
APP_TOKEN = "xapp-bench"


def web_call(api_url: str, method: str, token: str) -> dict:
    """One Web API POST, never through a proxy (the fake is on loopback)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(api_url + method, data=b"", method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
    with opener.open(request, timeout=15) as response:
        answer = json.loads(response.read())
    if not answer.get("ok"):
        raise RuntimeError(f"{method}: {answer.get('error')}")
    return answer


def reply_text(event: dict) -> str | None:
    """The repeat plugin's answer to a user's DM, or None for anything else."""
    if event.get("type") != "message" or event.get("bot_id") or event.get("subtype"):
        return None
    channel, text = event.get("channel", ""), event.get("text")
    if not channel.startswith("D") or text is None:
        return None
    return 'from repeat1 "{}" in channel {}'.format(text, channel)


def _websocket(url: str):
    # The settings rtmbotd's own links use (rtmbotd/slack/link.py).
    return connect(url, max_size=16 * 1024 * 1024, compression=None, open_timeout=15,
                   close_timeout=3, ping_interval=30, ping_timeout=20, proxy=None)


async def rtm(api_url: str) -> None:
    info = web_call(api_url, "rtm.connect", BOT_TOKEN)
    me = info["self"]["id"]
    frame_id = 0
    async with _websocket(info["url"]) as ws:
        async for raw in ws:
            event = json.loads(raw)
            text = reply_text(event)
            if text is None or event.get("user") == me:
                continue
            frame_id += 1
            await ws.send(json.dumps({"id": frame_id, "type": "message",
                                      "channel": event["channel"], "text": text}))


async def socket_mode(api_url: str) -> None:
    import aiohttp                      # here: the RTM floor posts nothing and does not carry it
    from rtmbotd.slack.web import MAX_CONNECTIONS

    url = web_call(api_url, "apps.connections.open", APP_TOKEN)["url"]
    headers = {"Authorization": f"Bearer {BOT_TOKEN}", "Content-Type": "application/json; charset=utf-8"}
    posts: set[asyncio.Task] = set()

    async def post(channel: str, text: str) -> None:
        body = json.dumps({"channel": channel, "text": text}, ensure_ascii=False).encode("utf-8")
        async with http.post(api_url + "chat.postMessage", data=body, headers=headers) as resp:
            await resp.read()

    # The daemon's pool size; no proxy (loopback) and no per-call environment look-ups.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS), trust_env=False)
    async with session as http, _websocket(url) as ws:
        async for raw in ws:
            envelope = json.loads(raw)
            envelope_id = envelope.get("envelope_id")
            if envelope_id:
                await ws.send(json.dumps({"envelope_id": envelope_id}))
            event = (envelope.get("payload") or {}).get("event") or {}
            text = reply_text(event)
            if text is not None:
                task = asyncio.create_task(post(event["channel"], text))
                posts.add(task)
                task.add_done_callback(posts.discard)


async def run(api_url: str, mode: str) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        await (rtm(api_url) if mode == "rtm" else socket_mode(api_url))
    except asyncio.CancelledError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--mode", choices=("rtm", "socket_mode"), default="rtm")
    args = parser.parse_args()
    api_url = args.api_url if args.api_url.endswith("/") else args.api_url + "/"
    if urllib.parse.urlsplit(api_url).hostname not in LOOPBACK:
        parser.error("the floor client talks to a fake Slack on loopback only")
    asyncio.run(run(api_url, args.mode))


if __name__ == "__main__":
    main()
