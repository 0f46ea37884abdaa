import pytest
from hypothesis import given, strategies as st

from rtmbotd.outbox import TEXT_LIMIT, Outbox, split_text


def test_short_text_is_one_chunk():
    assert split_text("hello") == ["hello"]


def test_split_at_line_boundaries():
    line = "x" * 1500 + "\n"
    chunks = split_text(line * 5)
    assert all(len(c) <= TEXT_LIMIT for c in chunks)
    assert len(chunks) == 3
    assert all(set(c.replace("\n", "")) == {"x"} for c in chunks)


def test_long_line_is_cut_at_a_space():
    text = ("word " * 2000).strip()
    chunks = split_text(text)
    assert all(len(c) <= TEXT_LIMIT for c in chunks)
    assert "".join(chunks) == text


@given(st.text(alphabet=st.sampled_from("ab \n"), max_size=20000))
def test_split_loses_nothing(text):
    chunks = split_text(text)
    assert all(len(c) <= TEXT_LIMIT for c in chunks)
    # only newlines at chunk joins may be dropped
    assert "".join(chunks).replace("\n", "") == text.replace("\n", "")


def test_fifo_per_channel_and_rate_limit():
    box = Outbox(rate=1.0, burst=2)
    for i in range(4):
        box.enqueue("C1", f"m{i}", "p", 0.0)
    sent = box.ready(0.0, socket=True, web=True)
    assert [m.text for m, _ in sent] == ["m0", "m1"]
    assert box.ready(0.5, socket=True, web=True) == []
    # paced 10% under the configured rate, for network jitter
    assert box.next_deadline(0.5, socket=True, web=True) == pytest.approx(1 / 0.9)
    assert box.ready(1.0, socket=True, web=True) == []
    assert [m.text for m, _ in box.ready(1 / 0.9, socket=True, web=True)] == ["m2"]


def test_round_robin_across_channels():
    box = Outbox(rate=0, burst=1)
    for i in range(3):
        box.enqueue("C1", f"a{i}", "p", 0.0)
    box.enqueue("C2", "b0", "p", 0.0)
    order = [m.text for m, _ in box.ready(0.0, socket=True, web=True)]
    assert order.index("b0") < order.index("a1")


def test_nothing_leaves_while_disconnected_and_order_kept():
    box = Outbox(rate=0, burst=1)
    for i in range(3):
        box.enqueue("C1", f"m{i}", "p", 0.0)
    assert box.ready(0.0, socket=False, web=False) == []
    assert box.next_deadline(0.0, socket=False, web=False) is None
    assert [m.text for m, _ in box.ready(0.0, socket=True, web=True)] == ["m0", "m1", "m2"]


def test_unacked_messages_go_back_in_order():
    box = Outbox(rate=0, burst=1)
    for i in range(3):
        box.enqueue("C1", f"m{i}", "p", 0.0)
    sent = box.ready(0.0, socket=True, web=True)
    box.delivered(sent[0][0])
    for m, _ in reversed(sent[1:]):
        box.unsend(m)
    assert len(box) == 2
    assert [m.text for m, _ in box.ready(0.0, socket=True, web=True)] == ["m1", "m2"]


def test_web_send_waits_for_previous_in_channel():
    box = Outbox(rate=0, burst=1)
    box.enqueue("C1", "a", "p", 0.0)
    box.enqueue("C1", "b", "p", 0.0, {"blocks": [{"type": "section"}]})
    first = box.ready(0.0, socket=True, web=True)
    assert [(m.text, via) for m, via in first] == [("a", True)]
    assert box.ready(0.0, socket=True, web=True) == []
    assert box.next_deadline(0.0, socket=True, web=True) is None   # waits on the ack, not time
    box.delivered(first[0][0])
    assert [(m.text, via) for m, via in box.ready(0.0, socket=True, web=True)] == [("b", False)]


def test_retry_after_pauses_web_sends():
    box = Outbox(rate=0, burst=1)
    box.enqueue("C1", "a", "p", 0.0)
    (msg, via), = box.ready(0.0, socket=False, web=True)
    assert via is False
    assert box.retry(msg, 0.0, after=3.0, web_wide=True) == 3.0
    assert box.ready(1.0, socket=False, web=True) == []
    assert box.next_deadline(1.0, socket=False, web=True) == 3.0
    assert [m.text for m, _ in box.ready(3.0, socket=False, web=True)] == ["a"]


def test_snapshot_records_requeue_in_order():
    box = Outbox(rate=0, burst=1)
    box.enqueue("C1", "a", "p", 0.0)
    box.enqueue("C2", "b", "p", 0.0, {"thread_ts": "1.2"})
    box.ready(0.0, socket=True, web=True)       # both in flight
    box.enqueue("C1", "c", "p", 0.0)
    snap = box.snapshot()
    assert [r["text"] for r in snap] == ["a", "b", "c"]
    other = Outbox(rate=0, burst=1)
    for rec in snap:      # what the daemon does with records saved at the last stop
        other.enqueue(rec["channel"], rec["text"], rec["plugin"], 0.0, rec["extra"])
    assert [m.text for m, _ in other.ready(0.0, socket=True, web=True)] == ["a", "b", "c"]


def test_long_text_split_into_ordered_messages():
    box = Outbox(rate=0, burst=1)
    msgs = box.enqueue("C1", ("line\n" * 2000), "p", 0.0)
    assert len(msgs) == 3 and all(len(m.text) <= TEXT_LIMIT for m in msgs)
    assert [m.seq for m in msgs] == sorted(m.seq for m in msgs)
