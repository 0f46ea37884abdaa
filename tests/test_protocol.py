from rtmbotd.slack.protocol import (Event, Goodbye, Hello, Ignored, Pong, Reply, classify_rtm,
                                    classify_socket_mode)


def test_rtm_frames():
    assert classify_rtm({"type": "hello"}) == Hello()
    assert classify_rtm({"type": "pong", "reply_to": 3}) == Pong()
    assert isinstance(classify_rtm({"type": "goodbye"}), Goodbye)
    assert classify_rtm({"ok": True, "reply_to": 4, "ts": "1.2"}) == Reply({"ok": True, "reply_to": 4, "ts": "1.2"})
    assert classify_rtm({"type": "message", "text": "x"}) == Event("message", {"type": "message", "text": "x"})
    assert isinstance(classify_rtm({"type": "bad-name"}), Ignored)
    assert isinstance(classify_rtm({"no": "type"}), Ignored)


def envelope(kind, payload, eid="e1"):
    return {"envelope_id": eid, "type": kind, "payload": payload}


def test_socket_mode_frames():
    assert classify_socket_mode({"type": "hello", "num_connections": 1}) == Hello()
    bye = classify_socket_mode({"type": "disconnect", "reason": "link_disabled"})
    assert isinstance(bye, Goodbye) and "link_disabled" in bye.reason
    ev = {"type": "reaction_added", "reaction": "+1"}
    assert classify_socket_mode(envelope("events_api", {"event": ev})) == Event("reaction_added", ev, "e1")
    cmd = {"command": "/x", "text": "y"}
    assert classify_socket_mode(envelope("slash_commands", cmd)) == Event("slash_command", cmd, "e1")
    act = {"type": "block_actions"}
    assert classify_socket_mode(envelope("interactive", act)) == Event("interactive", act, "e1")


def test_socket_mode_oddities_are_ignored_not_raised():
    for frame in (envelope("events_api", {"event": "not a dict"}), envelope("events_api", {}),
                  envelope("events_api", "payload string"), envelope("unknown_kind", {}),
                  {"type": "events_api"}, {}, envelope("events_api", {"event": {"type": 5}})):
        assert isinstance(classify_socket_mode(frame), Ignored)
