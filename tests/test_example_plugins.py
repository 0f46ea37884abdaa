"""The example plugins in plugins/: todo keeps its tasks in the store, oncall's rota, cron
entry and thread reply (acknowledge, then edit with the ts its callback gets)."""
from __future__ import annotations

import datetime
import runpy
from pathlib import Path

import pytest

from rtmbotd.testing.bot import TestBot
from rtmbotd.testing.waiting import wait_until

EXAMPLES = Path(__file__).resolve().parents[1] / "plugins"


def oncall(config: dict | None) -> dict:
    return runpy.run_path(str(EXAMPLES / "oncall" / "oncall.py"), init_globals={"config": config})


def test_oncall_rota_and_weekday_cron_entry() -> None:
    plugin = oncall({"channel": "#ops", "people": ["alice", "bob", "carol"]})
    assert plugin["crontable"] == [["0 9 * * MON-FRI", "post_oncall"]]
    monday = datetime.date(2026, 11, 30)                   # ISO week 49: 49 % 3 == 1
    assert plugin["on_call"](monday) == "bob"
    assert plugin["on_call"](monday + datetime.timedelta(days=4)) == "bob"     # the same week
    assert plugin["on_call"](monday + datetime.timedelta(days=7)) == "carol"
    plugin["post_oncall"]()
    (posted,) = plugin["outputs"]
    assert posted[0] == "#ops" and posted[1].startswith("On call this week: @")


def test_oncall_loads_with_its_weekday_cron_job(fake_slack) -> None:
    settings = {"oncall": {"channel": "#ops", "people": ["alice"]}}
    with TestBot(fake_slack, plugins=[EXAMPLES / "oncall"], settings=settings) as bot:
        assert bot.daemon.host.plugins.errors == {}
        wait_until(lambda: len(bot.daemon.host.scheduler) == 1, 30, "the cron job scheduled")


def test_oncall_is_quiet_without_a_section() -> None:
    plugin = oncall(None)
    assert plugin["crontable"] == [] and plugin["on_call"]() is None
    plugin["process_message"]({"channel": "C1", "text": "hello", "ts": "1.2"})
    assert plugin["outputs"] == []


def test_oncall_replies_in_the_thread_and_edits_the_reply(fake_slack) -> None:
    settings = {"oncall": {"channel": "#ops", "people": ["alice"]}}
    with TestBot(fake_slack, plugins=[EXAMPLES / "oncall"], settings=settings):
        fake_slack.message("oncall", channel="C1GENERAL", ts="1700000002.000300")
        fake_slack.wait_until(lambda: fake_slack.api_calls("chat.update"), timeout=30)
        (reply,) = fake_slack.sent_messages("C1GENERAL")
        assert (reply["text"], reply["thread_ts"]) == ("looking up who is on call…", "1700000002.000300")
        (edit,) = fake_slack.api_calls("chat.update")
        assert edit == {"method": "chat.update", "channel": "C1GENERAL", "ts": reply["ts"],
                        "text": "On call this week: @alice"}


@pytest.mark.rtmbot(plugins=[EXAMPLES / "todo"])
def test_todo_reacts_to_a_new_task(rtmbot) -> None:
    assert rtmbot.say("todo water the plants") == ["added"]
    rtmbot.fake.wait_until(lambda: rtmbot.fake.api_calls("reactions.add"), timeout=30)
    (reaction,) = rtmbot.fake.api_calls("reactions.add")
    assert (reaction["channel"], reaction["name"]) == ("D1ALICE", "memo")


def test_todo_tasks_survive_a_restart(fake_slack, tmp_path) -> None:
    with TestBot(fake_slack, plugins=[EXAMPLES / "todo"], workdir=str(tmp_path)) as bot:
        assert bot.say("todo one") == ["added"]
        assert bot.say("todo two") == ["added"]
        assert bot.say("done 1") == ["done"]
    with TestBot(fake_slack, plugins=[EXAMPLES / "todo"], workdir=str(tmp_path)) as bot:
        assert bot.say("tasks") == ["1) two"]
        assert bot.say("done 5") == ["no such task"]
        assert bot.say("fin") == ["all clear"]
        assert bot.say("tasks") == ["nothing to do"]


@pytest.mark.rtmbot(plugins=[EXAMPLES / "todo"])
def test_todo_done_0_or_negative_is_no_such_task(rtmbot) -> None:
    """Python's negative indexes made `done 0` finish the last task."""
    assert rtmbot.say("todo one") == ["added"]
    assert rtmbot.say("todo two") == ["added"]
    assert rtmbot.say("done 0") == ["no such task"]
    assert rtmbot.say("done -1") == ["no such task"]
    assert rtmbot.say("tasks") == ["1) one\n2) two"]
