"""The contract as data (issue 14, item 2): the AsyncAPI document shipped in the package is
what the code's tables say, names every verb, every event kind the ticketing code emits and
every message type the egress guard allows, and the validator the end-to-end tests use on the
wire (tests/support/contract.py) catches what breaks it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from gateway.cli import contract as generator
from gateway.core.records import OutboxKind
from gateway.ticketing.commands import VERBS
from gateway.ticketing.contract import event_kinds
from tests.support.contract import Contract
from tests.support.site import REPO
from tests.uplink.helpers import GATEWAY, SITE, TOPICS, make_event, make_ticket
from uplink.asyncapi import REGENERATE, shipped_document
from uplink.events import make_ticket_encoder, source_urn
from uplink.guard import EgressGuard
from uplink.messages import MESSAGE_TYPES
from uplink.mqtt import InboundMessage, MessageProperties


@pytest.mark.parametrize("path", sorted(generator.generated_files(), key=str), ids=str)
def test_every_generated_contract_file_is_up_to_date(path: Path):
    assert (
        path.exists() and path.read_text(encoding="utf-8") == generator.generated_files()[path]
    ), (
        f"{path.relative_to(REPO)} is stale: the code's message, verb or event tables changed."
        f" Regenerate with `{REGENERATE}` and commit the result."
    )


def test_the_document_is_asyncapi_3_with_a_channel_for_every_verb_and_message_type():
    document = shipped_document()
    assert document["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in document["channels"].values()}
    for verb in VERBS:
        assert f"{{prefix}}/{{site}}/{{gateway}}/cmd/{verb}" in addresses
        assert document["operations"][f"receive_cmd_{verb}"]["reply"]["channel"] == {
            "$ref": "#/channels/commandReply"
        }
    for message in MESSAGE_TYPES.values():
        for channel in message.channels:
            assert f"{{prefix}}/{{site}}/{{gateway}}/{channel}" in addresses
    schemas = document["components"]["schemas"]
    assert "CommandReply" in schemas
    # Every payload schema is self-contained: a validator needs nothing else.
    assert "$ref" not in json.dumps(schemas)


def _emitted_kinds() -> set[str]:
    """Every literal event kind the ticketing code passes to `annotate` or `TicketEvent`."""
    kinds: set[str] = set()
    for path in (REPO / "gateway" / "ticketing").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "annotate" and len(node.args) >= 2:
                candidates = [node.args[1]]
            elif name == "TicketEvent":
                candidates = [k.value for k in node.keywords if k.arg == "kind"] + node.args[2:3]
            else:
                continue
            kinds |= {c.value for c in candidates if isinstance(c, ast.Constant)}
    return kinds


def test_every_event_kind_the_ticketing_code_emits_is_in_the_contract():
    emitted = _emitted_kinds()
    assert {"opened", "acknowledged", "condition_cleared", "resync"} <= emitted  # the scan works
    missing = emitted - set(event_kinds())
    assert not missing, (
        f"event kinds {sorted(missing)} are emitted but not in "
        "gateway/ticketing/contract.py `ANNOTATIONS`; add them there and regenerate with "
        f"`{REGENERATE}`"
    )
    types = set()
    for schema in shipped_document()["components"]["schemas"].values():
        types |= set(schema.get("properties", {}).get("type", {}).get("enum", []))
    assert {f"com.edge-gateway.ticket.{kind}" for kind in event_kinds()} <= types


def _wire(topic: str, payload: bytes, properties: MessageProperties) -> InboundMessage:
    return InboundMessage(topic, payload, 1, False, properties)


def _ticket_message() -> InboundMessage:
    encode = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), lambda: 1)
    built = encode(make_ticket(), make_event("opened"))
    return _wire(
        built.topic,
        built.payload,
        MessageProperties(
            built.content_type, user_properties=built.user_properties, utf8_payload=True
        ),
    )


def test_a_ticket_event_as_the_gateway_builds_it_fits_the_contract_and_the_guard():
    message = _ticket_message()
    assert Contract().violations([message]) == []
    assert EgressGuard(TOPICS).admit(OutboxKind.TICKET, message.topic, message.payload)


def test_the_wire_validator_catches_what_breaks_the_contract():
    good = _ticket_message()
    document = json.loads(good.payload)
    del document["id"]
    document["data"]["priority"] = "urgent"
    broken = _wire(good.topic, json.dumps(document).encode(), good.properties)
    no_format = _wire(good.topic, good.payload, MessageProperties(good.properties.content_type))
    health = json.dumps({"site": SITE, "gateway": GATEWAY, "time": "2024-01-01T00:00:00Z"})
    never_expires = _wire(
        TOPICS.health, health.encode(), MessageProperties("application/json", utf8_payload=True)
    )
    stray = _wire("factory/elsewhere", b"{}", MessageProperties())
    found = Contract().violations([broken, no_format, never_expires, stray])
    assert any("'id' is a required property" in f for f in found), found
    assert any("'urgent' is not one of" in f for f in found), found
    assert any("Payload Format Indicator" in f for f in found), found
    assert any("health" in f and "expiry None" in f for f in found), found
    assert any("not a channel of the contract" in f for f in found), found


def test_the_guard_refuses_a_field_the_contract_does_not_name():
    """One table: a top-level field outside it is refused by the guard and by the schema."""
    health = {"site": SITE, "gateway": GATEWAY, "time": "2024-01-01T00:00:00Z", "samples": 1}
    payload = json.dumps(health).encode()
    assert not EgressGuard(TOPICS).admit(OutboxKind.HEALTH, TOPICS.health, payload)
    message = _wire(
        TOPICS.health,
        payload,
        MessageProperties("application/json", message_expiry_s=60, utf8_payload=True),
    )
    assert any("'samples' was unexpected" in f for f in Contract().violations([message]))


def test_every_field_of_a_ticket_s_data_is_described_in_the_table():
    """A field added to the ticket summary (uplink/events.py) must be described in
    `uplink.messages.TICKET_DATA`, or the contract would not name it."""
    from uplink.events import _ATTRIBUTE_FIELDS, ticket_summary
    from uplink.messages import TICKET_DATA

    named = set(ticket_summary(make_ticket(), GATEWAY)) | set(_ATTRIBUTE_FIELDS) | {"change"}
    missing = named - set(TICKET_DATA)
    assert not missing, (
        f"ticket fields {sorted(missing)} are not in uplink/messages.py TICKET_DATA; describe "
        f"them there and regenerate with `{REGENERATE}`"
    )
