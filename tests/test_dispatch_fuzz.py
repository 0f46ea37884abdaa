"""Property-based: arbitrary frames through the real frame → event → dispatch path.

Whatever Slack (or an attacker on the wire) sends, the engine keeps its connection,
keeps dispatching, and plugins still see well-formed events afterwards.
"""
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from rtmbotd.testing import FakeSlack, TestBot

PLUGIN = '''
outputs = []
seen = []
def catch_all_types(data):
    seen.append(data.get("type"))

def process_message(data):
    if data.get("text") == "ping?":
        outputs.append([data["channel"], "pong! %d" % len(seen)])
    else:
        seen.append(data.get("text"))
        outputs.append(data.get("echo_output")) if "echo_output" in data else None
'''

json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                          max_leaves=10)
# goodbye / disconnect are legitimate requests to reconnect, tested elsewhere
event_types = st.sampled_from(["message", "reaction_added", "hello", "pong", "channel_created",
                               "user_change", "team_join", "im_created", "channel_rename", "no_such_type",
                               "", "not-an-identifier", "1abc"]) | st.text(max_size=12).filter(
    lambda t: t not in ("goodbye", "disconnect"))
events = st.fixed_dictionaries({"type": event_types}, optional={
    "channel": st.one_of(st.sampled_from(["C1GENERAL", "D1ALICE", "#nope"]), json_value),
    "user": json_value, "text": json_value, "ts": json_value, "reply_to": json_value,
    "echo_output": json_value, "bot_id": json_value, "subtype": json_value,
})
raw_frames = st.one_of(st.text(max_size=200), st.binary(max_size=200),
                       json_value.map(json.dumps), events.map(json.dumps))


@pytest.fixture(scope="module", params=["rtm", "socket_mode"])
def live(request, tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    (base / "plugins" / "fuzz").mkdir(parents=True)
    (base / "plugins" / "fuzz" / "fuzz.py").write_text(PLUGIN)
    with FakeSlack() as fake, TestBot(fake, base_path=str(base), mode=request.param) as bot:
        yield fake, bot


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.one_of(events.map(lambda e: ("event", e)), raw_frames.map(lambda r: ("raw", r))),
                       min_size=1, max_size=8))
def test_any_frames_leave_the_bot_answering(live, frames):
    fake, bot = live
    opened = fake.connections_opened
    for kind, frame in frames:
        if kind == "event":
            fake.push_event(frame)
        else:
            fake.push_raw(frame, mode="rtm" if bot.mode == "rtm" else "socket_mode")
    before = len(fake.sent_messages())
    fake.message("ping?", channel="D1ALICE")
    msgs = fake.wait_until(lambda: [m for m in fake.sent_messages()[before:] if m["text"].startswith("pong!")],
                           timeout=10)
    assert msgs[0]["channel"] == "D1ALICE"
    assert fake.connections_opened == opened
    assert bot.daemon.connector.link is not None
