import json

import pytest

from gateway.core.clock import ManualClock
from gateway.core.interfaces import Command, CommandReply, NewMessage
from gateway.core.records import OutboxKind
from tests.support.memory_outbox import MemoryOutbox
from uplink.commands import (
    RejectedCommand,
    decode_reply,
    encode_reply,
    make_ack_handler,
    parse_command,
)


def body(**fields) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("verb", "payload", "reason"),
    [
        ("ack", b"{not json", "payload is not JSON"),
        ("ack", b"\xff\xfe", "payload is not JSON"),
        ("ack", b"[1, 2]", "must be a JSON object, not list"),
        ("ack", body(event_id="e1"), "`command_id` must be a non-empty string"),
        ("ack", body(command_id=17, event_id="e1"), "`command_id` must be a non-empty string"),
        ("ack", body(command_id="  ", event_id="e1"), "`command_id` must be a non-empty string"),
        ("ack", body(command_id="c1"), "`ack` needs `event_id` and/or `ticket_id`"),
        ("ack", body(command_id="c1", event_id=5), "`event_id` must be a non-empty string"),
        ("ack", body(command_id="c1", ticket_id=None), "`ticket_id` must be a non-empty string"),
        ("ack", body(command_id="c1", event_id="e", central_id=[1]), "`central_id` must be"),
        ("ack", body(command_id="c1", event_id="e" * 201), "longer than 200"),
        ("reboot", body(command_id="c1"), "unknown command verb `reboot`"),
        (None, body(command_id="c1"), "unknown command verb `None`"),
        ("ack", b"{" + b" " * 70_000 + b"}", "exceeds 65536"),
        ("assign", body(command_id="c1", ticket_id="T", if_revision="3"), "`if_revision` must"),
        ("assign", body(command_id="c1", ticket_id="T", if_revision=0), "`if_revision` must"),
        ("assign", body(command_id="c1", ticket_id="T", if_revision=True), "`if_revision` must"),
        ("close", body(command_id="c1", ticket_id="T", actor=7), "`actor` must be"),
    ],
)
def test_malformed_commands_are_rejected_with_a_reason(verb, payload, reason):
    parsed = parse_command(verb, payload, "reply/here", b"corr")
    assert isinstance(parsed, RejectedCommand)
    assert reason in parsed.reason
    assert parsed.response_topic == "reply/here" and parsed.correlation_data == b"corr"
    assert parsed.reply().accepted is False


def test_a_rejection_still_names_the_command_when_it_could_be_read():
    parsed = parse_command("ack", body(command_id="c-9"), None, None)
    assert isinstance(parsed, RejectedCommand) and parsed.command_id == "c-9"
    assert parsed.reply().command_id == "c-9"


def test_well_formed_ack_becomes_a_command():
    parsed = parse_command(
        "ack", body(command_id="c1", event_id="e1", central_id="WO-1001"), "r", b"x"
    )
    assert parsed == Command(
        verb="ack",
        command_id="c1",
        body={"command_id": "c1", "event_id": "e1", "central_id": "WO-1001"},
        response_topic="r",
        correlation_data=b"x",
    )


def test_reply_round_trips():
    reply = CommandReply("c1", False, "nope", {"settled": ["e1"]})
    assert decode_reply(encode_reply(reply, "ack")) == reply
    assert json.loads(encode_reply(reply, "ack"))["verb"] == "ack"
    assert decode_reply(b"garbage") is None


async def outbox_with_three_ticket_messages() -> MemoryOutbox:
    outbox = MemoryOutbox()
    await outbox.enqueue(NewMessage("e1", "t/opened", b"{}", OutboxKind.TICKET, "T-1"))
    await outbox.enqueue(NewMessage("e2", "t/updated", b"{}", OutboxKind.TICKET, "T-1"))
    await outbox.enqueue(NewMessage("e3", "t/opened", b"{}", OutboxKind.TICKET, "T-2"))
    return outbox


def ack(**fields) -> Command:
    return Command("ack", fields.pop("command_id", "c1"), fields)


async def test_ack_by_event_id_settles_that_message_only():
    outbox = await outbox_with_three_ticket_messages()
    seen = []

    async def on_acknowledged(command, items):
        seen.append((command.command_id, [i.event_id for i in items]))

    handler = make_ack_handler(outbox, ManualClock(), on_acknowledged=on_acknowledged)
    reply = await handler(ack(event_id="e2", ticket_id="T-1", central_id="WO-1001"))

    assert reply.accepted and reply.detail["settled"] == ["e2"]
    assert reply.detail["central_id"] == "WO-1001"
    assert [i.event_id for i in await outbox.unsettled(10)] == ["e1", "e3"]
    assert seen == [("c1", ["e2"])]


async def test_ack_by_ticket_id_settles_every_message_of_that_ticket():
    outbox = await outbox_with_three_ticket_messages()
    reply = await make_ack_handler(outbox, ManualClock())(ack(ticket_id="T-1"))
    assert reply.accepted and reply.detail["settled"] == ["e1", "e2"]
    assert [i.event_id for i in await outbox.unsettled(10)] == ["e3"]


async def test_a_repeated_ack_is_accepted_and_changes_nothing():
    outbox = await outbox_with_three_ticket_messages()
    calls = []

    async def on_acknowledged(command, items):
        calls.append(command)

    handler = make_ack_handler(outbox, ManualClock(), on_acknowledged=on_acknowledged)
    await handler(ack(event_id="e1"))
    again = await handler(ack(command_id="c2", event_id="e1"))
    unknown = await handler(ack(command_id="c3", event_id="nope"))

    assert again.accepted and again.detail["settled"] == []
    assert unknown.accepted and "already acknowledged or unknown" in unknown.reason
    assert len(calls) == 1 and outbox.settle_calls == 1


async def test_other_verbs_go_to_the_fallback_or_are_refused():
    outbox = await outbox_with_three_ticket_messages()
    refused = await make_ack_handler(outbox, ManualClock())(Command("close", "c1", {}))
    assert not refused.accepted and "not supported" in refused.reason

    async def fallback(command):
        return CommandReply(command.command_id, True, "handled elsewhere")

    handled = await make_ack_handler(outbox, ManualClock(), fallback=fallback)(
        Command("close", "c2", {})
    )
    assert handled == CommandReply("c2", True, "handled elsewhere")
    assert await outbox.depth() == 3


def test_every_issue_5_verb_is_known():
    for verb in ("ack", "assign", "close", "shelve", "unshelve", "maintenance", "snapshot",
                 "resync"):
        parsed = parse_command(verb, body(command_id="c1", ticket_id="T", if_revision=2))
        assert isinstance(parsed, Command) and parsed.body["if_revision"] == 2
