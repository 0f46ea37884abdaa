"""Review of the durable outbox (issue 11): what the first round of tests missed."""
from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import wait_until

# Sends one message to a user id whose DM channel is not known yet (needs conversations.open)
# when a message says "dm".
TO_BOB = '''
outputs = []
def process_message(data):
    if data.get("text") == "dm":
        outputs.append(["U2BOB", "hello bob"])
'''


def test_a_message_to_a_user_waits_out_a_failed_dm_open(make_bot, fake) -> None:
    """conversations.open failing for a passing reason (429, HTTP 5xx, Slack down) used to
    drop every message waiting for that DM for good (and delete its saved row)."""
    bot = make_bot(plugins={"to_bob": TO_BOB}).start()
    fake.fail_next("conversations.open", status=429, retry_after=1, error="ratelimited")
    fake.message("dm")
    msgs = fake.wait_for_messages(1, timeout=60)
    assert [m["text"] for m in msgs] == ["hello bob"]
    assert len(fake.web_calls("conversations.open")) == 2
    assert "dropped" not in bot.log()


def test_a_message_to_a_user_waits_out_a_web_api_outage(make_bot, fake) -> None:
    bot = make_bot(plugins={"to_bob": TO_BOB}).start()
    fake.set_web_api_down(True)
    fake.message("dm")
    wait_until(lambda: fake.web_calls("conversations.open"), 60, "a conversations.open while the Web API is down")
    fake.set_web_api_down(False)
    msgs = fake.wait_for_messages(1, timeout=60)
    assert [m["text"] for m in msgs] == ["hello bob"]
    assert "dropped" not in bot.log()


MIXED = '''
import os
outputs = []
crontable = [[0.1, "tick"]]
done = False
def tick():
    global done
    if done or not os.path.exists({flag!r}):
        return
    done = True
    for i in range(3):
        outputs.append(["#random", "random %d" % i])
        outputs.append(["@alice", "alice %d" % i])
        outputs.append(["U2BOB", "bob %d" % i])
        outputs.append({{"channel": "C1GENERAL", "text": "general %d " % i + "x" * 4100}})
        outputs.append({{"channel": "C1GENERAL", "text": "blocks %d" % i,
                         "blocks": [{{"type": "section", "text": {{"type": "mrkdwn", "text": "b %d" % i}}}}]}})
        outputs.append({{"channel": "C1GENERAL", "text": "thread %d" % i, "thread_ts": "1700000000.000100"}})
'''


def test_mixed_targets_queued_in_an_outage_survive_sigkill_in_order(tmp_path: Path, fake) -> None:
    """#name, @user and a user id that needs a DM opened, long texts in parts, blocks and
    thread_ts: queued while Slack (websocket and Web API) is down, SIGKILLed, then sent in
    order per channel at the next start."""
    from tests.e2e.harness import Rtmbotd
    from tests.e2e.test_outbox_crash import kill_once_saved, rows_left
    flag = tmp_path / "go"
    plugin = MIXED.format(flag=str(flag))
    bot = Rtmbotd(tmp_path, fake, plugins={"mixed": plugin})
    url = bot.settings["STORE_URL"]
    kill_once_saved(bot, flag, 18, web_down=True)
    assert "dropped" not in bot.log()
    flag.unlink()
    fake.refuse_connections(0)
    fake.set_web_api_down(False)
    again = Rtmbotd(tmp_path, fake, plugins={"mixed": plugin})
    try:
        again.start()
        fake.wait_for_messages(21, timeout=60)           # 18 outputs, the three long ones in two parts
        wait_until(lambda: rows_left(url) == 0, 60, "the saved outbox emptied")
    finally:
        again.stop()
    msgs = fake.sent_messages()
    by_channel: dict[str, list[str]] = {}
    for m in msgs:
        by_channel.setdefault(m["channel"], []).append(m["text"][:9].strip())
    dm_bob = next(c for c in by_channel if c not in ("C2RANDOM", "D1ALICE", "C1GENERAL"))
    assert by_channel["C2RANDOM"] == ["random 0", "random 1", "random 2"]
    assert by_channel["D1ALICE"] == ["alice 0", "alice 1", "alice 2"]
    assert by_channel[dm_bob] == ["bob 0", "bob 1", "bob 2"]
    assert by_channel["C1GENERAL"] == [t for i in range(3) for t in (f"general {i}", "xxxxxxxxx", f"blocks {i}",
                                                                      f"thread {i}")]
    assert all(m.get("thread_ts") == "1700000000.000100" for m in msgs if m["text"].startswith("thread"))
    assert [m["blocks"][0]["text"]["text"] for m in msgs if m["text"].startswith("blocks")] == ["b 0", "b 1", "b 2"]
