"""The egress guard as tables: what may leave and what is refused (issue 6, DESIGN.md 8)."""

import json
import re

import pytest

from gateway.core.errors import PolicyViolation
from gateway.core.interfaces import CommandReply
from gateway.core.records import OutboxKind
from tests.uplink.helpers import SITE, TOPICS, make_event, make_ticket
from uplink import guard as guard_module
from uplink.commands import encode_reply
from uplink.events import make_ticket_encoder, source_urn
from uplink.guard import MAX_NUMERIC_ARRAY, EgressGuard
from uplink.messages import MESSAGE_TYPES

ENCODE = make_ticket_encoder(TOPICS, source_urn(SITE, "gw-1"), lambda: 1)
HEALTH = {"site": SITE, "gateway": "gw-1", "time": "2023-11-14T22:13:20.000Z", "devices": []}
SUMMARY = {
    "site": SITE, "gateway": "gw-1", "asset": "pump-1", "time": "2023-11-14T22:13:20.000Z",
    "period_s": 60.0, "tags": {"pump-1.temp": {"n": 10, "min": 50.0, "max": 52.0}},
}  # fmt: skip


def ticket_payload(**evidence: object) -> bytes:
    ticket = make_ticket(evidence={"limit": 85.0, **evidence})
    return ENCODE(ticket, make_event("opened")).payload


def dumps(document: object) -> bytes:
    return json.dumps(document).encode()


@pytest.fixture
def guard() -> EgressGuard:
    return EgressGuard(TOPICS)


@pytest.mark.parametrize(
    ("kind", "topic", "payload"),
    [
        (OutboxKind.TICKET, TOPICS.tickets_opened, ticket_payload()),
        (OutboxKind.TICKET, TOPICS.tickets_updated, ticket_payload(top_peaks=[1.0, 2.0, 3.0])),
        (OutboxKind.HEALTH, TOPICS.health, dumps(HEALTH)),
        (OutboxKind.SUMMARY, TOPICS.summary("pump-1"), dumps(SUMMARY)),
        (OutboxKind.STATUS, TOPICS.status, dumps({"state": "online", "site": SITE, "gateway": "g"})),  # noqa: E501
        (OutboxKind.REPLY, "central/replies", encode_reply(CommandReply("c1", True), "ack")),
    ],
)
def test_every_message_type_the_gateway_sends_passes(guard, kind, topic, payload):
    guard.check(kind, topic, payload)
    assert guard.admit(kind, topic, payload)
    assert guard.statistics().allowed == {kind.value: 1}


@pytest.mark.parametrize(
    ("kind", "topic", "payload", "reason"),
    [
        (OutboxKind.TICKET, TOPICS.tickets_opened,
         ticket_payload(samples=[float(i) for i in range(MAX_NUMERIC_ARRAY + 1)]),
         "looks like raw samples"),
        (OutboxKind.TICKET, TOPICS.tickets_opened,
         ticket_payload(blocks=[{"v": i} for i in range(33)]), "array of 33 items"),
        (OutboxKind.TICKET, TOPICS.tickets_opened, ticket_payload(note="x" * 5000),
         "string of 5000 characters"),
        (OutboxKind.TICKET, TOPICS.tickets_opened, ticket_payload(blob="x" * 70_000),
         "exceed the `ticket` budget"),
        (OutboxKind.TICKET, TOPICS.health, ticket_payload(), "may not be published"),
        (OutboxKind.TICKET, f"{TOPICS.base}/raw/pump-1", ticket_payload(), "may not be published"),
        (OutboxKind.TICKET, TOPICS.tickets_opened, b"\x00\x01 binary", "not JSON"),
        (OutboxKind.TICKET, TOPICS.tickets_opened, b"[1, 2]", "not an object"),
        (OutboxKind.SUMMARY, TOPICS.summary("pump-1"),
         dumps({**SUMMARY, "waveform": [0.1, 0.2]}), "not part of the `summary` schema"),
        (OutboxKind.SUMMARY, TOPICS.summary("pump-1"),
         dumps({**SUMMARY, "tags": {"t": {"data": list(range(17))}}}), "array of 17 items"),
        (OutboxKind.HEALTH, TOPICS.health, dumps({"site": SITE}), "lacks gateway, time"),
        (OutboxKind.HEALTH, TOPICS.health, dumps({**HEALTH, "ready": "yes"}),
         "field `ready` is a str, expected bool"),
        (OutboxKind.STATUS, TOPICS.status,
         dumps({"state": "online", "site": SITE, "gateway": "g", "extra": {"a": 1}}),
         "not part of the `status` schema"),
        (OutboxKind.REPLY, TOPICS.tickets_opened,
         encode_reply(CommandReply("c1", True), "ack"), "may not be published"),
        (OutboxKind.REPLY, "central/#", encode_reply(CommandReply("c1", True), "ack"),
         "may not be published"),
    ],
)  # fmt: skip
def test_anything_outside_the_policy_is_refused_and_counted(guard, kind, topic, payload, reason):
    with pytest.raises(PolicyViolation, match=re.escape(reason)):
        guard.check(kind, topic, payload)
    assert not guard.admit(kind, topic, payload)
    stats = guard.statistics()
    assert stats.refused == {kind.value: 1} and stats.allowed == {}
    assert stats.refused_bytes == len(payload)


def test_a_ticket_without_its_identity_fields_is_refused(guard):
    document = json.loads(ticket_payload())
    del document["data"]["asset"]
    with pytest.raises(PolicyViolation, match=r"`data\.asset` is missing"):
        guard.check(OutboxKind.TICKET, TOPICS.tickets_opened, dumps(document))


