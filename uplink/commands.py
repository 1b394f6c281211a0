"""Inbound commands from the central system, `cmd/<verb>` (DESIGN.md section 7).

Parsing never raises: a malformed or unknown command becomes a `RejectedCommand` with a reason a
central-system integrator can act on; the uplink logs it at WARNING, replies `rejected` when
the sender gave a response topic, and changes nothing (issue 2, "Bad input").

The ack handler here settles ticket messages in the outbox; the ticketing side effects (state
ACKNOWLEDGED, central id) are for the composition root to add through `on_acknowledged`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.core.clock import Clock
from gateway.core.interfaces import Command, CommandHandler, CommandReply, Outbox
from gateway.core.records import OutboxItem, OutboxKind

log = logging.getLogger(__name__)

KNOWN_VERBS = frozenset(
    {"ack", "assign", "close", "snapshot", "shelve", "unshelve", "maintenance", "resync"}
)
MAX_COMMAND_BYTES = 64 * 1024
MAX_ID_CHARS = 200
# Fields that, when present in any command, must be non-empty strings.
_ID_FIELDS = ("command_id", "event_id", "ticket_id", "central_id", "actor")
_ACK_SCAN_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class RejectedCommand:
    """A command that could not be parsed; `command_id` and `verb` when they could be read."""

    reason: str
    verb: str | None = None
    command_id: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None

    def reply(self) -> CommandReply:
        return CommandReply(command_id=self.command_id or "", accepted=False, reason=self.reason)


def parse_command(
    verb: str | None,
    payload: bytes,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
) -> Command | RejectedCommand:
    """`verb` comes from the topic (`cmd/<verb>`), the rest from the JSON body."""

    def reject(reason: str, command_id: str | None = None) -> RejectedCommand:
        return RejectedCommand(reason, verb, command_id, response_topic, correlation_data)

    if len(payload) > MAX_COMMAND_BYTES:
        return reject(f"payload of {len(payload)} bytes exceeds {MAX_COMMAND_BYTES}")
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return reject(f"payload is not JSON: {exc}")
    if not isinstance(body, dict):
        return reject(f"payload must be a JSON object, not {type(body).__name__}")

    raw_id = body.get("command_id")
    # Read early so that even a rejection can name the command it refuses.
    readable_id = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_ID_CHARS else None
    for name in _ID_FIELDS:
        if name not in body and name != "command_id":
            continue
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            return reject(f"`{name}` must be a non-empty string", readable_id)
        if len(value) > MAX_ID_CHARS:
            return reject(f"`{name}` is longer than {MAX_ID_CHARS} characters", readable_id)
    command_id: str = body["command_id"]

    if verb is None or verb not in KNOWN_VERBS:
        known = ", ".join(sorted(KNOWN_VERBS))
        return reject(f"unknown command verb `{verb}` (known: {known})", command_id)
    if verb == "ack" and "event_id" not in body and "ticket_id" not in body:
        return reject("`ack` needs `event_id` and/or `ticket_id`", command_id)
    if_revision = body.get("if_revision")
    if "if_revision" in body and (
        not isinstance(if_revision, int) or isinstance(if_revision, bool) or if_revision < 1
    ):
        return reject("`if_revision` must be a positive integer", command_id)

    return Command(
        verb=verb,
        command_id=command_id,
        body=body,
        response_topic=response_topic,
        correlation_data=correlation_data,
    )


def encode_reply(reply: CommandReply, verb: str | None) -> bytes:
    document: dict[str, Any] = {
        "command_id": reply.command_id,
        "verb": verb,
        "accepted": reply.accepted,
        "reason": reply.reason,
        "detail": dict(reply.detail),
    }
    return json.dumps(document, separators=(",", ":"), default=str).encode()


def decode_reply(payload: bytes) -> CommandReply | None:
    """The reverse of `encode_reply`, for the central system; None when it is not a reply."""
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("command_id"), str):
        return None
    detail = document.get("detail")
    return CommandReply(
        command_id=document["command_id"],
        accepted=document.get("accepted") is True,
        reason=str(document.get("reason", "")),
        detail=detail if isinstance(detail, dict) else {},
    )


# Called after an ack settled at least one message: the lead's ticketing marks the ticket
# ACKNOWLEDGED and stores the central id.
AckListener = Callable[[Command, Sequence[OutboxItem]], Awaitable[None]]


def make_ack_handler(
    outbox: Outbox,
    clock: Clock,
    *,
    on_acknowledged: AckListener | None = None,
    fallback: CommandHandler | None = None,
) -> CommandHandler:
    """A `CommandHandler` that settles ticket messages on `ack` and passes other verbs on.

    An ack is idempotent: the central system re-acks a message it sees again (our resend
    after its first ack was lost), and that must be accepted without changing anything.
    """

    async def handle(command: Command) -> CommandReply:
        if command.verb != "ack":
            if fallback is not None:
                return await fallback(command)
            return CommandReply(
                command.command_id, False, f"command `{command.verb}` is not supported yet"
            )
        return await _settle_ack(outbox, clock, command, on_acknowledged)

    return handle


async def _settle_ack(
    outbox: Outbox, clock: Clock, command: Command, on_acknowledged: AckListener | None
) -> CommandReply:
    body: Mapping[str, Any] = command.body
    event_id: str | None = body.get("event_id")
    ticket_id: str | None = body.get("ticket_id")
    central_id: str | None = body.get("central_id")
    now = clock.now()
    settled: list[OutboxItem] = []

    if event_id is not None:
        item = await outbox.settle_event(event_id, now)
        if item is not None:
            settled.append(item)
            if ticket_id is not None and item.ticket_id != ticket_id:
                log.warning(
                    "Central ack `%s` names ticket `%s` but event `%s` belongs to `%s`.",
                    command.command_id,
                    ticket_id,
                    event_id,
                    item.ticket_id,
                )
    else:
        # Ack of the ticket as a whole: every unsettled message announcing it.
        for pending in await outbox.unsettled(_ACK_SCAN_LIMIT):
            if pending.kind is OutboxKind.TICKET and pending.ticket_id == ticket_id:
                item = await outbox.settle_event(pending.event_id, now)
                if item is not None:
                    settled.append(item)

    detail = {
        "settled": [item.event_id for item in settled],
        "ticket_id": ticket_id or (settled[0].ticket_id if settled else None),
        "central_id": central_id,
    }
    if not settled:
        log.info(
            "Central ack `%s` settled nothing: event `%s` / ticket `%s` already acknowledged "
            "or unknown.",
            command.command_id,
            event_id,
            ticket_id,
        )
        return CommandReply(command.command_id, True, "already acknowledged or unknown", detail)

    log.info(
        "Central ack `%s` settled %d message(s) of ticket `%s` (central id `%s`).",
        command.command_id,
        len(settled),
        detail["ticket_id"],
        central_id,
    )
    if on_acknowledged is not None:
        await on_acknowledged(command, settled)
    return CommandReply(command.command_id, True, "", detail)
