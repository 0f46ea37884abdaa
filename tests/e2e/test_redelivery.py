"""Socket Mode redeliveries against the real process: Slack retries an event with a new
envelope_id and the same event_id; plugins must see it once (issue 11, item 8)."""
from tests.e2e.harness import wait_until

COUNTER = '''
outputs = []
def process_message(data):
    n = store.incr("seen")
    outputs.append([data["channel"], "seen %d: %s" % (n, data["text"])])
'''


def event_id_of(fake, text: str) -> str:
    [envelope] = [e for e in fake.envelopes_sent()
                  if e["type"] == "events_api" and e["payload"]["event"].get("text") == text]
    return envelope["payload"]["event_id"]


def test_a_redelivered_event_reaches_the_plugin_once(make_bot, fake):
    bot = make_bot(mode="socket_mode", plugins={"counter": COUNTER}).start()
    assert bot.say("one") == ["seen 1: one"]
    event_id = event_id_of(fake, "one")
    retries = [fake.redeliver(event_id, reason="timeout") for _ in range(3)]
    assert all(retries)
    wait_until(lambda: set(retries) <= {a["envelope_id"] for a in fake.acks()}, 10, "retries acked")
    # Events reach a plugin in order: by the reply to "two", every retry was handled (or dropped).
    bot.say("two")
    texts = [m["text"] for m in fake.sent_messages("D1ALICE")]
    assert texts == ["seen 1: one", "seen 2: two"], texts


def test_a_redelivery_to_a_new_connection_is_dropped_too(make_bot, fake):
    """Slack may retry on another connection: the memory of events outlives the link."""
    bot = make_bot(mode="socket_mode", plugins={"counter": COUNTER}).start()
    assert bot.say("one") == ["seen 1: one"]
    fake.drop_connections("socket_mode")
    bot.wait_log(r"connected to Slack", count=2, timeout=30)
    retry = fake.redeliver(event_id_of(fake, "one"), reason="timeout")
    assert retry is not None
    wait_until(lambda: retry in {a["envelope_id"] for a in fake.acks()}, 10, "retry acked")
    bot.say("two")
    texts = [m["text"] for m in fake.sent_messages("D1ALICE")]
    assert texts == ["seen 1: one", "seen 2: two"], texts


def test_events_slack_retries_for_want_of_an_ack_are_handled_once(make_bot, fake):
    """Slack's own retry: with no time to ack, every event goes out twice (retry_attempt 1)."""
    fake.ack_timeout = 0.0
    bot = make_bot(mode="socket_mode", plugins={"counter": COUNTER}).start()
    for text in ("one", "two", "three"):
        bot.say(text)
    retried = {r["envelope_id"] for r in fake.redeliveries() if r["retry_envelope_id"]}
    users = {e["envelope_id"] for e in fake.envelopes_sent()
             if e["type"] == "events_api" and e["payload"]["event"].get("user") == "U1ALICE"}
    assert retried & users, "no user event was retried: the test proves nothing"
    bot.say("four")
    texts = [m["text"] for m in fake.sent_messages("D1ALICE")]
    assert texts == ["seen 1: one", "seen 2: two", "seen 3: three", "seen 4: four"], texts
