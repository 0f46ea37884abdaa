"""Socket Mode while stopping: an event that arrives once the stop began is not acked
(Slack redelivers it to another connection or to the next start) rather than acked and
dropped; a retry of one handled before the stop is acked; the link stays up to send what
the outbox still owes (issue 11 review)."""
import signal

from tests.e2e.harness import wait_until

HOLDER = '''
import os, time
outputs = []
def process_message(data):
    if data["text"] == "hold":          # held open until the test releases it: keeps the stop going
        open("holding", "w").close()
        while not os.path.exists("release"):
            time.sleep(0.05)
        outputs.append([data["channel"], "released"])
    else:
        outputs.append([data["channel"], "got " + data["text"]])
'''


def envelope_ids(fake, kind, match):
    return {e["envelope_id"] for e in fake.envelopes_sent() if e["type"] == kind and match(e["payload"])}


def test_events_arriving_while_stopping_are_left_unacked_for_slack_to_redeliver(make_bot, fake, tmp_path):
    fake.ack_timeout = 3600.0            # no redelivery of its own during the test
    bot = make_bot(mode="socket_mode", plugins={"holder": HOLDER}, settings={"STOP_TIMEOUT": 300}).start()
    assert bot.say("before") == ["got before"]
    before = envelope_ids(fake, "events_api", lambda p: p["event"].get("text") == "before")
    wait_until(lambda: before <= {a["envelope_id"] for a in fake.acks()}, 30, "the event before the stop acked")

    fake.message("hold")
    wait_until(lambda: (tmp_path / "holding").exists(), 30, "the plugin holding its call open")
    bot.signal(signal.SIGTERM)
    bot.wait_log(r"stopping: finishing plugin calls", timeout=30)

    fake.message("late")
    fake.push_slash_command("/late", "too late")
    [before_event] = [e["payload"]["event_id"] for e in fake.envelopes_sent() if e["envelope_id"] in before]
    retry = fake.redeliver(before_event, reason="timeout")   # handled before the stop: acked, once more is no use
    fake.push_raw("{not json", mode="socket_mode")     # read after all three: the link has seen them
    bot.wait_log(r"ignored a bad frame", timeout=30)
    wait_until(lambda: retry in {a["envelope_id"] for a in fake.acks()}, 30, "the retry of a handled event acked")
    late = (envelope_ids(fake, "events_api", lambda p: p["event"].get("text") == "late")
            | envelope_ids(fake, "slash_commands", lambda p: p.get("command") == "/late"))
    assert len(late) == 2
    assert late <= {u["envelope_id"] for u in fake.unacked()}
    assert not late & {a["envelope_id"] for a in fake.acks()}

    (tmp_path / "release").touch()
    assert bot.wait_exit(60) == 0
    texts = [m["text"] for m in fake.sent_messages("D1ALICE")]
    assert texts == ["got before", "released"], texts      # the link stayed up for what was owed
