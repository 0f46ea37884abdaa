"""Redeliveries are recognised by envelope_id or event_id, in bounded memory (issue 11, item 8)."""
from rtmbotd.slack.protocol import Event, classify_socket_mode
from rtmbotd.slack.redelivery import SeenEvents


def envelope(envelope_id, event_id, retry_attempt=0):
    return {"envelope_id": envelope_id, "type": "events_api", "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
            "payload": {"event_id": event_id, "event": {"type": "message", "text": "hi"}}}


def test_a_retry_with_a_new_envelope_and_the_same_event_id_is_seen():
    seen = SeenEvents()
    first = classify_socket_mode(envelope("env-1", "Ev1"))
    assert (first.envelope_id, first.event_id) == ("env-1", "Ev1")
    assert seen.first_time(first)
    assert not seen.first_time(classify_socket_mode(envelope("env-2", "Ev1", retry_attempt=1)))
    assert not seen.first_time(classify_socket_mode(envelope("env-1", "Ev1")))     # two links overlapping
    assert seen.first_time(classify_socket_mode(envelope("env-3", "Ev2")))


def test_the_same_envelope_without_an_event_id_is_seen_by_its_envelope():
    seen = SeenEvents()
    command = Event("slash_command", {"command": "/x"}, "env-1")
    assert seen.first_time(command) and not seen.first_time(command)


def test_events_without_ids_always_pass():
    seen = SeenEvents()
    rtm = Event("message", {"type": "message"})
    assert seen.first_time(rtm) and seen.first_time(rtm)
    assert len(seen) == 0


def test_memory_is_bounded_and_forgets_the_oldest_first():
    seen = SeenEvents(limit=3)
    for i in range(10):
        assert seen.first_time(Event("message", {}, f"env-{i}", f"Ev{i}"))
    assert len(seen) == 6
    assert seen.first_time(Event("message", {}, "env-new", "Ev0"))        # forgotten
    assert not seen.first_time(Event("message", {}, "env-new2", "Ev9"))   # still known
