"""Ticket changes as CloudEvents 1.0, structured JSON mode (DESIGN.md section 7).

One ticket change becomes one event with a fresh `id`; the outbox keeps that id, so a resend
carries the same id and the central system deduplicates on it. `sequence` rises per gateway
(CloudEvents sequence extension: a lexicographically ordered string, hence zero-padded), and
`data.revision` is the ticket's own revision. The attributes are also copied into MQTT 5 user
properties under their own names (`id`, `type`, `source`... as the CloudEvents MQTT binding
names them), with the ticket's `revision`, so a broker rule or a consumer can route without
parsing JSON.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.core import json_codec
from gateway.core.interfaces import MessageEncoder, NewMessage, TicketEvent
from gateway.core.records import ISO14224_FAILURE_MODE, FaultCode, OutboxKind, Ticket, TicketState
from uplink.messages import CLOUDEVENTS_CONTENT_TYPE, JSON_CONTENT_TYPE
from uplink.topics import Topics

SPEC_VERSION = "1.0"
DATA_CONTENT_TYPE = JSON_CONTENT_TYPE
TICKET_TYPE_PREFIX = "com.edge-gateway.ticket."
SEQUENCE_DIGITS = 20  # fits any 64-bit counter, so text order equals number order

_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


def source_urn(site: str, gateway: str) -> str:
    return f"urn:edge:{site}:{gateway}"


def ticket_event_type(kind: str) -> str:
    if not _KIND.match(kind):
        raise ValueError(f"ticket event kind {kind!r} is not a lower-case identifier")
    return TICKET_TYPE_PREFIX + kind


# A ticket's times (opened, first seen, due) recur in every message of it; formatting one is
# several microseconds, a message carries up to eight.
@functools.lru_cache(maxsize=4096)
def rfc3339(ts: float) -> str:
    """UTC with milliseconds and a `Z`, as CloudEvents `time` and humans expect."""
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def format_sequence(value: int) -> str:
    if value < 0:
        raise ValueError(f"sequence {value} must not be negative")
    return f"{value:0{SEQUENCE_DIGITS}d}"


def _json_safe(value: Any) -> Any:
    """Plain JSON: numpy scalars become numbers, non-finite floats (no JSON form) become null.

    Anything else that JSON cannot carry is a bug upstream and raises `TypeError`; evidence is
    small summaries by contract (Finding.evidence), never arrays of samples.
    """
    kind = type(value)
    # The plain types first, by exact type: the abstract `numbers` checks below cost several
    # times more, and a ticket's evidence and attributes are almost all plain values.
    if value is None or kind is str or kind is bool or kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {str(key): _json_safe(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_json_safe(item) for item in value]
    if isinstance(value, str | bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        as_float = float(value)
        return as_float if math.isfinite(as_float) else None
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    raise TypeError(f"cannot put a {type(value).__name__} into a ticket message")


def ticket_summary(ticket: Ticket, gateway: str) -> dict[str, Any]:
    """The ticket as the central system sees it: `data` of every ticket event."""
    return {
        "id": ticket.id,
        "key": ticket.key,
        "site": ticket.site,
        "gateway": gateway,
        "asset": ticket.asset,
        "fault_code": ticket.fault_code,
        "iso14224_failure_mode": ISO14224_FAILURE_MODE.get(ticket.fault_code, "OTH"),
        "detector": ticket.detector,
        "priority": str(ticket.priority),
        "state": str(ticket.state),
        "revision": ticket.revision,
        "opened_at": rfc3339(ticket.opened_at),
        "first_seen": rfc3339(ticket.first_seen),
        "last_seen": rfc3339(ticket.last_seen),
        "occurrences": ticket.occurrences,
        "peak_value": _json_safe(ticket.peak_value),
        "message": ticket.message,
        "condition_active": ticket.condition_active,
        "central_id": ticket.central_id,
        "acknowledged_at": (
            rfc3339(ticket.acknowledged_at) if ticket.acknowledged_at is not None else None
        ),
        "evidence": _json_safe(ticket.evidence),
        "respond_by": _optional_time(ticket.respond_by),
        "resolve_by": _optional_time(ticket.resolve_by),
        "closed_at": _optional_time(ticket.closed_at),
        **_lifecycle_fields(ticket.attributes),
    }


# Lifecycle attributes copied to the top of `data` under these names (docs/TICKETS.md).
_ATTRIBUTE_FIELDS = (
    "routing",
    "failure_coding",
    "knowledge",
    "recurrence_of",
    "incident_id",
    "incident",
    "linked_tickets",
    "after_incident",
    "successor_of",
    "assignment",
    "resolution",
    "verification",
    "shelved",
    "renotifications",
    "first_response_s",
    # The person's response, work on site, SLA clocks and escalation, sign-off,
    # the outcome.
    "response",
    "work",
    "hold",
    "escalation",
    "unattended",
    "resolved",
    "first_verification",
    "sign_off",
    "eradicated",
)


def _lifecycle_fields(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The documented lifecycle attributes; internal ones (the baseline) stay on site."""
    return {name: _json_safe(attributes[name]) for name in _ATTRIBUTE_FIELDS if name in attributes}


