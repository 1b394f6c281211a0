"""The JSON of outgoing messages (gateway/core/json_codec.py) against the standard library:
a reader must get the same values, and where orjson would judge differently the standard
library's answer must stand (issue 17: the codec exists only to be faster)."""

import dataclasses
import datetime
import enum
import json
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import json_codec


class Colour(enum.StrEnum):
    RED = "red"


DOCUMENTS = {
    "plain": {"a": 1, "b": [1.5, -2, True, None], "c": {"d": "e"}},
    "text outside ASCII": {"message": "Lager 92 °C; Δ 3 K; 轴承", "emoji": "⚙️"},
    "escapes": {"s": 'quote " backslash \\ newline \n tab \t nul \x00'},
    "small and large floats": {"x": [1e-07, 1e16, 1.2345678901234568e17, 0.1, -0.0, 5e-324]},
    "integers at 64 bits": {"i": [2**63 - 1, -(2**63), 2**64 - 1]},
    "integer beyond 64 bits": {"big": 2**70, "neg": -(2**70)},
    "keys that are not strings": {7: "seven", 2.5: "x", True: "t", None: "n"},
    "a str enum": {"colour": Colour.RED, Colour.RED: 1},
    "deep": {"a": [[[[{"b": [[["c"]]]}]]]]},
    "empty": {},
}


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_a_reader_gets_what_the_standard_library_would_have_written(name):
    document = DOCUMENTS[name]
    ours = json_codec.dumps_compact(document)
    theirs = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    assert json.loads(ours) == json.loads(theirs)
    assert json_codec.loads(ours) == json.loads(theirs)
    assert b", " not in ours and b": " not in ours  # compact, as the contract's examples


def test_text_leaves_as_utf8_not_escapes():
    assert json_codec.dumps_compact({"t": "92 °C"}) == '{"t":"92 °C"}'.encode()


def test_a_non_finite_float_becomes_null():
    encoded = json_codec.dumps_compact({"nan": math.nan, "inf": [math.inf, -math.inf]})
    assert json.loads(encoded) == {"nan": None, "inf": [None, None]}


def test_a_non_finite_float_beside_what_orjson_refuses_is_refused_as_json_would():
    with pytest.raises(ValueError, match="not JSON compliant"):
        json_codec.dumps_compact({"big": 2**70, "nan": math.nan})


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    "value", [Point(1), datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC), {1, 2}, b"x"]
)
def test_what_json_cannot_carry_raises_type_error_or_goes_to_default(value):
    with pytest.raises(TypeError):
        json_codec.dumps_compact({"v": value})
    # `default=str` as the command replies use it: the standard library's text, not orjson's.
    assert json.loads(json_codec.dumps_compact({"v": value}, default=str)) == {"v": str(value)}


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_sorted_text_reads_as_the_standard_librarys_with_its_keys_in_order(name):
    document = DOCUMENTS[name]
    try:
        theirs = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except TypeError:  # keys of several types cannot be sorted
        with pytest.raises(TypeError):
            json_codec.dumps_sorted(document)
        return
    ours = json_codec.dumps_sorted(document)
    assert isinstance(ours, str)
    assert json.loads(ours) == json.loads(theirs)
    assert ", " not in ours and ": " not in ours


def test_sorted_text_sorts_keys_at_every_level_and_keeps_text_as_itself():
    document = {"b": 1, "a": {"z": [{"y": 2, "x": 3}], "é": "92 °C"}, "A": None}
    assert json_codec.dumps_sorted(document) == (
        '{"A":null,"a":{"z":[{"x":3,"y":2}],"é":"92 °C"},"b":1}'
    )


def test_sorted_text_refuses_what_json_cannot_carry_as_the_standard_library_does():
    assert json_codec.dumps_sorted({"nan": math.nan}) == '{"nan":null}'
    with pytest.raises(ValueError, match="not JSON compliant"):
        json_codec.dumps_sorted({"big": 2**70, "nan": math.nan})
    with pytest.raises(TypeError):
        json_codec.dumps_sorted({"v": {1, 2}})
    with pytest.raises(TypeError):
        json_codec.dumps_sorted({1: "a", "b": 2})  # keys of two types cannot be sorted
    # A lone surrogate cannot be UTF-8: escaped, so that SQLite can store the text.
    assert json_codec.dumps_sorted({"s": "\ud800"}) == '{"s":"\\ud800"}'


class Reading(float):
    """A float of a subclass, as numpy's `float64` is."""


