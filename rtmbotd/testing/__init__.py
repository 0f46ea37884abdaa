"""Test plugins without Slack: a fake Slack server and a bot running the real engine.

    from rtmbotd.testing import FakeSlack, TestBot

    with FakeSlack() as slack, TestBot(slack, plugins=["plugins/repeat"]) as bot:
        assert bot.say("hi") == ['from repeat1 "hi" in channel D1ALICE']

With pytest, the `rtmbot` fixture does the same (see rtmbotd.testing.pytest_plugin).
"""
from rtmbotd.testing.bot import TestBot
from rtmbotd.testing.fakeslack import FakeSlack
from rtmbotd.testing.notify_listener import NotifyListener
from rtmbotd.testing.waiting import wait_until

__all__ = ["FakeSlack", "NotifyListener", "TestBot", "wait_until"]
