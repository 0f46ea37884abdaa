import pytest

from rtmbotd.slack.directory import Directory, NeedsDM, UnknownTarget
from rtmbotd.outbox import Outbox
from rtmbotd.router import MAX_DEPTH, DMOpened, Router, parse_output


def directory():
    d = Directory()
    d.load([{"id": "C1", "name": "general"}, {"id": "D9", "is_im": True, "user": "U2"}],
           [{"id": "U1", "name": "alice", "profile": {"display_name": "Alice A"}},
            {"id": "U2", "name": "bob"}])
    return d


def test_resolve_forms():
    d = directory()
    assert d.resolve("C1") == "C1"
    assert d.resolve("#general") == "C1"
    assert d.resolve("general") == "C1"
    assert d.resolve("@bob") == "D9"
    assert d.resolve("@alice") == NeedsDM("U1")
    assert d.resolve("U1") == NeedsDM("U1")
    with pytest.raises(UnknownTarget):
        d.resolve("#nope")


def test_events_keep_cache_current():
    d = directory()
    d.apply({"type": "channel_created", "channel": {"id": "C7", "name": "new"}})
    assert d.resolve("#new") == "C7"
    d.apply({"type": "channel_rename", "channel": {"id": "C7", "name": "renamed"}})
    assert d.resolve("#renamed") == "C7"
    with pytest.raises(UnknownTarget):
        d.resolve("#new")
    d.apply({"type": "team_join", "user": {"id": "U5", "name": "carol"}})
    assert d.resolve("@carol") == NeedsDM("U5")
    d.apply({"type": "channel_deleted", "channel": "C7"})
    with pytest.raises(UnknownTarget):
        d.resolve("#renamed")


def test_parse_output_forms():
    assert parse_output(["C1", "hi"], "p").text == "hi"
    assert parse_output(["C1", 42], "p").text == "42"
    out = parse_output({"channel": "C1", "text": "t", "thread_ts": "1.2"}, "p")
    assert out.extra == {"thread_ts": "1.2"}
    assert parse_output({"channel": "C1", "blocks": [{}]}, "p").text is None
    for bad in (["C1"], ["C1", None], "C1 hi", {"text": "no channel"}, {"channel": "C1"}, [None, "x"]):
        assert parse_output(bad, "p") is None


def test_router_waits_for_listing_and_dm():
    opened = []
    box = Outbox(rate=0, burst=1)
    d = Directory()
    r = Router(box, d, opened.append)
    r.route(parse_output(["#general", "a"], "p"), 0.0)
    r.route(parse_output(["U1", "b"], "p"), 0.0)
    r.route(parse_output(["U1", "c"], "p"), 0.0)
    assert opened == []                      # behind "#general": it may be the same channel
    assert len(box) == 0 and r.waiting == 3
    d.load([{"id": "C1", "name": "general"}], [])
    r.directory_loaded(0.0)
    assert opened == ["U1"]                  # one conversations.open for both
    r.dm_opened(DMOpened("U1", "D1"), 0.0)
    sent = [(m.channel, m.text) for m, _ in box.ready(0.0, socket=True, web=True)]
    assert sorted(sent) == [("C1", "a"), ("D1", "b"), ("D1", "c")]
    assert r.waiting == 0


def test_outputs_behind_one_waiting_for_the_listing_keep_their_order():
    """`#general` then `C1` is one channel: the id must not overtake the name."""
    box = Outbox(rate=0, burst=1)
    d = Directory()
    r = Router(box, d, lambda user: None)
    r.route(parse_output(["#general", "first"], "p"), 0.0)
    r.route(parse_output({"method": "reactions.add", "channel": "C1", "timestamp": "1.2", "name": "x"}, "p"), 0.0)
    r.route(parse_output(["C1", "third"], "p"), 0.0)
    assert len(box) == 0
    d.load([{"id": "C1", "name": "general"}], [])
    r.directory_loaded(0.0)
    sent = []
    while ready := box.ready(0.0, socket=False, web=True):
        for msg, _ in ready:
            sent.append(msg.text or msg.method)
            box.delivered(msg)
    assert sent == ["first", "reactions.add", "third"]
    r.route(parse_output(["C1", "now"], "p"), 0.0)       # once listed, ids go at once
    assert len(box) == 1


