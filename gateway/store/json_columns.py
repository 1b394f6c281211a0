"""JSON in TEXT columns of state.db: one way in, so every role stores the same kind of text
(keys sorted, no spaces; `json_codec.dumps_sorted`).

NaN is not JSON, and a central system would choke on it later: a non-finite float is stored
as null (the ticket's own fields are made JSON-safe before they get here). Anything else JSON
cannot carry is our bug, reported as `StoreError` naming what was being stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.core import json_codec
from gateway.core.errors import StoreError


def to_json(value: Mapping[str, Any], what: str) -> str:
    return _dumps(dict(value), what)


def to_json_array(value: Sequence[Any], what: str) -> str:
    return _dumps(list(value), what)


def _dumps(value: Any, what: str) -> str:
    try:
        return json_codec.dumps_sorted(value)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} cannot be stored as JSON: {exc}") from exc
