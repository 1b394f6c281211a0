"""JSON of the messages that leave and of the rows read back for them: orjson, imported here only.

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
- `loads`: `json.loads`. Valid JSON parses alike in both, but for integers beyond 64 bits,
  which orjson reads as floats: text with a run of 19 digits or more (where such an integer
  would be) is parsed by the standard library, and so is what orjson refuses but Python's
  parser accepts (`NaN` literals, lone surrogate escapes), so the answer, and the error for
  text that is no JSON, are its own.
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

# Where an integer outside orjson's 64 bits could be: -2**63 - 1 has 19 digits.
_LONG_DIGITS = re.compile(r"[0-9]{19}")
_LONG_DIGITS_BYTES = re.compile(rb"[0-9]{19}")


def dumps_compact(document: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact UTF-8 JSON of `document`; `default` as in `json.dumps`. Raises `TypeError`
    for what JSON cannot carry, `ValueError` for a non-finite float orjson could not take."""
    try:
        encoded = orjson.dumps(document, default=default, option=_PASSTHROUGH)
    except orjson.JSONEncodeError:
        text = json.dumps(
            document, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=default
        )
        return text.encode()
    # orjson's bytes keep the buffer they were written into (about 8 kB for a 1 kB message,
    # ten times the text for large ones); outbox pages and messages in flight are held a while,
    # so each is copied to its own size (a fraction of a microsecond).
    return memoryview(encoded).tobytes()


def loads(data: bytes | str) -> Any:
    """`json.loads(data)`; raises `json.JSONDecodeError` or `UnicodeDecodeError` as it does."""
    if isinstance(data, bytes):
        long_digits = _LONG_DIGITS_BYTES.search(data) is not None
    else:
        long_digits = _LONG_DIGITS.search(data) is not None
    if long_digits:
        return json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
