"""Regressions found by the second review, against the real process and the fake Slack."""
import asyncio
import signal
import threading

import aiohttp
from aiohttp import web

from tests.e2e.harness import wait_until

REPEAT = '''
outputs = []
def process_message(data):
    outputs.append([data["channel"], "r " + data["text"]])
'''


class SlowAnswers:
    """The fake's Web API behind a front that holds chat.postMessage's answer for `delay`
    seconds after the fake has posted the message (Slack acted; the answer is on its way)."""

    def __init__(self, target: str, delay: float) -> None:
        self.target, self.delay = target, delay
        self.held = 0
        self.loop = asyncio.new_event_loop()

    def start(self) -> str:
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        assert ready.wait(10)
        return f"http://127.0.0.1:{self.port}/api/"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/api/{name}", self._forward)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _forward(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with aiohttp.ClientSession() as session:
            async with session.post(self.target + name, data=await request.read(), headers=headers) as answer:
                body, status = await answer.read(), answer.status
        if name == "chat.postMessage":
            self.held += 1
            await asyncio.sleep(self.delay)
        return web.Response(body=body, status=status, content_type="application/json")


def test_a_token_change_at_reload_does_not_post_a_message_twice(make_bot, fake):
    """The old Web API session was closed at once: the answer to a chat.postMessage Slack had
    already posted was cut short ("Server disconnected"), and the outbox sent it again."""
    front = SlowAnswers(fake.url, delay=1.5)
    bot = make_bot(mode="socket_mode", plugins={"r": REPEAT}, settings={"SLACK_API_URL": front.start()}).start()
    fake.message("one", channel="D1ALICE")
    wait_until(lambda: front.held >= 1, 10, "the reply posted, its answer held")
    bot.settings["SLACK_TOKEN"] = "xoxb-rotated"
    bot.write_config()
    bot.signal(signal.SIGHUP)
    bot.wait_log(r"connected to Slack", count=2, timeout=30)
    assert bot.say("two") == ["r two"]
    texts = [m["text"] for m in fake.sent_messages("D1ALICE")]
    assert texts == ["r one", "r two"], texts
    assert "sending to D1ALICE failed" not in bot.log(), bot.log()[-2000:]
    # a token change and a stop at once, a post in flight: the old session still closes
    fake.message("three", channel="D1ALICE")
    wait_until(lambda: front.held >= 3, 10, "the reply posted, its answer held")
    bot.settings["SLACK_TOKEN"] = "xoxb-rotated-again"
    bot.write_config()
    bot.signal(signal.SIGHUP)
    bot.signal(signal.SIGTERM)
    assert bot.wait_exit() == 0
    assert "Unclosed" not in bot.log() and "Traceback" not in bot.log(), bot.log()[-2000:]


def test_channel_names_resolve_when_the_token_may_not_list_users(make_bot, fake):
    """A bot without the users:read scope: users.list answers missing_scope, and the channel
    listing fetched just before it was thrown away, so `#general` never resolved."""
    fake.fail_next("users.list", count=1000, status=200, error="missing_scope", retry_after=None)
    bot = make_bot(mode="socket_mode", plugins={"to_general": '''
        outputs = []
        def process_message(data):
            outputs.append(["#general", "heard " + data["text"]])
        '''}).start()
    bot.wait_log(r"cannot list channels and users", timeout=20)
    fake.message("hello", channel="D1ALICE")
    [sent] = fake.wait_for_messages(1, channel="C1GENERAL", timeout=20)
    assert sent["text"] == "heard hello"