def test_deep_nesting_is_refused(guard):
    nested: dict = {"v": 1}
    for _ in range(10):
        nested = {"n": nested}
    with pytest.raises(PolicyViolation, match="nests deeper"):
        guard.check(OutboxKind.TICKET, TOPICS.tickets_opened, ticket_payload(deep=nested))


def test_a_refusal_is_logged_without_the_payload(guard, caplog):
    secret = "raw-sample-stream-marker"
    payload = ticket_payload(samples=[1.0] * 40, marker=secret)
    assert not guard.admit(OutboxKind.TICKET, TOPICS.tickets_opened, payload)
    assert "Egress guard refused a `ticket` message" in caplog.text
    assert secret not in caplog.text


def test_the_early_check_counts_refusals_but_not_passes(guard):
    assert guard.admit(OutboxKind.HEALTH, TOPICS.health, dumps(HEALTH), publishing=False)
    assert not guard.admit(OutboxKind.HEALTH, TOPICS.health, b"{}", publishing=False)
    assert guard.statistics().allowed == {}
    assert guard.statistics().refused == {"health": 1}


def _nested_lists(levels: int) -> object:
    value: object = [1]
    for _ in range(levels):
        value = [value]
    return value


BOUND_CASES = {
    "within": {"a": "x" * 10, "b": [1, 2, {"c": "y" * 10}], "d": {"e": [[1, 2], ["s"]]}},
    "long string at the top": {"a": "x" * 5000},
    "long string in a list": {"a": [1, "x" * 5000]},
    "long string in a list in a dict in a list": {"a": [{"b": ["ok", "x" * 5000]}]},
    "long key": {"k" * 201: 1},
    "long key deep down": {"a": [{"b": {"k" * 201: None}}]},
    "long array": {"a": ["s"] * 40},
    "long array in a list": {"a": [[True] * 40]},
    "numbers in an array": {"a": [{"b": [0.5] * (MAX_NUMERIC_ARRAY + 1)}]},
    "within, booleans being no numbers": {"a": [True] * (MAX_NUMERIC_ARRAY + 1)},
    "deep lists": {"a": _nested_lists(10)},
    "deep lists, just within": {"a": _nested_lists(5)},
    "deep dicts in lists": {"a": [{"b": [{"c": [{"d": [{"e": {}}]}]}]}]},
}


@pytest.mark.parametrize("name", sorted(BOUND_CASES))
def test_the_fast_bounds_walk_agrees_with_the_walk_that_names_the_fault(name):
    """Every message leaving is walked by `_within_bounds`; a refusal is walked again by
    `_check_bounds`, which says what breaks a bound. The two must judge alike."""
    policy = MESSAGE_TYPES[OutboxKind.TICKET]
    document = BOUND_CASES[name]
    try:
        guard_module._check_bounds(policy, document, "$", 1)
        named = True
    except PolicyViolation:
        named = False
    assert guard_module._within_bounds(policy, document, 1) is named
    assert named is (name.startswith("within") or name.endswith("within"))


JSON_VALUES = {"text": "x", "integer": 3, "real": 2.5, "true": True, "null": None,
               "object": {"a": 1}, "array": [1]}  # fmt: skip


def _json_type_allowed(value: object, types: object) -> bool:
    """JSON Schema's reading of a field's types: a boolean is not a number, an integer is."""
    allowed = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in allowed
    return isinstance(value, allowed)


@pytest.mark.parametrize("kind", sorted(MESSAGE_TYPES, key=lambda k: k.value))
def test_each_field_takes_exactly_the_json_types_of_the_contract(guard, kind):
    """Every field of every message type, given a value of each JSON type inside an otherwise
    valid message: passes exactly when the contract's types allow it."""
    policy = MESSAGE_TYPES[kind]
    base = {name: _valid_value(spec.types) for name, spec in policy.fields.items()}
    for name, nested in policy.nested.items():
        base[name] = {inner: _valid_value(spec.types) for inner, spec in nested.items()}
    for name, spec in policy.fields.items():
        for label, value in JSON_VALUES.items():
            if name in policy.nested and isinstance(value, dict):
                continue  # a nested object is checked for its own required keys
            document = {**base, name: value}
            expected = _json_type_allowed(value, spec.types)
            try:
                guard_module._check_fields(guard._policies[kind], document)
                passed = True
            except PolicyViolation as exc:
                passed = False
                assert f"field `{name}`" in str(exc)
            assert passed is expected, (kind, name, label)


def _valid_value(types: object) -> object:
    first = types[0] if isinstance(types, tuple) else types
    return {str: "x", int: 1, float: 1.5, bool: True, dict: {}, list: [], type(None): None}[first]


def test_a_topic_verdict_is_kept_per_message_type(guard):
    """The same topic judged for two types: a reply may go to a central topic, a ticket not;
    asked again in either order, each keeps its own answer."""
    reply = encode_reply(CommandReply("c1", True), "ack")
    for _ in range(2):
        assert guard.admit(OutboxKind.REPLY, "central/replies", reply)
        assert not guard.admit(OutboxKind.TICKET, "central/replies", ticket_payload())
        assert guard.admit(OutboxKind.TICKET, TOPICS.tickets_opened, ticket_payload())
        assert not guard.admit(OutboxKind.REPLY, TOPICS.tickets_opened, reply)
    assert guard.statistics().refused == {"ticket": 2, "reply": 2}
