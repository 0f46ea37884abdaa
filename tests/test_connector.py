"""Connector book-keeping with stub links (no sockets): ordering across a link swap."""
import asyncio
import json
from pathlib import Path

from rtmbotd.config import Config
from rtmbotd.slack.connector import Connector, LinkFailed
from rtmbotd.outbox import Outbox
from rtmbotd.slack.link import LinkClosed, LinkFrame
from rtmbotd.slack.protocol import Event, Hello
from rtmbotd.slack.rtm import RtmLink
from rtmbotd.slack.web import WebError


class StubTransport:
    def is_closing(self):
        return True          # so frames queue in the link, where the tests read them

    def abort(self):
        pass


class StubSocket:
    transport = StubTransport()
    protocol = None

    async def close(self, *args):
        pass


def sent_texts(link):
    out = []
    while not link._outgoing.empty():
        frame = link._outgoing.get_nowait()
        if frame:
            out.append(json.loads(frame))
    return out


def connected_rtm():
    """A connector with an RTM link (stub socket) that said hello; (connector, outbox, link, posts)."""
    posts = []
    box = Outbox(0, 4)
    conn = Connector(posts.append, box, lambda: 0.0, lambda: posts.append("status changed"))
    conn.config = Config(path=Path("/x"), base_path=Path("/x"), slack_token="xoxb-1")
    link = RtmLink(StubSocket(), posts.append, {})
    conn.pending = link
    conn.on_hello(link, 0.0)
    return conn, box, link, posts


def test_replacement_link_keeps_order_of_unacked_messages():
    async def scenario():
        conn, box, old, posts = connected_rtm()
        for text in ("1", "2", "3"):
            box.enqueue("C1", text, "p", 0.0)
        conn.pump(0.0)
        first = sent_texts(old)
        assert [f["text"] for f in first] == ["1", "2", "3"]
        # Slack said goodbye; "1" is acknowledged, "2" and "3" are not when the new link is ready
        conn.on_reply(old, {"ok": True, "reply_to": first[0]["id"]}, 0.5)
        new = RtmLink(StubSocket(), posts.append, {})
        conn.pending = new
        for text in ("4", "5"):
            box.enqueue("C1", text, "p", 1.0)
        conn.on_hello(new, 1.0)
        conn.pump(1.0)
        assert sent_texts(new) == []                  # nothing newer overtakes "2" and "3"
        conn.handle_closed(LinkClosed(old, "closed"))
        conn.pump(1.2)
        assert [f["text"] for f in sent_texts(new)] == ["2", "3", "4", "5"]
        for task in list(conn._tasks):
            task.cancel()
    asyncio.run(scenario())


def test_web_errors_retry_only_passing_conditions():
    assert WebError("chat.postMessage", "ratelimited", 3.0, 429).permanent is False
    assert WebError("chat.postMessage", "ClientConnectorError: refused", transport=True).permanent is False
    assert WebError("chat.postMessage", "http_503", status=503, transport=True).permanent is False
    assert WebError("chat.postMessage", "internal_error", status=200).permanent is False
    for code in ("channel_not_found", "invalid_blocks_format", "not_allowed_token_type", "some_new_error"):
        assert WebError("chat.postMessage", code, status=200).permanent is True
    assert WebError("chat.postMessage", "bad request: TypeError: not serializable").permanent is True


def test_losing_the_current_link_never_resends_onto_it_and_sending_resumes_on_the_next():
    async def scenario():
        conn, box, old, posts = connected_rtm()
        box.enqueue("C1", "hello", "p", 0.0)
        conn.pump(0.0)
        assert [f["text"] for f in sent_texts(old)] == ["hello"]
        conn.handle_closed(LinkClosed(old, "lost"))      # unacknowledged: back in the outbox
        assert sent_texts(old) == [] and conn.link is None
        new = RtmLink(StubSocket(), posts.append, {})
        conn.pending = new
        box.enqueue("C1", "second", "p", 1.0)
        conn.on_hello(new, 1.0)
        conn.pump(1.0)
        assert [f["text"] for f in sent_texts(new)] == ["hello", "second"]
        for task in list(conn._tasks):
            task.cancel()
    asyncio.run(scenario())


def on_connected_rtm(scenario):
    """Run `scenario(conn, box, link, posts)` on a loop, with a connector linked over RTM."""
    async def run():
        conn, box, link, posts = connected_rtm()
        try:
            scenario(conn, box, link, posts)
        finally:
            for task in list(conn._tasks):
                task.cancel()
    asyncio.run(run())


def test_frames_the_link_owns_are_handled_and_events_handed_back():
    def scenario(conn, box, link, posts):
        box.enqueue("C1", "hi", "p", 0.0)
        conn.pump(0.0)
        [sent] = sent_texts(link)
        conn.handle_frame(LinkFrame(link, {"ok": True, "reply_to": sent["id"], "ts": "1.0"}))
        assert len(box) == 0 and conn._rtm_inflight == {}      # the reply settled the message
        event = {"type": "message", "text": "x"}
        assert conn.handle_frame(LinkFrame(link, event)) == Event("message", event)
        new = RtmLink(StubSocket(), posts.append, {})
        conn.pending = new
        posts.clear()
        assert conn.handle_frame(LinkFrame(new, {"type": "hello"})) == Hello()
        assert conn.link is new and posts == ["status changed"]
    on_connected_rtm(scenario)