def test_another_plugins_output_by_id_does_not_wait_for_the_listing():
    """Order is a plugin's: its `#general` waiting for a listing (which may keep failing)
    holds that plugin's later outputs, not another plugin's to a channel id."""
    box = Outbox(rate=0, burst=1)
    d = Directory()
    r = Router(box, d, lambda user: None)
    r.route(parse_output(["#general", "by name"], "p"), 0.0)
    r.route(parse_output(["C1", "by id"], "q"), 0.0)
    r.route(parse_output(["C1", "after the name"], "p"), 0.0)
    assert [rec["text"] for rec in box.snapshot()] == ["by id"] and r.waiting == 2


class GetRaises(dict):
    def get(self, *args):
        raise RuntimeError("get says no")


def nested(levels):
    """Exactly `levels` dicts and lists, one inside the other."""
    value = "bottom"
    for i in range(levels):
        value = [value] if i % 2 else {"type": "section", "elements": value}
    return value


def test_parse_output_reads_no_plugin_code_and_copies_to_plain_json():
    class Text(str):
        def encode(self, *args):
            raise RuntimeError("never called")
    blocks = [{"type": "section", "text": Text("hi")}]
    out = parse_output(GetRaises(channel="C1", text=Text("t"), blocks=blocks, n=(1, 2), **{"k": True}), "p")
    assert (out.target, out.text, out.extra) == ("C1", "t", {"blocks": [{"type": "section", "text": "hi"}],
                                                             "n": [1, 2], "k": True})
    assert type(out.text) is str and type(out.extra["blocks"][0]["text"]) is str
    blocks[0]["text"] = "changed later by the plugin"
    assert out.extra["blocks"][0]["text"] == "hi"


@pytest.mark.parametrize("bad", [
    {"channel": "C1", "text": "t", "blocks": [nested(5000)]},            # deeper than the recursion limit
    {"channel": "C1", "text": "t", "blocks": [nested(MAX_DEPTH - 1)]},   # one level deeper than MAX_DEPTH
    {"channel": "C1", "text": "t", "when": object()},
    {"channel": "C1", "text": "t", "n": float("nan")},
    ["C1", object()],
])
def test_parse_output_refuses_what_is_not_plain_json(bad, caplog):
    assert parse_output(bad, "p") is None
    assert "plugin p: output ignored: it is not plain JSON" in caplog.text


def test_parse_output_keeps_nesting_up_to_max_depth():
    out = parse_output({"channel": "C1", "blocks": [nested(MAX_DEPTH - 2)]}, "p")   # MAX_DEPTH levels in all
    assert out is not None and out.extra["blocks"] == [nested(MAX_DEPTH - 2)]


def test_listing_is_due_on_a_connect_when_missing_or_old():
    from rtmbotd.slack.directory import LISTING_MAX_AGE
    d = Directory()
    assert d.connected(100.0)                     # none yet: list
    assert not d.connected(101.0)                 # a reconnect soon after: keep it
    assert d.connected(101.0 + LISTING_MAX_AGE)   # old: list again


def test_a_passing_listing_failure_retries_a_permanent_one_loads_what_there_is():
    from rtmbotd.slack.directory import LISTING_RETRY, DirectoryListed
    from rtmbotd.slack.web import WebError
    d = Directory()
    limited = WebError("users.list", "ratelimited", retry_after=30.0, status=429)
    assert not d.listed(DirectoryListed([], [], limited), 0.0) and not d.loaded
    assert d.retry_at == 30.0                      # Retry-After, when longer than the floor
    assert not d.retry_due(29.9) and d.retry_due(30.0) and not d.retry_due(31.0)
    assert not d.listed(DirectoryListed([], [], WebError("users.list", "http_503", status=503)), 40.0)
    assert d.retry_at == 40.0 + LISTING_RETRY
    assert d.listed(DirectoryListed([{"id": "C1", "name": "general"}], [],
                                    WebError("users.list", "missing_scope", status=200)), 50.0)
    assert d.loaded and d.resolve("#general") == "C1"
