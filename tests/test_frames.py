import json

from hypothesis import given, strategies as st

from rtmbotd.slack.frames import BadFrame, copy_json, decode_frame, event_type


def test_object_decodes():
    assert decode_frame('{"type": "hello"}') == {"type": "hello"}


def test_malformed_and_non_object():
    assert isinstance(decode_frame("{nope"), BadFrame)
    bad = decode_frame("[1, 2]")
    assert isinstance(bad, BadFrame) and "list" in bad.reason
    assert isinstance(decode_frame('"text"'), BadFrame)


def test_invalid_utf8_binary_frame():
    bad = decode_frame(b'{"type": "\xff"}')
    assert isinstance(bad, BadFrame) and "UTF-8" in bad.reason


def test_huge_frame_sample_is_short():
    raw = '{"x": "' + "a" * 1_000_000
    bad = decode_frame(raw)
    assert isinstance(bad, BadFrame) and len(bad.sample) <= 200 and bad.size == len(raw)


def test_event_type_requires_identifier():
    assert event_type({"type": "message"}) == "message"
    assert event_type({"type": "not-an-identifier"}) is None
    assert event_type({"type": 3}) is None
    assert event_type({}) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@given(st.one_of(st.text(), st.binary()))
def test_decode_never_raises(raw):
    result = decode_frame(raw)
    assert isinstance(result, (dict, BadFrame))


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_objects_round_trip_and_copy_is_deep(obj):
    decoded = decode_frame(json.dumps(obj))
    assert decoded == obj
    copied = copy_json(decoded)
    assert copied == decoded
    for key, value in decoded.items():
        if isinstance(value, (dict, list)):
            assert copied[key] is not value
