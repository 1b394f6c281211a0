"""The command envelope (uplink/commands.py): what every command must be before a handler sees
it. The verbs and their bodies are the ticketing command table's (tests/ticketing)."""

import json

import pytest

from gateway.core.interfaces import Command, CommandReply
from uplink.commands import (
    MAX_COMMAND_BYTES,
    RejectedCommand,
    decode_reply,
    encode_reply,
    nesting_exceeds,
    parse_command,
)


def body(**fields) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("verb", "payload", "reason"),
    [
        ("ack", b"{not json", "payload is not JSON"),
        ("ack", b"\xff\xfe", "not JSON in UTF-8"),
        ("ack", '{"command_id":"c"}'.encode("utf-16"), "not JSON in UTF-8"),
        ("ack", b"[1, 2]", "must be a JSON object, not an array"),
        ("ack", b"null", "must be a JSON object, not null"),
        ("ack", body(event_id="e1"), "`command_id` must be a non-empty printable string"),
        ("ack", body(command_id=17), "`command_id` must be a non-empty printable string"),
        ("ack", body(command_id="  "), "`command_id` must be a non-empty printable string"),
        ("ack", body(command_id="c\n1"), "`command_id` must be a non-empty printable string"),
        ("ack", body(command_id="c" * 201), "longer than 200"),
        ("ack", b'{"command_id":"c","command_id":"d"}', "duplicate key 'command_id'"),
        ("ack", b'{"command_id":"c","until":NaN}', "NaN is not a JSON number"),
        ("ack", b'{"command_id":"c","until":Infinity}', "Infinity is not a JSON number"),
        ("ack", b'{"command_id":"c","until":-Infinity}', "-Infinity is not a JSON number"),
        ("ack", b'{"command_id":"c","until":1e309}', "number 1e309 is out of range"),
        ("ack", b'{"command_id":"c","n":' + b"9" * 20 + b"}", "integer of 20 digits"),
        ("ack", b'{"command_id":"c","n":' + b"9" * 5000 + b"}", "integer of 5000 digits"),
        ("ack", b'{"command_id":"\\ud800"}', "lone surrogate"),
        ("ack", b'{"command_id":"c","\\udfff":1}', "lone surrogate"),
        ("ack", b"[" * 10_000 + b"]" * 10_000, "nests deeper than 8 levels"),
        ("ack", b'{"command_id":"c","x":' + b"{" * 9_000 + b"}", "nests deeper than 8 levels"),
        ("ack", b"{" + b" " * (MAX_COMMAND_BYTES + 1) + b"}", "exceeds 65536"),
        ("Ack", body(command_id="c1"), "names no command verb"),
        ("ack!", body(command_id="c1"), "names no command verb"),
        (None, body(command_id="c1"), "names no command verb"),
    ],
)
def test_a_bad_envelope_is_rejected_with_a_reason(verb, payload, reason):
    parsed = parse_command(verb, payload, "reply/here", b"corr")
    assert isinstance(parsed, RejectedCommand), parsed
    assert reason in parsed.reason
    assert parsed.response_topic == "reply/here" and parsed.correlation_data == b"corr"
    assert parsed.reply().accepted is False


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = b'{"command_id":"c","note":"[[[[[[[[[[ \\" {{{{{{{{{{ \\\\","x":[[[[[[[1]]]]]]]}'
    parsed = parse_command("close", text)
    assert isinstance(parsed, Command)
    assert parsed.body["note"] == '[[[[[[[[[[ " {{{{{{{{{{ \\'
    assert nesting_exceeds(b"[" * 8 + b"]" * 8, 8) is False
    assert nesting_exceeds(b"[" * 9 + b"]" * 9, 8) is True
    assert nesting_exceeds(b'{"a":"\\\\","b":' + b"[" * 8 + b"]" * 8 + b"}", 8) is True


def test_a_response_topic_we_cannot_publish_to_is_a_rejection_without_reply():
    for topic in ("", "replies/#", "replies/+/x", "r" * 1025):
        parsed = parse_command("ack", body(command_id="c1"), topic, b"corr")
        assert isinstance(parsed, RejectedCommand)
        assert parsed.response_topic is None and "response topic" in parsed.reason
    huge = parse_command("ack", body(command_id="c1"), "ok/topic", b"x" * 1025)
    assert isinstance(huge, RejectedCommand) and huge.correlation_data is None
    assert "correlation data" in huge.reason and huge.response_topic == "ok/topic"


def test_a_rejection_still_names_the_command_when_it_could_be_read():
    parsed = parse_command("ack", b'{"command_id":"c-9","until":NaN}', None, None)
    assert isinstance(parsed, RejectedCommand)
    # NaN stops the parser before the id is known: the reply then has no command id.
    assert parsed.reply().command_id == ""
    parsed = parse_command("Ack", body(command_id="c-9"), None, None)
    assert isinstance(parsed, RejectedCommand)


def test_a_well_formed_command_carries_its_body_unjudged():
    parsed = parse_command(
        "reboot", body(command_id="c1", anything=[1, "two", {"three": 3.5}]), "r", b"x"
    )
    assert parsed == Command(
        verb="reboot",
        command_id="c1",
        body={"command_id": "c1", "anything": [1, "two", {"three": 3.5}]},
        response_topic="r",
        correlation_data=b"x",
    )


def test_reply_round_trips():
    reply = CommandReply("c1", False, "nope", {"settled": ["e1"]})
    assert decode_reply(encode_reply(reply, "ack")) == reply
    assert json.loads(encode_reply(reply, "ack"))["verb"] == "ack"
    assert decode_reply(b"garbage") is None


def test_a_reply_is_strict_json_even_when_a_figure_is_not_a_number():
    reply = CommandReply("c1", True, "", {"telemetry": {"t": {"mean": float("nan")}},
                                          "peaks": [1.0, float("inf")]})  # fmt: skip

    def refuse(name):
        raise AssertionError(f"{name} in a reply")

    document = json.loads(encode_reply(reply, "snapshot"), parse_constant=refuse)
    assert document["detail"] == {"telemetry": {"t": {"mean": None}}, "peaks": [1.0, None]}
    # Beside an integer only the standard library encodes, the NaN still becomes null.
    reply = CommandReply("c2", True, "", {"count": 2**70, "peaks": (1.0, float("nan"))})
    document = json.loads(encode_reply(reply, "snapshot"), parse_constant=refuse)
    assert document["detail"] == {"count": 2**70, "peaks": [1.0, None]}
