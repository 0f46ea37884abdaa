"""The fake Slack itself, over real loopback sockets: slack_sdk for the Web API, websockets for RTM/Socket Mode."""
from __future__ import annotations

import inspect
import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# Loopback only: a proxy from the environment must never see these requests.
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_name, None)

import pytest  # noqa: E402
from slack_sdk import WebClient  # noqa: E402
from slack_sdk.errors import SlackApiError  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import ClientConnection, connect  # noqa: E402

from rtmbotd.testing.fakeslack import FakeSlack, FakeSlackClient  # noqa: E402
from rtmbotd.testing.fakeslack import ControlError  # noqa: E402
from rtmbotd.testing.fakeslack.controls import CONTROLS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
T = 5.0  # every wait in this file has this deadline


@pytest.fixture
def fake():
    with FakeSlack() as running:
        yield running


@pytest.fixture
def web(fake):
    return WebClient(token="xoxb-test", base_url=fake.url)


def ws_connect(url: str, **kwargs) -> ClientConnection:
    return connect(url, proxy=None, open_timeout=T, close_timeout=1, **kwargs)


def recv_json(ws: ClientConnection) -> dict:
    return json.loads(ws.recv(timeout=T))


def recv_reply(ws: ClientConnection, reply_to: int) -> dict:
    """The answer to frame `reply_to`, skipping events (like echoes) in between."""
    while True:
        frame = recv_json(ws)
        if frame.get("reply_to") == reply_to and frame.get("type") != "pong":
            return frame


def recv_until_closed(ws: ClientConnection) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=T)
    return closed.value


@contextmanager
def open_rtm(fake: FakeSlack, web: WebClient) -> Iterator[ClientConnection]:
    with ws_connect(web.rtm_connect()["url"]) as ws:
        assert recv_json(ws) == {"type": "hello"}
        yield ws


@contextmanager
def open_socket_mode(fake: FakeSlack) -> Iterator[tuple[ClientConnection, dict]]:
    url = WebClient(base_url=fake.url).apps_connections_open(app_token="xapp-test")["url"]
    with ws_connect(url) as ws:
        yield ws, recv_json(ws)


def retry_after(exc: SlackApiError) -> str:
    return {k.lower(): v for k, v in exc.response.headers.items()}["retry-after"]


# -- Web API --------------------------------------------------------------------------------------


def test_auth_test_answers_the_fake_workspace(fake, web):
    answer = web.auth_test()
    assert answer.data == {"ok": True, "url": "https://fake-team.slack.com/", "team": "fake-team",
                           "user": "rtmbot", "team_id": "T0TEAM", "user_id": "U0BOT",
                           "bot_id": "B0BOT"}
    assert fake.url == f"http://127.0.0.1:{fake.port}/api/"
    (call,) = fake.web_calls()
    assert {k: v for k, v in call.items() if k != "received_at"} == {"method": "auth.test", "params": {},
                                                                      "token_kind": "bot"}


def test_configured_tokens_reject_others_and_unknown_methods():
    with FakeSlack(bot_token="xoxb-right", app_token="xapp-right") as fake:
        assert WebClient(token="xoxb-right", base_url=fake.url).auth_test()["ok"]
        with pytest.raises(SlackApiError) as bad:
            WebClient(token="xoxb-wrong", base_url=fake.url).auth_test()
        assert bad.value.response["error"] == "invalid_auth"
        assert bad.value.response.status_code == 200
        with pytest.raises(SlackApiError) as bad_app:
            WebClient(base_url=fake.url).apps_connections_open(app_token="xapp-wrong")
        assert bad_app.value.response["error"] == "invalid_auth"
        with pytest.raises(SlackApiError) as unknown:
            WebClient(token="xoxb-right", base_url=fake.url).api_call("nope.never")
        assert unknown.value.response["error"] == "unknown_method"
        assert all("xoxb" not in json.dumps(call) for call in fake.web_calls())