@pytest.mark.parametrize("value", [Reading(4.5), np.float64(4.5), np.float64(-1e-7)])
def test_a_float_of_a_subclass_is_written_as_the_number_it_is(value):
    # orjson hands such floats to `default`; `default=str` must not make them strings.
    expected = json.loads(json.dumps({"v": value}))
    assert json.loads(json_codec.dumps_compact({"v": value}, default=str)) == expected
    assert json.loads(json_codec.dumps_compact({"v": value})) == expected
    assert json.loads(json_codec.dumps_sorted({"v": value})) == expected
    assert json_codec.dumps_compact({"v": Reading(math.nan)}, default=str) == b'{"v":null}'


LOADS_CASES = [
    b'{"a": 1, "a": 2}',  # duplicate keys: the last one, in both
    b'{"big": 123456789012345678901234567890}',  # orjson would make it a float
    b'{"below": -9223372036854775809, "above": 18446744073709551616}',
    b'{"edges": [-9223372036854775808, 18446744073709551615]}',
    b'{"id": "1234567890123456789012345", "n": 12345678901234567890123e-3}',
    b'{"x": NaN, "y": -Infinity}',  # Python's parser takes them; orjson does not
    b'{"s": "\\ud800"}',  # a lone surrogate escape
    '{"t": "92 °C"}'.encode(),
    b"[1e400, -1e400]",
    b"  {}  ",
    # Where a long integer may start: the text's start, after `[`, `,`, `:` or white space.
    b"12345678901234567890",
    b"-12345678901234567890",
    b"[18446744073709551616,1]",
    b"[1,18446744073709551616]",
    b'{"a":\n\t-9223372036854775809}',
    b"[\r99999999999999999999]",
    '{"s": "zahl:12345678901234567890", "n": 12345678901234567890}',
    # Runs that do not count, then one that does: each is judged, none hides the next.
    '{"s": "' + "7" * 45 + '", "t": "x-' + "1" * 20 + '", "n": 12345678901234567890}',
    '{"s": "ü12345678901234567890", "n": [\t-12345678901234567890]}',
    b'{"s": "\\ud800", "n": 12345678901234567890}',
]


@pytest.mark.parametrize("payload", LOADS_CASES)
def test_loads_answers_as_json_loads(payload):
    ours, theirs = json_codec.loads(payload), json.loads(payload)
    assert repr(ours) == repr(theirs)  # repr: NaN != NaN, but both print `nan`


def test_a_long_run_of_digits_inside_a_string_is_parsed_without_the_standard_library(
    monkeypatch,
):
    # Every ticket message carries a zero-padded 20-digit `sequence`; the slow parser for it
    # cost about a twentieth of the event loop's time in a drain.
    document = b'{"sequence":"00000000000000000001","id":"12345678901234567890123"}'
    expected = json.loads(document)

    def refused(*args, **kwargs):
        raise AssertionError("parsed by the standard library")

    monkeypatch.setattr(json_codec.json, "loads", refused)
    assert json_codec.loads(document) == expected
    assert json_codec.loads(document.decode()) == expected


@pytest.mark.parametrize("payload", [b"", b"{", b"[1,]", b"{'a': 1}", b'{"a": 01}'])
def test_loads_refuses_what_json_loads_refuses_with_its_error(payload):
    with pytest.raises(json.JSONDecodeError):
        json.loads(payload)
    with pytest.raises(json_codec.JSONDecodeError):
        json_codec.loads(payload)


@pytest.mark.parametrize("payload", [b'{"a": "\xff\xfe"}', b"\x00\x01 binary"])
def test_loads_of_bytes_that_are_no_utf8_raises_as_json_loads(payload):
    with pytest.raises(UnicodeDecodeError):
        json.loads(payload)
    with pytest.raises(UnicodeDecodeError):
        json_codec.loads(payload)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(document=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=6))
def test_any_json_document_round_trips_as_with_the_standard_library(document):
    encoded = json_codec.dumps_compact(document)
    assert json.loads(encoded) == document
    assert json_codec.loads(encoded) == document
    text = json.dumps(document)
    assert json_codec.loads(text) == json.loads(text)


def test_an_encoded_message_holds_no_more_memory_than_its_bytes():
    """orjson writes into a buffer much larger than the text and keeps it with the bytes; the
    gateway holds pages of messages in flight, so each must cost about its own size."""
    document = {"data": {"message": "x" * 1100, "values": [1.5] * 10}}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [json_codec.dumps_compact(document) for _ in range(200)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    text = sum(len(message) for message in kept)
    assert held < 1.5 * text, f"{held} bytes held for {text} bytes of messages"
