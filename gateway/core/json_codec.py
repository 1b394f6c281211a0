"""JSON of the messages that leave, of the rows read back for them and of state.db's JSON columns:
orjson, imported here only.

Every drained ticket message is encoded once, parsed back by the egress guard and its outbox
row's properties parsed again; with the standard library, JSON was about a sixth of the event
loop's busy time in a drain (sampled). orjson does the same work several times faster.
Where it would judge differently from the standard library the standard library answers
instead, so callers see its behaviour:

- `dumps_compact`: what `json.dumps(document, separators=(",", ":"), ensure_ascii=False)`
  gives, as UTF-8 bytes, with two differences a JSON reader does not see: a float may be
  written in another exponent form (`1e-7` for `1e-07`), and a non-finite float becomes
  `null` (the standard library would raise; message builders map those to null anyway).
  What orjson refuses (integers beyond 64 bits, keys that are not strings) is encoded by the
  standard library, with `allow_nan=False`.
- `dumps_sorted`: the same for state.db's JSON columns, keys sorted, as text.
- `loads`: `json.loads`. Valid JSON parses alike in both, but for integers beyond 64 bits,
  which orjson reads as floats: text where a number of 19 digits or more may start (a run of
  them at the start or after `[`, `:`, `,` or white space, where JSON puts a value) is parsed
  by the standard library, and so is what orjson refuses but Python's parser accepts (`NaN`
  literals, lone surrogate escapes), so the answer, and the error for text that is no JSON,
  are its own. A long run of digits inside a string (the zero-padded CloudEvents `sequence`
  of every ticket message) does not count; one after a colon inside a string does, which
  only costs the slower parse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

# Dataclasses and datetimes go to `default` as they would with `json.dumps`, instead of
# orjson's own forms for them.
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME

JSONDecodeError = json.JSONDecodeError  # orjson's own error is a subclass of it

# Where an integer outside orjson's 64 bits could be: -2**63 - 1 has 19 digits, and a JSON
# number starts the text or follows `[`, `:`, `,` or JSON's white space. A regular expression
# looking for either costs 20-40 ns a byte (40 us on a 2 kB ticket message, twice the standard
# library's whole parse); with every digit turned into `0`, `bytes.find` looks for a run in
# about a microsecond, and only the runs found are judged one by one.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_RUN = b"0" * 19
_END_OF_RUN = re.compile(rb"[^0]")
_BEFORE_VALUE = frozenset(b"[:, \t\n\r")
_MINUS = ord("-")


def dumps_compact(document: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact UTF-8 JSON of `document`; `default` as in `json.dumps`. Raises `TypeError`
    for what JSON cannot carry, `ValueError` for a non-finite float orjson could not take."""
    try:
        encoded = orjson.dumps(document, default=_numbers_then(default), option=_PASSTHROUGH)
    except orjson.JSONEncodeError:
        text = json.dumps(
            document, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=default
        )
        return text.encode()
    # orjson's bytes keep the buffer they were written into (about 8 kB for a 1 kB message,
    # ten times the text for large ones); outbox pages and messages in flight are held a while,
    # so each is copied to its own size (a fraction of a microsecond).
    return memoryview(encoded).tobytes()


def dumps_sorted(document: Any) -> str:
    """JSON text with sorted keys and no spaces, for state.db's JSON columns: what
    `json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)` gives,
    but for text outside ASCII written as itself instead of `\\u` escapes, floats in another
    exponent form, and a non-finite float as `null`. What orjson refuses (integers beyond 64
    bits, keys that are not strings, lone surrogates) is that call's own text, or its
    `TypeError` / `ValueError`."""
    try:
        encoded = orjson.dumps(
            document, default=_numbers_then(None), option=_PASSTHROUGH | orjson.OPT_SORT_KEYS
        )
    except orjson.JSONEncodeError:
        return json.dumps(document, sort_keys=True, allow_nan=False, separators=(",", ":"))
    return encoded.decode()


def _numbers_then(default: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """orjson's `default`: a float of a subclass (numpy's `float64`) written as the number it
    is, as the standard library writes it (orjson hands it to `default`, and `default=str`
    would make it a string), then the caller's `default`; without one, `TypeError`."""
    if default is None:
        return _float_or_refuse
    caller = default

    def numbers_then_caller(value: Any) -> Any:
        return float(value) if isinstance(value, float) else caller(value)

    return numbers_then_caller


def _float_or_refuse(value: Any) -> float:
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def loads(data: bytes | str) -> Any:
    """`json.loads(data)`; raises `json.JSONDecodeError` or `UnicodeDecodeError` as it does."""
    if _may_hold_a_long_integer(data):
        return json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _may_hold_a_long_integer(data: bytes | str) -> bool:
    """A run of 19 digits or more where a JSON number may start. Text is judged as its UTF-8
    bytes: the byte before a run is the character before it whenever that is one of JSON's
    (ASCII), and something else is not a place where a number starts either way."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    zeros = raw.translate(_DIGITS_AS_ZERO)
    start = zeros.find(_RUN)
    while start != -1:
        begin = start - 1 if start and raw[start - 1] == _MINUS else start
        if begin == 0 or raw[begin - 1] in _BEFORE_VALUE:
            return True
        end = _END_OF_RUN.search(zeros, start + len(_RUN))  # the rest of a long run is skipped
        if end is None:
            return False
        start = zeros.find(_RUN, end.start())
    return False