def test_post_message_records_json_and_form_bodies(fake, web):
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    first = web.chat_postMessage(channel="#general", text="hello", blocks=blocks)
    second = web.api_call("chat.postMessage", data={"channel": "G3SECRET", "text": "form",
                                                    "thread_ts": first["ts"]})
    assert first["channel"] == "C1GENERAL" and first["message"]["bot_id"] == "B0BOT"
    assert float(second["ts"]) > float(first["ts"])
    sent = fake.sent_messages()
    assert [(m["channel"], m["text"], m["via"]) for m in sent] == [
        ("C1GENERAL", "hello", "web"), ("G3SECRET", "form", "web")]
    assert sent[0]["blocks"] == blocks and sent[1]["thread_ts"] == first["ts"]
    assert fake.sent_messages("G3SECRET") == [sent[1]]


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
@pytest.mark.parametrize("kwargs, error", [
    ({"channel": "C404", "text": "x"}, "channel_not_found"),
    ({"channel": "C1GENERAL", "text": "x" * 40_001}, "msg_too_long"),
    ({"channel": "C1GENERAL"}, "no_text"),
])
def test_post_message_errors(fake, web, kwargs, error):
    with pytest.raises(SlackApiError) as failed:
        web.chat_postMessage(**kwargs)
    assert failed.value.response["error"] == error
    assert fake.sent_messages() == []


def test_conversations_list_paginates_with_cursors(fake, web):
    for i in range(5):
        fake.add_channel(f"C9X{i}", f"extra-{i}")
    seen, cursor, pages = [], None, 0
    while True:
        page = web.conversations_list(types="public_channel,private_channel", limit=2,
                                      cursor=cursor)
        seen += [c["id"] for c in page["channels"]]
        pages += 1
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert seen == ["C1GENERAL", "C2RANDOM", "G3SECRET"] + [f"C9X{i}" for i in range(5)]
    assert pages == 4
    assert [c["id"] for c in web.conversations_list()["channels"]][:2] == ["C1GENERAL", "C2RANDOM"]
    with pytest.raises(SlackApiError) as bad:
        web.conversations_list(cursor="bm9wZQ==")
    assert bad.value.response["error"] == "invalid_cursor"


def test_users_list_paginates_and_users_info(fake, web):
    fake.add_user("U3CAROL", "carol")
    first = web.users_list(limit=3)
    assert [u["id"] for u in first["members"]] == ["U0BOT", "U1ALICE", "U2BOB"]
    rest = web.users_list(limit=3, cursor=first["response_metadata"]["next_cursor"])
    assert [u["name"] for u in rest["members"]] == ["carol"]
    assert rest["response_metadata"]["next_cursor"] == ""
    assert web.users_info(user="U1ALICE")["user"]["profile"]["display_name"] == "Alice"
    with pytest.raises(SlackApiError, match="user_not_found"):
        web.users_info(user="U404")


def test_conversations_open_info_and_members(fake, web):
    assert web.conversations_open(users="U1ALICE")["channel"] == {"id": "D1ALICE"}
    bob = web.conversations_open(users="U2BOB")["channel"]["id"]
    assert bob.startswith("D") and web.conversations_open(users="U2BOB")["channel"]["id"] == bob
    assert web.conversations_info(channel=bob)["channel"]["user"] == "U2BOB"
    assert web.conversations_members(channel="G3SECRET")["members"] == ["U0BOT", "U1ALICE"]
    assert web.conversations_info(channel="G3SECRET")["channel"]["is_private"] is True
    with pytest.raises(SlackApiError, match="user_not_found"):
        web.conversations_open(users="U404")


def test_fail_next_answers_429_with_retry_after_then_recovers(fake, web):
    fake.fail_next("chat.postMessage", count=2, retry_after=7)
    for _ in range(2):
        with pytest.raises(SlackApiError) as limited:
            web.chat_postMessage(channel="C1GENERAL", text="x")
        assert limited.value.response.status_code == 429
        assert limited.value.response["error"] == "ratelimited"
        assert retry_after(limited.value) == "7"
    assert web.chat_postMessage(channel="C1GENERAL", text="x")["ok"]
    assert len(fake.web_calls("chat.postMessage")) == 3