def _optional_time(ts: float | None) -> str | None:
    return rfc3339(ts) if ts is not None else None


def build_ticket_event(
    ticket: Ticket,
    event: TicketEvent,
    *,
    event_id: str,
    source: str,
    sequence: int,
    gateway: str,
) -> dict[str, Any]:
    """The CloudEvent as a dict; `change` carries what this event changed, if anything."""
    data = ticket_summary(ticket, gateway)
    data["change"] = _json_safe(event.detail)
    return {
        "specversion": SPEC_VERSION,
        "id": event_id,
        "source": source,
        "type": ticket_event_type(event.kind),
        "time": rfc3339(event.ts),
        "subject": ticket.id,
        "datacontenttype": DATA_CONTENT_TYPE,
        "sequence": format_sequence(sequence),
        "data": data,
    }


def encode_json(document: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (`gateway.core.json_codec`: a non-finite float becomes null, as
    `_json_safe` makes it)."""
    return json_codec.dumps_compact(document)


# Event kinds that are state transitions: the lower-case ticket states.
TRANSITION_KINDS: frozenset[str] = frozenset(state.value.lower() for state in TicketState)


def topic_for_kind(topics: Topics, kind: str, *, incident: bool = False) -> str:
    """`opened` goes to `opened`; a state transition (acknowledged, assigned, closed...) to
    `transition`; every other change (updated, condition_cleared, renotified, resync...) to
    `updated`, where `type` tells them apart. Incidents use `incidents/` instead of `tickets/`."""
    if kind == "opened":
        return topics.incidents_opened if incident else topics.tickets_opened
    if kind in TRANSITION_KINDS:
        return topics.incidents_transition if incident else topics.tickets_transition
    return topics.incidents_updated if incident else topics.tickets_updated


def make_ticket_encoder(
    topics: Topics,
    source: str,
    sequence: Callable[[], int],
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> MessageEncoder:
    """The `MessageEncoder` the ticketing layer calls inside its commit.

    `sequence` returns the next per-gateway number each call (the caller persists it);
    `new_id` exists for tests that want predictable ids.
    """

    def encode(ticket: Ticket, event: TicketEvent) -> NewMessage:
        event_id = new_id()
        document = build_ticket_event(
            ticket,
            event,
            event_id=event_id,
            source=source,
            sequence=sequence(),
            gateway=topics.gateway,
        )
        return NewMessage(
            event_id=event_id,
            topic=topic_for_kind(
                topics, event.kind, incident=ticket.fault_code == FaultCode.ALARM_FLOOD
            ),
            payload=encode_json(document),
            kind=OutboxKind.TICKET,
            ticket_id=ticket.id,
            # Decided once here and kept with the message in the outbox.
            content_type=CLOUDEVENTS_CONTENT_TYPE,
            user_properties=tuple(cloudevent_properties(document)),
        )

    return encode


def user_properties(payload: bytes) -> list[tuple[str, str]]:
    """MQTT 5 user properties for a CloudEvents payload; empty for anything else.

    Only for outbox rows committed before the properties were stored with the message."""
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return []
    if not isinstance(document, dict) or document.get("specversion") != SPEC_VERSION:
        return []
    return cloudevent_properties(document)


# Attributes copied to user properties, in this order, when the event has them.
PROPERTY_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "subject", "sequence")
# User property names of messages committed before the binding's names were used.
LEGACY_PROPERTY_NAMES = frozenset({"ce_id", "ce_type", "ce_sequence", "ticket"})


def cloudevent_properties(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The attributes of a CloudEvent as MQTT 5 user properties: the attribute names unchanged
    (CloudEvents MQTT binding, 3.1.3.1), then `revision`, the ticket's revision."""
    props = [(name, str(document[name])) for name in PROPERTY_ATTRIBUTES if name in document]
    data = document.get("data")
    if isinstance(data, dict) and "revision" in data:
        props.append(("revision", str(data["revision"])))
    return props


def is_cloudevent(payload: bytes) -> bool:
    return bool(user_properties(payload))
