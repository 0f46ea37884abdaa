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


def containers(value):
    """Every dict and list in `value`, without recursion."""
    found, todo = [], [value]
    while todo:
        v = todo.pop()
        if isinstance(v, (dict, list)):
            found.append(v)
            todo.extend(v.values() if isinstance(v, dict) else v)
    return found


@given(json_values)
def test_copy_shares_no_container_at_any_depth(value):
    copied = copy_json(value)
    assert copied == value
    assert not {id(c) for c in containers(copied)} & {id(c) for c in containers(value)}


def test_copy_of_an_event_nested_deeper_than_the_recursion_limit():
    raw = '{"type": "message", "text": "deep", "x": ' + '[{"a": ' * 450 + "1" + "}]" * 450 + "}"
    event = decode_frame(raw)            # 900 levels: json.loads manages, a recursive copy does not
    assert isinstance(event, dict)
    deep = {"type": "message", "x": 1}
    for _ in range(5000):
        deep = {"type": "message", "x": [deep]}
    for value in (event, deep):
        copied = copy_json(value)
        assert copied["type"] == "message"
        assert len(containers(copied)) == len(containers(value))
        assert not {id(c) for c in containers(copied)} & {id(c) for c in containers(value)}