def test_web_api_down_answers_503(fake, web):
    fake.set_web_api_down(True)
    with pytest.raises(SlackApiError) as down:
        web.auth_test()
    assert down.value.response.status_code == 503
    fake.set_web_api_down(False)
    assert web.auth_test()["ok"]


def test_rate_limit_on_post_message_answers_429(fake, web):
    fake.enforce_rate_limit(per_second=0.5, burst=1)
    assert web.chat_postMessage(channel="C1GENERAL", text="one")["ok"]
    with pytest.raises(SlackApiError) as limited:
        web.chat_postMessage(channel="C1GENERAL", text="two")
    assert limited.value.response.status_code == 429
    assert 1 <= int(retry_after(limited.value)) <= 2
    assert web.chat_postMessage(channel="C2RANDOM", text="other channel")["ok"]
    assert fake.rate_limit_violations() == 1
    assert [m["text"] for m in fake.sent_messages()] == ["one", "other channel"]


# -- RTM ---------------------------------------------------------------------------------------------


def test_rtm_message_reply_echo_and_ping(fake, web):
    with open_rtm(fake, web) as ws:
        assert fake.wait_for_connections(1, mode="rtm", timeout=T) == 1
        ws.send(json.dumps({"id": 1, "type": "message", "channel": "C1GENERAL", "text": "hi",
                            "thread_ts": "1.000001"}))
        reply = recv_json(ws)
        assert reply["ok"] is True and reply["reply_to"] == 1 and reply["text"] == "hi"
        echo = recv_json(ws)
        assert (echo["type"], echo["user"], echo["bot_id"], echo["ts"]) == (
            "message", "U0BOT", "B0BOT", reply["ts"])
        ws.send(json.dumps({"id": 2, "type": "ping", "time": 123}))
        assert recv_json(ws) == {"type": "pong", "reply_to": 2, "time": 123}
        ws.send(json.dumps({"id": 3, "type": "typing", "channel": "C1GENERAL"}))
        ws.send("{not json")
        assert recv_json(ws) == {"type": "error", "error": {"code": 1, "msg": "invalid json"}}
    [sent] = fake.wait_for_messages(1, timeout=T)
    assert (sent["via"], sent["channel"], sent["thread_ts"]) == ("rtm", "C1GENERAL", "1.000001")
    assert len(fake.rtm_frames_received()) == 4
    assert fake.connections_opened_by_mode["rtm"] == 1


def test_rtm_rejects_unknown_channel_and_long_text(fake, web):
    with open_rtm(fake, web) as ws:
        ws.send(json.dumps({"id": 7, "type": "message", "channel": "C404", "text": "x"}))
        assert recv_json(ws) == {"ok": False, "reply_to": 7,
                                 "error": {"code": -1, "msg": "channel not found"}}
        ws.send(json.dumps({"id": 8, "type": "message", "channel": "C1GENERAL", "text": "x" * 4001}))
        assert recv_json(ws) == {"ok": False, "reply_to": 8,
                                 "error": {"code": 2, "msg": "message text is too long"}}
    assert fake.sent_messages() == []
    assert [r["reason"] for r in fake.rejected_messages()] == ["msg_too_long"]


def test_rtm_ticket_is_single_use_and_unknown_tickets_refused(fake, web):
    url = web.rtm_connect()["url"]
    with ws_connect(url) as ws:
        assert recv_json(ws) == {"type": "hello"}
    with pytest.raises(InvalidStatus) as reused:
        with ws_connect(url):
            pass
    assert reused.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        with ws_connect(url.split("?")[0] + "?ticket=made-up"):
            pass
    assert fake.connections_opened == 1


