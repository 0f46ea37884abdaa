"""Redeliveries are recognised by envelope_id or event_id, for a retention window on the
monotonic clock, in bounded memory (issue 11, item 8)."""
import logging

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


def test_memory_is_bounded_and_forgets_the_oldest_first(caplog):
    seen = SeenEvents(limit=3)
    with caplog.at_level(logging.WARNING, logger="rtmbotd.slack.redelivery"):
        for i in range(10):
            assert seen.first_time(Event("message", {}, f"env-{i}", f"Ev{i}"), now=100.0 + i)
    assert len(seen) == 6
    assert seen.first_time(Event("message", {}, "env-new", "Ev0"), now=111.0)        # forgotten
    assert not seen.first_time(Event("message", {}, "env-new2", "Ev9"), now=111.0)   # still known
    assert [r.getMessage() for r in caplog.records if "forgetting the oldest" in r.getMessage()] == [
        "more than 3 event ids within 600 s: forgetting the oldest early; "
        "a late Slack retry of those may reach the plugins again"]     # logged once, not per id


def busy_workspace(seen, start, seconds, rate=14):
    """`rate` events a second for `seconds`, each its own envelope and event id."""
    for n in range(int(seconds * rate)):
        now = start + n / rate
        assert seen.first_time(Event("message", {}, f"env-busy-{start}-{n}", f"EvBusy{start}-{n}"), now=now)


def test_slacks_last_retry_after_five_minutes_on_a_busy_workspace_is_still_recognised():
    """At ~14 events/s, 4096 ids of each kind lasted under 5 minutes: the third retry got through."""
    seen = SeenEvents()
    assert seen.first_time(classify_socket_mode(envelope("env-1", "Ev1")), now=1000.0)
    busy_workspace(seen, 1000.0, 60)
    assert not seen.first_time(classify_socket_mode(envelope("env-2", "Ev1", retry_attempt=1)), now=1060.0)
    busy_workspace(seen, 1060.0, 245)
    assert not seen.first_time(classify_socket_mode(envelope("env-3", "Ev1", retry_attempt=2)), now=1305.0)
    assert len(seen) > 2 * 4096       # far more ids than the old count limit kept


def test_an_id_is_forgotten_once_the_retention_window_passed():
    seen = SeenEvents(retention=600.0)
    assert seen.first_time(Event("message", {}, "env-1", "Ev1"), now=0.0)
    assert not seen.first_time(Event("message", {}, "env-2", "Ev1"), now=599.0)
    assert len(seen) == 3
    assert seen.first_time(Event("message", {}, "env-9", "Ev9"), now=1300.0)     # everything older gone
    assert len(seen) == 2
    assert seen.first_time(Event("message", {}, "env-1", "Ev1"), now=1300.0)


def test_seeing_an_id_again_refreshes_it():
    seen = SeenEvents(retention=600.0)
    assert seen.first_time(Event("message", {}, "env-1", "Ev1"), now=0.0)
    assert not seen.first_time(Event("message", {}, "env-2", "Ev1"), now=500.0)     # a retry
    assert not seen.first_time(Event("message", {}, "env-3", "Ev1"), now=1000.0)    # 500 s after the retry
    assert seen.first_time(Event("message", {}, "env-4", "Ev1"), now=1601.0)


def test_the_clock_given_is_used_without_now():
    t = [0.0]
    seen = SeenEvents(retention=10.0, clock=lambda: t[0])
    assert seen.first_time(Event("message", {}, "env-1", "Ev1"))
    t[0] = 9.0
    assert not seen.first_time(Event("message", {}, "env-2", "Ev1"))
    t[0] = 20.0
    assert seen.first_time(Event("message", {}, "env-3", "Ev1"))


def test_known_looks_without_remembering():
    seen = SeenEvents(retention=600.0)
    assert not seen.known(Event("message", {}, "env-1", "Ev1"), now=0.0)
    assert len(seen) == 0
    assert seen.first_time(Event("message", {}, "env-1", "Ev1"), now=0.0)
    assert seen.known(Event("message", {}, "env-2", "Ev1"), now=599.0)
    assert not seen.known(Event("message", {}, "env-2", "Ev1"), now=601.0)
