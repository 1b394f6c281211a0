"""Every message type the gateway publishes, described once.

One table, two readers: the egress guard (`uplink.guard`) checks each message against it just
before it leaves, and the contract (`uplink.asyncapi`, the shipped AsyncAPI document) publishes
the same entries as JSON Schemas. A field added here is allowed by the guard and documented in
the contract in one change; a field a producer sends that is not here is refused by the guard.

Each field names its JSON types (for the guard) and a description (for the contract), and may
add JSON Schema keywords (`enum`, `format`...) that only the contract uses. The bounds (bytes,
depth, array length, text length) are the guard's and appear in the contract as `maxLength`,
`x-max-bytes`... so an integrator knows them too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.records import OutboxKind, TicketState

# JSON value types a field may have; bool is kept apart from numbers on purpose.
JsonType = type | tuple[type, ...]
NUMBER: tuple[type, ...] = (int, float)
TEXT = str
OBJECT = dict
ARRAY = list
BOOLEAN = bool
NULL = type(None)
NULLABLE_TEXT: tuple[type, ...] = (str, NULL)
NULLABLE_OBJECT: tuple[type, ...] = (dict, NULL)
NULLABLE_NUMBER: tuple[type, ...] = (int, float, NULL)

JSON_CONTENT_TYPE = "application/json"
# MQTT 5 content type of a structured-mode CloudEvent (CloudEvents MQTT binding, 3.2).
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"


@dataclass(frozen=True, slots=True)
class Field:
    types: JsonType
    description: str
    required: bool = False
    # Extra JSON Schema keywords for the contract (enum, format, properties of an object...).
    schema: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MessageType:
    """One type of outgoing message: where it goes, what it holds, how big it may be."""

    kind: OutboxKind
    title: str
    description: str
    # Channels under `<prefix>/<site>/<gateway>/`; `{asset}` is one topic level. Empty for a
    # reply, which goes to the response topic the command named.
    channels: tuple[str, ...]
    fields: Mapping[str, Field]
    content_type: str = JSON_CONTENT_TYPE
    retain: bool = False
    # MQTT 5 Message Expiry Interval: best-effort messages are worthless once newer ones exist,
    # so a broker may drop them for a consumer that is away. None: never expires (tickets).
    expiry_s: int | None = None
    # Required keys of a nested object (the ticket under `data`); other keys there are allowed.
    nested: Mapping[str, Mapping[str, Field]] = field(default_factory=dict)
    max_bytes: int = 64 * 1024
    max_array_items: int = 64
    max_depth: int = 6
    max_string_chars: int = 4096
    # Keys outside `fields` that are still allowed when they match (CloudEvents extensions).
    extension_key: re.Pattern[str] | None = None

    @property
    def required(self) -> frozenset[str]:
        return frozenset(name for name, spec in self.fields.items() if spec.required)


_TIME = {"format": "date-time"}

# The ticket as the central system sees it (`data` of every ticket event, uplink.events).
TICKET_DATA: Mapping[str, Field] = {
    "id": Field(TEXT, "The ticket id; `subject` of the event.", True),
    "key": Field(TEXT, "Dedup key `site/asset/fault_code/detector`.", True),
    "site": Field(TEXT, "The site id.", True),
    "gateway": Field(TEXT, "The gateway id.", True),
    "asset": Field(TEXT, "The asset (device) id, or the area of an incident.", True),
    "fault_code": Field(TEXT, "Fault catalogue code (`threshold.high`...).", True),
    "iso14224_failure_mode": Field(TEXT, "ISO 14224 failure mode of the fault code.", True),
    "detector": Field(TEXT, "The detector rule that raised the condition.", True),
    "priority": Field(TEXT, "P0 (most urgent) .. P3.", True, {"enum": ["P0", "P1", "P2", "P3"]}),
    "state": Field(TEXT, "Lifecycle state.", True, {"enum": [s.value for s in TicketState]}),
    "revision": Field(int, "Rises by one with every event of the ticket.", True, {"minimum": 1}),
    "opened_at": Field(TEXT, "When the ticket opened.", True, _TIME),
    "first_seen": Field(TEXT, "First trigger of the condition.", True, _TIME),
    "last_seen": Field(TEXT, "Latest trigger of the condition.", True, _TIME),
    "occurrences": Field(int, "Triggers merged into this ticket.", True, {"minimum": 0}),
    "peak_value": Field(NULLABLE_NUMBER, "Most extreme value seen (null if none).", True),
    "message": Field(TEXT, "One line for a planner: what was found.", True),
    "condition_active": Field(BOOLEAN, "Whether the edge condition is active now.", True),
    "central_id": Field(NULLABLE_TEXT, "The central system's work order id (set by `ack`).", True),
    "acknowledged_at": Field(NULLABLE_TEXT, "When the first `ack` arrived.", True, _TIME),
    "evidence": Field(OBJECT, "The detector's summary, per-tag `telemetry`; no raw data.", True),
    "respond_by": Field(NULLABLE_TEXT, "SLA response deadline.", True, _TIME),
    "resolve_by": Field(NULLABLE_TEXT, "SLA resolution deadline.", True, _TIME),
    "closed_at": Field(NULLABLE_TEXT, "When the ticket was closed or cancelled.", True, _TIME),
    "change": Field(OBJECT, "What this event changed (`from`/`to`, `reason`, figures).", True),
    "routing": Field(OBJECT, "`{site, area, line, business_line, region, skill, asset_class}`."),
    "failure_coding": Field(OBJECT, "`{iso14224_failure_mode, cmms?}`: the site's CMMS codes."),
    "knowledge": Field(ARRAY, "Recommended actions, most specific first (at most 3)."),
    "recurrence_of": Field(TEXT, "The closed ticket this one repeats."),
    "incident_id": Field(TEXT, "The incident a safety ticket belongs to."),
    "incident": Field(OBJECT, "On incidents: area, members, suspected root cause."),
    "linked_tickets": Field(ARRAY, "On incidents: the member tickets."),
    "successor_of": Field(
        TEXT, "On incidents: the closed incident whose still-active members this one carries."
    ),
    "after_incident": Field(
        TEXT, "The incident that held this condition; the ticket opened when that one closed."
    ),
    "assignment": Field(OBJECT, "Set by `assign`."),
    "resolution": Field(OBJECT, "Set by `close`."),
    "verification": Field(OBJECT, "The repair verification against the pre-fault baseline."),
    "shelved": Field(OBJECT, "Set by `shelve` while the condition is shelved."),
    "renotifications": Field(
        int, "Tickets from before the escalation policy: times the response was overdue."
    ),
    "escalation": Field(
        OBJECT, "The response and resolution clocks: deadline, warning, level reached, paused."
    ),
    "response": Field(OBJECT, "The first response: `{by, at, s, within}` (a person, not an ack)."),
    "work": Field(OBJECT, "Set by `start`: `{started_by, started_at}`."),
    "hold": Field(
        OBJECT, "While ON_HOLD: `{reason, note, since, by, clock_paused}` (`cmd/hold`)."
    ),
    "resolved": Field(OBJECT, "When the work was reported done: `{at, s, within}`."),
    "first_verification": Field(TEXT, "Result of the first verification after a repair."),
    "sign_off": Field(OBJECT, "Set by `confirm`: `{by, at, note}`, the requester's sign-off."),
    "unattended": Field(OBJECT, "Every escalation level passed and nobody acted."),
    "eradicated": Field(OBJECT, "`{at}`: 30 days after the close without a recurrence."),
    "first_response_s": Field(
        NUMBER, "Tickets from before the escalation policy: seconds to the first `ack`."
    ),
}

# The CloudEvents attributes the gateway sets; the same names (and values) are MQTT 5 user
# properties of the message (CloudEvents MQTT binding: attribute names unchanged).
CLOUDEVENT_ATTRIBUTES: Mapping[str, Field] = {
    "specversion": Field(TEXT, "CloudEvents version.", True, {"const": "1.0"}),
    "id": Field(TEXT, "Stable per message: a resend reuses it; deduplicate on it.", True),
    "source": Field(TEXT, "`urn:edge:<site>:<gateway>`.", True),
    "type": Field(TEXT, "`com.edge-gateway.ticket.<kind>`.", True),
    "time": Field(TEXT, "When the change happened (UTC, milliseconds).", True, _TIME),
    "subject": Field(TEXT, "The ticket id."),
    "datacontenttype": Field(TEXT, "`application/json`.", schema={"const": JSON_CONTENT_TYPE}),
    "sequence": Field(
        TEXT,
        "Per gateway, rises across restarts; zero-padded to 20 digits so text order is number "
        "order (CloudEvents sequence extension).",
        schema={"pattern": "^[0-9]{20}$"},
    ),
}

TICKET = MessageType(
    kind=OutboxKind.TICKET,
    title="Ticket event",
    description="One change of a ticket or incident as a CloudEvent 1.0 (structured JSON mode). "
    "Settled only by the central system's `cmd/ack`, resent with the same `id` until then.",
    channels=(
        "tickets/opened",
        "tickets/updated",
        "tickets/transition",
        "incidents/opened",
        "incidents/updated",
        "incidents/transition",
    ),
    fields={
        **CLOUDEVENT_ATTRIBUTES,
        "data": Field(OBJECT, "The whole ticket as of this event.", True),
    },
    content_type=CLOUDEVENTS_CONTENT_TYPE,
    nested={"data": {name: TICKET_DATA[name] for name in ("id", "asset", "revision")}},
    max_bytes=64 * 1024,
    max_array_items=32,
    max_depth=8,
    # CloudEvents extension attributes: lower-case alphanumerics (spec 3.1.1).
    extension_key=re.compile(r"^[a-z0-9]{1,20}$"),
)

STATUS = MessageType(
    kind=OutboxKind.STATUS,
    title="Gateway status",
    description="Retained. `online` on every connect; `offline` as the Will when the gateway "
    "vanishes (`reason: connection lost`) or published by a clean stop (`reason: stopped`).",
    channels=("status",),
    fields={
        "state": Field(TEXT, "`online` or `offline`.", True, {"enum": ["online", "offline"]}),
        "site": Field(TEXT, "The site id.", True),
        "gateway": Field(TEXT, "The gateway id.", True),
        "client_id": Field(TEXT, "The MQTT client id of the gateway's main session."),
        "reason": Field(TEXT, "Why offline: `connection lost` (the Will) or `stopped`."),
        "since": Field(TEXT, "When this state began (not in the Will).", schema=_TIME),
    },
    retain=True,
    max_bytes=2 * 1024,
    max_array_items=0,
    max_depth=1,
    max_string_chars=256,
)

HEALTH = MessageType(
    kind=OutboxKind.HEALTH,
    title="Gateway health",
    description="Every `uplink.health_period_s`: devices, pipeline, uplink, outbox, drops and the "
    "ticket KPIs; counts and rates only. Best effort: shed first when the outbox is full.",
    channels=("health",),
    fields={
        "site": Field(TEXT, "The site id.", True),
        "gateway": Field(TEXT, "The gateway id.", True),
        "time": Field(TEXT, "When the report was made.", True, _TIME),
        "uptime_s": Field(NUMBER, "Seconds since the daemon started."),
        "ready": Field(BOOLEAN, "Whether the daemon is ready (systemd READY=1 sent)."),
        "devices": Field(ARRAY, "One entry per device: state, counts, last error."),
        "pipeline": Field(OBJECT, "Queue depth, records, samples, findings, detector time."),
        "uplink": Field(OBJECT, "Connection and command counters."),
        "outbox": Field(OBJECT, "Depth by kind, oldest age, limit."),
        "drops": Field(OBJECT, "`<reason>:<type>` -> count."),
        "telemetry": Field(OBJECT, "Local telemetry store counters."),
        "residency": Field(OBJECT, "Bytes acquired on site vs. bytes and messages sent."),
        "tickets": Field(OBJECT, "Alarm-management KPIs (docs/TICKETS.md, KPIs)."),
    },
    expiry_s=600,
    max_bytes=128 * 1024,
    max_array_items=2000,  # one entry per device
    max_string_chars=1024,
)

SUMMARY = MessageType(
    kind=OutboxKind.SUMMARY,
    title="Asset summary",
    description="Every `uplink.summary_period_s` per asset: per-tag min/mean/max/last and "
    "findings; never raw samples. Best effort: shed first when the outbox is full.",
    channels=("summaries/{asset}",),
    fields={
        "site": Field(TEXT, "The site id.", True),
        "gateway": Field(TEXT, "The gateway id.", True),
        "asset": Field(TEXT, "The asset id.", True),
        "time": Field(TEXT, "End of the period.", True, _TIME),
        "period_s": Field(NUMBER, "Length of the period in seconds.", True),
        "tags": Field(OBJECT, "Per tag: count, min, mean, max, last (or waveform features).", True),
        "findings": Field(OBJECT, "Findings of the period by detector."),
    },
    expiry_s=3600,
    max_bytes=32 * 1024,
    max_array_items=16,
    max_depth=4,
    max_string_chars=512,
)

REPLY = MessageType(
    kind=OutboxKind.REPLY,
    title="Command reply",
    description="The answer to every command, on the MQTT 5 response topic the command named, "
    "with its correlation data. `accepted: false` names the reason and changed nothing.",
    channels=(),
    fields={
        "command_id": Field(TEXT, "The `command_id` of the command answered.", True),
        "verb": Field(NULLABLE_TEXT, "The verb of the command (from its topic).", True),
        "accepted": Field(BOOLEAN, "Whether the command was applied.", True),
        "reason": Field(TEXT, "Why it was rejected; empty when accepted.", True),
        "detail": Field(
            NULLABLE_OBJECT,
            "Accepted ticket commands: `ticket_id`, `revision`, `state`; `ack`: `settled` "
            "(event ids); stale: `current_revision`; a replay: `replayed: true`.",
            True,
        ),
    },
    # `snapshot` replies carry a bounded summary (per-tag min/mean/max/last, open tickets of
    # the asset), `resync` ones a count: room for both, no sample arrays.
    max_bytes=32 * 1024,
    max_array_items=256,
    max_depth=6,
    max_string_chars=1024,
)

# The allow-list: every type of message the gateway ever publishes.
MESSAGE_TYPES: Mapping[OutboxKind, MessageType] = {
    m.kind: m for m in (TICKET, STATUS, HEALTH, SUMMARY, REPLY)
}