def test_rtm_frame_over_16k_closes_with_1009(fake, web):
    with open_rtm(fake, web) as ws:
        ws.send(json.dumps({"id": 1, "type": "message", "channel": "C1GENERAL",
                            "text": "x" * 17_000}))
        closed = recv_until_closed(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 1009
    fake.wait_until(lambda: fake.open_connections() == 0, timeout=T)


def test_rtm_rate_limit_answers_slow_down_and_closes(fake, web):
    fake.enforce_rate_limit(per_second=0.01, burst=2)
    with open_rtm(fake, web) as ws:
        for i in (1, 2):
            ws.send(json.dumps({"id": i, "type": "message", "channel": "C1GENERAL", "text": "m"}))
            assert recv_reply(ws, i)["ok"] is True
        ws.send(json.dumps({"id": 3, "type": "message", "channel": "C1GENERAL", "text": "m"}))
        refused = recv_reply(ws, 3)
        assert refused["ok"] is False and refused["error"]["msg"].startswith("slow down")
        recv_until_closed(ws)
    assert fake.rate_limit_violations() == 1
    assert len(fake.sent_messages()) == 2


def test_goodbye_then_close_after_grace(fake, web):
    fake.goodbye_grace = 0.2
    with open_rtm(fake, web) as ws:
        assert fake.send_goodbye() == 1
        assert recv_json(ws) == {"type": "goodbye"}
        closed = recv_until_closed(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 1000
    assert fake.wait_until(lambda: fake.open_connections() == 0, timeout=T)


def test_drop_connections_aborts_without_close_frame(fake, web):
    with open_rtm(fake, web) as ws:
        assert fake.drop_connections() == 1
        assert fake.open_connections() == 0
        closed = recv_until_closed(ws)
    assert closed.rcvd is None


def test_close_connections_uses_the_given_code(fake, web):
    with open_rtm(fake, web) as ws:
        assert fake.close_connections(code=4001) == 1
        closed = recv_until_closed(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 4001


def test_refused_connections_answer_503_then_accept(fake, web):
    fake.refuse_connections(1)
    with pytest.raises(InvalidStatus) as refused:
        with ws_connect(web.rtm_connect()["url"]):
            pass
    assert refused.value.response.status_code == 503
    with open_rtm(fake, web):
        assert fake.connections_opened == 1


def test_push_raw_sends_frames_as_is(fake, web):
    with open_rtm(fake, web) as ws, ws_connect(web.rtm_connect()["url"], max_size=None) as big:
        assert recv_json(big) == {"type": "hello"}
        fake.wait_for_connections(2, mode="rtm", timeout=T)
        assert fake.push_raw("{broken", mode="rtm") == 2
        assert ws.recv(timeout=T) == "{broken"
        fake.push_raw(b"\xff\xfe\x00")
        assert ws.recv(timeout=T) == b"\xff\xfe\x00"
        assert big.recv(timeout=T) == "{broken" and big.recv(timeout=T) == b"\xff\xfe\x00"
        fake.push_raw("y" * 1_000_000, mode="rtm")
        assert len(big.recv(timeout=T)) == 1_000_000


def test_pushed_events_and_workspace_changes_reach_rtm_clients(fake, web):
    with open_rtm(fake, web) as ws:
        fake.echo_own_messages = False
        written_at = fake.message("hello bot", extra_field=1)
        event = recv_json(ws)
        assert (event["type"], event["channel"], event["user"], event["text"]) == (
            "message", "D1ALICE", "U1ALICE", "hello bot")
        assert event["ts"] and event["event_ts"] == event["ts"] and event["extra_field"] == 1
        assert 0 < written_at <= time.monotonic()
        fake.add_user("U3CAROL", "carol")
        assert recv_json(ws)["type"] == "team_join"
        fake.add_channel("C4NEW", "new")
        assert recv_json(ws)["channel"]["name"] == "new"
        fake.rename_channel("C4NEW", "newer")
        renamed = recv_json(ws)
        assert (renamed["type"], renamed["channel"]["name"]) == ("channel_rename", "newer")
        web.chat_postMessage(channel="C4NEW", text="no echo please")
        fake.push_event({"type": "user_typing", "channel": "C1GENERAL", "user": "U2BOB"})
        assert recv_json(ws)["type"] == "user_typing"  # the chat.postMessage was not echoed


# -- Socket Mode ---------------------------------------------------------------------------------------


def test_socket_mode_hello_envelope_and_ack(fake):
    with open_socket_mode(fake) as (ws, hello):
        assert hello["type"] == "hello" and hello["num_connections"] == 1
        assert hello["connection_info"] == {"app_id": "A0APP"}
        fake.message("hi", channel="C1GENERAL")
        envelope = recv_json(ws)
        assert envelope["type"] == "events_api" and envelope["retry_attempt"] == 0
        payload = envelope["payload"]
        assert payload["type"] == "event_callback" and payload["event_id"].startswith("Ev")
        assert payload["event"]["text"] == "hi" and payload["event"]["channel_type"] == "channel"
        assert [u["envelope_id"] for u in fake.unacked()] == [envelope["envelope_id"]]
        ws.send(json.dumps({"envelope_id": envelope["envelope_id"]}))
        [ack] = fake.wait_until(fake.acks, timeout=T)
    assert ack["envelope_id"] == envelope["envelope_id"] and ack["type"] == "events_api"
    assert 0 <= ack["latency_s"] < T
    assert fake.unacked() == []


def test_socket_mode_redelivers_once_after_ack_timeout(fake):
    fake.ack_timeout = 0.2
    with open_socket_mode(fake) as (ws, _):
        fake.message("are you there")
        first = recv_json(ws)
        retry = recv_json(ws)
        assert retry["retry_attempt"] == 1 and retry["retry_reason"] == "timeout"
        assert retry["envelope_id"] != first["envelope_id"]
        assert retry["payload"]["event_id"] == first["payload"]["event_id"]
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.6)  # no second redelivery
        ws.send(json.dumps({"envelope_id": retry["envelope_id"]}))
        fake.wait_until(fake.acks, timeout=T)
    assert fake.redeliveries() == [{"envelope_id": first["envelope_id"],
                                    "retry_envelope_id": retry["envelope_id"],
                                    "reason": "timeout"}]
    [left] = fake.unacked()
    assert left["envelope_id"] == first["envelope_id"] and left["timed_out"] is True


def test_an_unacked_slash_command_or_interactive_payload_is_not_retried(fake):
    """Slack retries Events API envelopes only: a slash command or an interactive payload
    left unacked fails for the user, it never comes again (so it needs no event_id claim)."""
    fake.ack_timeout = 0.2
    with open_socket_mode(fake) as (ws, _):
        fake.push_slash_command("/deploy", "prod")
        assert recv_json(ws)["type"] == "slash_commands"
        fake.push_interactive({"type": "block_actions", "actions": [{"action_id": "go"}]})
        assert recv_json(ws)["type"] == "interactive"
        fake.wait_until(lambda: sum(u["timed_out"] for u in fake.unacked()) >= 2, timeout=T)
        fake.message("next")                    # the next frame is this event, not a retry
        assert recv_json(ws)["type"] == "events_api"
    assert fake.redeliveries() == []


def test_socket_mode_envelopes_round_robin(fake):
    with open_socket_mode(fake) as (a, _), open_socket_mode(fake) as (b, hello_b):
        assert hello_b["num_connections"] == 2
        fake.message("one")
        fake.message("two")
        texts = {recv_json(a)["payload"]["event"]["text"], recv_json(b)["payload"]["event"]["text"]}
    assert texts == {"one", "two"}


def test_redeliver_retries_a_chosen_event_like_slack_to_the_next_connection(fake):
    with open_socket_mode(fake) as (a, _), open_socket_mode(fake) as (b, _):
        fake.message("once only")
        first = recv_json(a)
        a.send(json.dumps({"envelope_id": first["envelope_id"]}))      # acked: Slack may retry anyway
        event_id = first["payload"]["event_id"]
        retry_id = fake.redeliver(event_id, reason="http_timeout")
        retry = recv_json(b)                          # round robin: the other connection
        assert retry["envelope_id"] == retry_id != first["envelope_id"]
        assert retry["payload"] == first["payload"] and retry["payload"]["event_id"] == event_id
        assert (retry["retry_attempt"], retry["retry_reason"]) == (1, "http_timeout")
        again = fake.redeliver()                      # the latest event, one attempt further
        assert recv_json(a)["retry_attempt"] == 2
        with pytest.raises(ValueError):
            fake.redeliver("EvNOSUCHEVENT")
        # (inside: a connection closing retries its unacked envelopes on the other)
        assert [e["envelope_id"] for e in fake.envelopes_sent()] == [first["envelope_id"], retry_id, again]
        assert fake.redeliveries() == [
            {"envelope_id": first["envelope_id"], "retry_envelope_id": retry_id, "reason": "http_timeout"},
            {"envelope_id": retry_id, "retry_envelope_id": again, "reason": "timeout"}]


def test_redeliver_via_fake_slack_client(fake):
    client = FakeSlackClient(fake.url)
    with open_socket_mode(fake) as (ws, _):
        client.message("remote")
        first = recv_json(ws)
        retry_id = client.redeliver(first["payload"]["event_id"], reason="timeout")
        assert recv_json(ws)["envelope_id"] == retry_id
        assert [e["retry_attempt"] for e in client.envelopes_sent()] == [0, 1]
        with pytest.raises(ControlError):
            client.redeliver("EvNOSUCHEVENT")


def ack(ws: ClientConnection, envelope: dict) -> None:
    ws.send(json.dumps({"envelope_id": envelope["envelope_id"]}))


def test_a_timed_out_envelope_is_retried_on_another_connection_than_its_try(fake):
    fake.ack_timeout = 0.3
    with open_socket_mode(fake) as (a, _), open_socket_mode(fake) as (b, _), open_socket_mode(fake) as (c, _):
        [ia, ib, ic] = fake.connection_ids()
        fake.message("one")                        # a: left unacked
        first = recv_json(a)
        fake.message("two")
        ack(b, recv_json(b))
        fake.message("three")
        ack(c, recv_json(c))
        retry = recv_json(b)                       # plain round robin would have picked a again
        assert retry["payload"]["event_id"] == first["payload"]["event_id"] and retry["retry_attempt"] == 1
        ack(b, retry)
        fake.wait_until(lambda: len(fake.acks()) == 3, timeout=T)
    assert [(d["retry_attempt"], d["connection"]) for d in fake.deliveries(first["payload"]["event_id"])] == [
        (0, ia), (1, ib)]
    assert [a_["connection"] for a_ in fake.acks()] == [ib, ic, ib]
    assert fake.unacked()[0]["connection"] == ia


def test_a_closed_connection_has_its_unacked_envelopes_retried_on_another(fake):
    with open_socket_mode(fake) as (a, _), open_socket_mode(fake) as (b, _):
        fake.message("kept")
        kept = recv_json(a)
        fake.message("acked")
        ack(b, recv_json(b))
        fake.message("held")
        held = recv_json(a)
        assert fake.hold_ack_timeout() == held["envelope_id"]     # the latest event's: only redeliver moves it
        a.close()
        retry = recv_json(b)
        assert (retry["payload"], retry["retry_attempt"]) == (kept["payload"], 1)
        with pytest.raises(TimeoutError):
            b.recv(timeout=0.5)                    # neither the acked one nor the held one
        assert fake.redeliver(held["payload"]["event_id"]) == recv_json(b)["envelope_id"]
    assert [r["envelope_id"] for r in fake.redeliveries()] == [kept["envelope_id"], held["envelope_id"]]


def test_a_held_ack_timeout_waits_until_released(fake):
    fake.ack_timeout = 0.3
    with open_socket_mode(fake) as (a, _):
        fake.message("wait for me")
        first = recv_json(a)
        fake.hold_ack_timeout(first["payload"]["event_id"])
        with pytest.raises(TimeoutError):
            a.recv(timeout=0.8)
        fake.hold_ack_timeout(hold=False)
        retry = recv_json(a)                        # the only connection: the same one
        assert retry["payload"]["event_id"] == first["payload"]["event_id"] and retry["retry_reason"] == "timeout"
    with pytest.raises(ValueError):
        fake.hold_ack_timeout("EvNOSUCHEVENT")


def test_random_distribution_is_repeatable_by_seed(fake):
    def spread(seed: int | None, mode: str = "random") -> list[int]:
        fake.clear()
        fake.distribute(mode, seed=seed)
        for n in range(12):
            fake.message(f"m{n}")
        fake.wait_until(lambda: len(fake.deliveries()) == 12, timeout=T)
        return [d["connection"] for d in fake.deliveries()]

    with open_socket_mode(fake) as (a, _), open_socket_mode(fake) as (b, _), open_socket_mode(fake) as (c, _):
        ia, ib, ic = fake.connection_ids()
        first = spread(7)
        assert spread(7) == first and len(set(first)) == 3
        assert first != [first[0], first[1], first[2]] * 4          # not the rotation
        assert spread(None, "round_robin") == [ia, ib, ic] * 4
        fake.distribute("random")
        assert len(set(spread(None))) > 1
        with pytest.raises(ValueError):
            fake.distribute("everyone")


def test_distribution_controls_via_fake_slack_client(fake):
    client = FakeSlackClient(fake.url)
    with open_socket_mode(fake) as (a, _), open_socket_mode(fake) as (b, _):
        assert client.connection_ids() == fake.connection_ids() and len(client.connection_ids()) == 2
        client.distribute("random", seed=3)
        client.message("remote")
        [delivery] = client.deliveries()
        assert client.hold_ack_timeout() == delivery["envelope_id"]
        assert delivery["connection"] in client.connection_ids()
        with pytest.raises(ControlError):
            client.distribute("nope")


def test_socket_mode_slash_command_interactive_and_response_url(fake):
    with open_socket_mode(fake) as (ws, _):
        fake.push_slash_command("/deploy", "prod", channel="C1GENERAL")
        command = recv_json(ws)
        assert command["type"] == "slash_commands" and command["accepts_response_payload"] is True
        assert command["payload"]["command"] == "/deploy" and command["payload"]["text"] == "prod"
        ws.send(json.dumps({"envelope_id": command["envelope_id"], "payload": {"text": "ok"}}))
        fake.push_interactive({"type": "block_actions", "actions": [{"action_id": "go"}]})
        interactive = recv_json(ws)
        assert interactive["type"] == "interactive"
        assert interactive["payload"]["actions"] == [{"action_id": "go"}]
        acks = fake.wait_until(fake.acks, timeout=T)
    assert acks[0]["payload"] == {"text": "ok"} and acks[0]["type"] == "slash_commands"
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    reply = urllib.request.Request(command["payload"]["response_url"], data=b'{"text": "deployed"}',
                                   headers={"Content-Type": "application/json"})
    with no_proxy.open(reply, timeout=T) as answer:
        assert json.loads(answer.read()) == {"ok": True}
    [sent] = fake.sent_messages()
    assert (sent["via"], sent["channel"], sent["text"]) == ("response_url", "C1GENERAL", "deployed")


def test_socket_mode_disconnect_then_close(fake):
    fake.goodbye_grace = 0.2
    with open_socket_mode(fake) as (ws, _):
        assert fake.send_disconnect("link_disabled") == 1
        assert recv_json(ws) == {"type": "disconnect", "reason": "link_disabled",
                                 "debug_info": {"host": "fake"}}
        closed = recv_until_closed(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 1000


def test_socket_mode_gets_echo_of_posted_message(fake, web):
    with open_socket_mode(fake) as (ws, _):
        web.chat_postMessage(channel="D1ALICE", text="from the bot")
        event = recv_json(ws)["payload"]["event"]
    assert (event["user"], event["bot_id"], event["channel_type"]) == ("U0BOT", "B0BOT", "im")


# -- waiting and remote control ---------------------------------------------------------------------------


def test_wait_for_messages_times_out_listing_what_it_saw(fake, web):
    web.chat_postMessage(channel="C1GENERAL", text="only one")
    with pytest.raises(TimeoutError, match="only one"):
        fake.wait_for_messages(2, timeout=0.2)
    fake.clear()
    assert fake.sent_messages() == [] and fake.web_calls() == []


def test_control_api_via_fake_slack_client(fake, web):
    client = FakeSlackClient(fake.url)
    assert client.url == fake.url
    with open_rtm(fake, web) as ws:
        assert client.wait_for_connections(1, mode="rtm") == 1
        client.configure(echo_own_messages=False)
        client.message("remote hello", channel="C1GENERAL")
        assert recv_json(ws)["text"] == "remote hello"
        client.push_raw(b"\x00\xff")
        assert ws.recv(timeout=T) == b"\x00\xff"
        ws.send(json.dumps({"id": 1, "type": "message", "channel": "C2RANDOM", "text": "reply"}))
        assert recv_reply(ws, 1)["ok"] is True
        [sent] = client.wait_for_messages(1, channel="C2RANDOM")
        assert sent["text"] == "reply" and sent["via"] == "rtm"
        client.send_goodbye()
        assert recv_json(ws)["type"] == "goodbye"
    client.fail_next("auth.test", status=500, error="fatal_error", retry_after=None)
    with pytest.raises(SlackApiError) as failed:
        web.auth_test()
    assert failed.value.response.status_code == 500
    state = client.state()
    assert state["connections_opened"] == 1 and state["web_call_counts"]["auth.test"] == 1
    assert client.sent_messages("C2RANDOM")[0]["text"] == "reply"
    with pytest.raises(TimeoutError):
        client.wait_for_messages(5, timeout=0.2)
    with pytest.raises(ControlError):
        client._post("no_such_control")
    client.clear()
    assert client.sent_messages() == []


def test_every_registered_control_is_offered_in_process_and_over_http(fake, web):
    """One registry (controls.py) gives FakeSlack, FakeSlackClient and /_control alike."""
    client = FakeSlackClient(fake.url)
    web.chat_postMessage(channel="C1GENERAL", text="recorded")
    assert len(CONTROLS) > 25
    for name, control in CONTROLS.items():
        for side in (FakeSlack, FakeSlackClient):
            assert getattr(side, name).__doc__, f"{side.__name__}.{name} lacks its docstring"
        if control.kind == "action":   # the route exists: bad arguments are a 400, not a 404
            with pytest.raises(ControlError, match="Error"):
                client._post(name, no_such_argument=1)
        elif control.kind == "reading":                     # none needs an argument
            here, there = getattr(fake, name), getattr(client, name)
            if callable(here):
                here, there = here(), there()
            assert here == there, name
    assert client.socket_mode_frames_received() == [] and client.open_connections("rtm") == 0
    assert client.connections_opened_by_mode == fake.connections_opened_by_mode
    assert "channel" in inspect.signature(FakeSlack.message).parameters    # signatures kept for help()
    with pytest.raises(ControlError, match="unknown control"):
        client._request("GET", "push_event")                       # an action is no read-back


def test_module_runs_standalone_until_sigterm():
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with subprocess.Popen([sys.executable, "-m", "rtmbotd.testing", "--port", "0"],
                          stdout=subprocess.PIPE, env=env, text=True) as proc:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(proc.stdout, selectors.EVENT_READ)
                assert selector.select(timeout=15), "no FAKE_SLACK_URL line"
            line = proc.stdout.readline().strip()
            assert line.startswith("FAKE_SLACK_URL=http://127.0.0.1:") and line.endswith("/api/")
            url = line.split("=", 1)[1]
            assert WebClient(token="xoxb-x", base_url=url).auth_test()["user_id"] == "U0BOT"
            assert FakeSlackClient(url).state()["web_call_counts"] == {"auth.test": 1}
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