def test_connection_problems_keep_their_words_and_announce_a_status_change():
    def scenario(conn, box, link, posts):
        posts.clear()
        conn.handle_closed(LinkClosed(link, "closed by Slack (code 1011, Server Error)"))
        assert posts == ["status changed"]
        assert conn.status().startswith("reconnecting in ")
        assert conn.status().endswith(" s (closed by Slack (code 1011, Server Error))")
        conn.handle_failed(LinkFailed("rtm.connect: Fake_Outage", None, False, conn.epoch))
        assert posts == ["status changed"] * 2
        assert conn.status().startswith("cannot connect (rtm.connect: Fake_Outage); retrying in ")
        conn.handle_failed(LinkFailed("from an older token", None, False, conn.epoch - 1))
        assert len(posts) == 2
    on_connected_rtm(scenario)


def test_own_messages_are_recognised_by_the_identity_auth_test_gave():
    conn = Connector(lambda item: None, Outbox(0, 4), lambda: 0.0)
    assert not conn.is_own("message", {"user": "U1BOT"})                 # no identity yet
    conn.identity = {"user_id": "U1BOT", "bot_id": "B1BOT"}
    assert conn.is_own("message", {"user": "U1BOT"}) and conn.is_own("message", {"bot_id": "B1BOT"})
    assert not conn.is_own("message", {"user": "U1ALICE"})
    assert not conn.is_own("reaction_added", {"user": "U1BOT"})         # only messages echo back
def test_an_auth_error_on_a_post_keeps_the_message_stops_sending_and_says_to_fix_the_token():
    """token_revoked, invalid_auth, account_inactive, not_authed used to drop each message
    for good while STATUS still said Connected."""
    from rtmbotd.slack.connector import AUTH_RETRY, SendResult
    for code in ("token_revoked", "invalid_auth", "account_inactive", "not_authed"):
        async def scenario():
            conn, box, link, posts = connected_rtm()
            box.enqueue("C1", "with blocks", "p", 0.0, {"blocks": [{"type": "divider"}]})   # goes by Web API
            box.enqueue("C1", "next", "p", 0.0, {"blocks": [{"type": "divider"}]})
            (msg, via_socket), = box.ready(0.0, socket=True, web=True)
            assert not via_socket
            posts.clear()
            conn.handle_sent(SendResult(msg, WebError("chat.postMessage", code, status=200)))
            assert len(box) == 2 and box.snapshot()[0]["text"] == "with blocks"     # kept, still first
            assert conn.link is None and box.ready(2.0, socket=False, web=conn.link is not None) == []
            assert conn.status() == (f"token rejected by Slack (chat.postMessage: {code}): fix SLACK_TOKEN in "
                                     f"/x and reload; retrying in {AUTH_RETRY:.0f} s")
            assert conn.retry_at >= AUTH_RETRY and "status changed" in posts
            for task in list(conn._tasks):
                task.cancel()
            await asyncio.gather(*conn._tasks, return_exceptions=True)
        asyncio.run(scenario())


def test_reconnect_metric_says_why_the_live_link_went():
    """A pong that never came is an 'error', a link that just died a 'drop'; a goodbye
    counts once although the old link closes before the new one says hello."""
    from rtmbotd.metrics import Recorder
    recorder = Recorder()
    registry = recorder.enable("test").registry

    def reconnects(reason):
        return registry.get_sample_value("rtmbotd_reconnects_total", {"reason": reason})

    def scenario(conn, box, link, posts):
        conn.recorder = recorder
        conn._ping(0.0)
        conn._ping(30.0)                          # no pong: the connector aborts the link
        conn.handle_closed(LinkClosed(link, "aborted"))
        assert (reconnects("error"), reconnects("drop")) == (1, 0)
        assert registry.get_sample_value("rtmbotd_connected") == 0
        second = RtmLink(StubSocket(), posts.append, {})
        conn.pending = second
        conn.on_hello(second, 31.0)
        assert registry.get_sample_value("rtmbotd_connected") == 1
        conn.handle_closed(LinkClosed(second, "connection reset"))
        assert (reconnects("error"), reconnects("drop")) == (1, 1)
        third = RtmLink(StubSocket(), posts.append, {})
        conn.pending = third
        conn.on_hello(third, 41.0)
        conn.replace_soon("Slack said goodbye")  # opens the next link, so the old one's close is no drop
        assert conn.connecting
        conn.handle_closed(LinkClosed(third, "closed by Slack"))
        assert (reconnects("goodbye"), reconnects("drop"), reconnects("error")) == (1, 1, 1)
    on_connected_rtm(scenario)
