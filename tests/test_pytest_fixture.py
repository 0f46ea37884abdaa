"""The `rtmbot` fixture, used exactly as a plugin author would (see README)."""
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "plugins"


@pytest.mark.rtmbot(plugins=[EXAMPLES / "repeat", EXAMPLES / "todo"])
def test_example_plugins_with_the_fixture(rtmbot):
    assert rtmbot.say("hi", replies=1) == ['from repeat1 "hi" in channel D1ALICE']
    replies = rtmbot.say("todo ship it", replies=2)
    assert sorted(replies) == sorted(["added", 'from repeat1 "todo ship it" in channel D1ALICE'])
    assert rtmbot.fake.sent_messages()[-1]["channel"] == "D1ALICE"


@pytest.mark.rtmbot(plugins=[EXAMPLES / "counter"], mode="socket_mode")
def test_counter_uses_the_store_in_socket_mode(rtmbot):
    rtmbot.say("one", channel="C1GENERAL", replies=0)
    rtmbot.say("two", channel="C1GENERAL", replies=0)
    # one plugin sees its events in order, so "count" comes after both
    assert rtmbot.say("count", channel="C1GENERAL") == ["2 message(s) seen in this channel"]
    assert rtmbot.daemon.store.plugin("counter")["seen:C1GENERAL"] == 2
