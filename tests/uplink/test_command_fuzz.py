"""Property test of the command envelope (issue 11, item 2): whatever bytes arrive on whatever
topic, `parse_command` returns, never raises, and what it lets through is a JSON object that a
strict consumer can read back (finite numbers, valid Unicode, nesting within the limit).

10 000 examples (about 10 s on a shared CI machine)."""

from __future__ import annotations

import json

from hypothesis import given, settings

from gateway.core.interfaces import Command
from tests.support.command_fuzz import payloads, topic_verbs
from uplink.commands import (
    MAX_COMMAND_BYTES,
    MAX_ID_CHARS,
    MAX_NESTING,
    RejectedCommand,
    nesting_exceeds,
    parse_command,
)

EXAMPLES = 10_000


@settings(max_examples=EXAMPLES)
@given(verb=topic_verbs(), payload=payloads())
def test_the_envelope_parser_never_raises_and_lets_through_only_strict_json(verb, payload):
    parsed = parse_command(verb, payload, "central/replies", b"corr")
    if isinstance(parsed, RejectedCommand):
        assert parsed.reason
        assert parsed.reply().accepted is False
        json.dumps({"reason": parsed.reason}, allow_nan=False)  # a reply can carry it
        return
    assert isinstance(parsed, Command)
    assert len(payload) <= MAX_COMMAND_BYTES
    assert not nesting_exceeds(payload, MAX_NESTING)
    assert isinstance(parsed.body, dict)
    assert isinstance(parsed.command_id, str) and 0 < len(parsed.command_id) <= MAX_ID_CHARS
    assert parsed.command_id == parsed.body["command_id"]
    # What passes is strict JSON: it serialises back without NaN, as valid UTF-8.
    json.dumps(parsed.body, allow_nan=False, ensure_ascii=False).encode("utf-8")
