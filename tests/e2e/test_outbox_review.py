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
