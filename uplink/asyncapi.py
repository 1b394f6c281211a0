"""The MQTT contract as data: an AsyncAPI 3.0 document.

Built from the code's own tables, so it cannot drift from what is sent and accepted:
- every outgoing message type, its channels, properties and payload from `uplink.messages`
  (the table the egress guard enforces);
- the ticket event kinds and which channel each goes to from the ticketing layer's list and
  `uplink.events.topic_for_kind`;
- every command verb and the JSON Schema of its body from the ticketing verb table, with the
  envelope limits of `uplink.commands`.

The ticketing parts are passed in (the uplink may not import ticketing, DESIGN.md section 1);
`gateway.cli.contract` wires them and writes the shipped document, `uplink/asyncapi.json`
(read with `shipped_document()`, found through importlib.resources) and `docs/asyncapi.json`.
Every payload schema is self-contained JSON Schema (draft-07 keywords, no inner `$ref`), under
`components.schemas`, so a validator needs nothing but the schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from gateway.core.records import OutboxKind
from uplink.commands import MAX_COMMAND_BYTES, MAX_NESTING
from uplink.events import PROPERTY_ATTRIBUTES, TICKET_TYPE_PREFIX, TRANSITION_KINDS
from uplink.messages import (
    CLOUDEVENT_ATTRIBUTES,
    JSON_CONTENT_TYPE,
    MESSAGE_TYPES,
    TICKET_DATA,
    Field,
    MessageType,
)

ASYNCAPI_VERSION = "3.0.0"
# The version of the contract itself; raise it with any change an integrator must know about.
CONTRACT_VERSION = "2.0.0"
SHIPPED_FILE = "asyncapi.json"
MQTT_BINDING_VERSION = "0.2.0"
BASE = "{prefix}/{site}/{gateway}"
REGENERATE = "python -m gateway.cli.contract --write"

_JSON_TYPE_NAMES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    type(None): "null",
}

DESCRIPTION = """\
What a central ticket system (CMMS) implements against: the gateway publishes ticket events,
its status, health and asset summaries, and takes commands on `cmd/<verb>`, each answered on
the MQTT 5 response topic the command names. Prose, lifecycle and examples: docs/TICKETS.md.

MQTT 5, QoS 1 everywhere. Every payload is UTF-8 JSON (Payload Format Indicator 1). Ticket
events are CloudEvents 1.0 in structured mode (`content-type: application/cloudevents+json`);
their attributes are repeated as MQTT 5 user properties under their own names (`id`, `type`,
`source`, `specversion`, `time`, `subject`, `sequence`: CloudEvents MQTT binding), with the
ticket's `revision`. A ticket event is settled only by the central system's `cmd/ack` and is
resent with the same `id` until then: deduplicate on `id`. Health and summaries are best effort
and carry a Message Expiry Interval; tickets, status and replies never expire.

Redundant consumers: subscribe with a shared subscription,
`$share/<group>/{prefix}/{site}/{gateway}/tickets/#` (and `incidents/#`); the broker hands each
message to one member of the group, and a message a member did not acknowledge (it went away)
goes to another. Any member may `ack`. When two central systems answer the same ticket, the
first `ack` moves it to ACKNOWLEDGED and its `central_id` is kept; a later `ack` from the other
is accepted and settles the messages it names, but does not change `central_id` (the reply's
`detail.central_id` says what the other sent; `detail.state` and `revision` show the ticket as
it stays).
"""


def json_type(types: type | tuple[type, ...]) -> str | list[str]:
    names: list[str] = []
    for kind in types if isinstance(types, tuple) else (types,):
        name = _JSON_TYPE_NAMES[kind]
        if name not in names:
            names.append(name)
    if "number" in names and "integer" in names:
        names.remove("integer")
    return names[0] if len(names) == 1 else names


def field_schema(spec: Field) -> dict[str, Any]:
    return {"type": json_type(spec.types), "description": spec.description, **spec.schema}


def object_schema(
    fields: Mapping[str, Field], *, closed: bool, description: str | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    if description is not None:
        schema["description"] = description
    schema["properties"] = {name: field_schema(spec) for name, spec in fields.items()}
    schema["required"] = sorted(name for name, spec in fields.items() if spec.required)
    schema["additionalProperties"] = not closed
    return schema


def payload_schema(message: MessageType) -> dict[str, Any]:
    """The JSON Schema of one message type's payload, from the table the guard reads."""
    schema = object_schema(message.fields, closed=True, description=message.description)
    if message.extension_key is not None:
        # CloudEvents extension attributes: scalars under names the table does not use.
        known = "|".join(re.escape(name) for name in message.fields)
        pattern = message.extension_key.pattern.removeprefix("^")
        schema["patternProperties"] = {
            f"^(?!({known})$){pattern}": {"type": ["string", "number", "boolean", "null"]}
        }
    return schema


def _limits(message: MessageType) -> dict[str, int]:
    return {
        "maxBytes": message.max_bytes,
        "maxDepth": message.max_depth,
        "maxArrayItems": message.max_array_items,
        "maxStringChars": message.max_string_chars,
    }


def ticket_event_schema(kinds: Mapping[str, str], channel: str) -> dict[str, Any]:
    message = MESSAGE_TYPES[OutboxKind.TICKET]
    schema = payload_schema(message)
    types = [TICKET_TYPE_PREFIX + kind for kind in kinds]
    described = "; ".join(f"`{kind}`: {text}" for kind, text in kinds.items())
    schema["properties"]["type"] = {
        "type": "string",
        "description": f"`{TICKET_TYPE_PREFIX}<kind>`, on `{channel}`: {described}",
        "enum": types,
    }
    schema["properties"]["data"] = object_schema(
        TICKET_DATA, closed=False, description=message.fields["data"].description
    )
    return schema


def kinds_by_channel(kinds: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The event kinds of each ticket channel, as `uplink.events.topic_for_kind` routes them."""
    split: dict[str, dict[str, str]] = {"opened": {}, "transition": {}, "updated": {}}
    for kind, text in kinds.items():
        if kind == "opened":
            split["opened"][kind] = text
        elif kind in TRANSITION_KINDS:
            split["transition"][kind] = text
        else:
            split["updated"][kind] = text
    return split


def _channel_id(channel: str) -> str:
    words = re.split(r"[/{}]+", channel.strip("{}"))
    return words[0] + "".join(word[:1].upper() + word[1:] for word in words[1:] if word)


def _parameters(address: str) -> dict[str, Any]:
    texts = {
        "prefix": "`uplink.topic_prefix` of gateway.yaml (`factory` by default).",
        "site": "`site` of gateway.yaml.",
        "gateway": "`gateway_id` of gateway.yaml.",
        "asset": "The asset id (the device's `asset` in its YAML).",
    }
    return {name: {"description": texts[name]} for name in re.findall(r"\{(\w+)\}", address)}


def _mqtt_message_binding(content_type: str, *, correlated: bool = False) -> dict[str, Any]:
    binding: dict[str, Any] = {
        "payloadFormatIndicator": 1,
        "contentType": content_type,
        "bindingVersion": MQTT_BINDING_VERSION,
    }
    if correlated:
        binding["correlationData"] = {
            "type": "string",
            "description": "MQTT 5 Correlation Data: the command's, returned on its reply.",
        }
    return binding


def _operation_binding(message: MessageType | None, *, retain: bool = False) -> dict[str, Any]:
    binding: dict[str, Any] = {"qos": 1, "retain": retain, "bindingVersion": MQTT_BINDING_VERSION}
    if message is not None and message.expiry_s is not None:
        binding["messageExpiryInterval"] = message.expiry_s
    return {"mqtt": binding}


def _headers() -> dict[str, Any]:
    properties = {
        name: {"type": "string", "description": CLOUDEVENT_ATTRIBUTES[name].description}
        for name in PROPERTY_ATTRIBUTES
    }
    properties["revision"] = {
        "type": "string",
        "pattern": "^[0-9]+$",
        "description": "The ticket's revision (`data.revision`).",
    }
    return {
        "type": "object",
        "description": "MQTT 5 user properties.",
        "properties": properties,
        "required": ["specversion", "id", "source", "type", "time"],
    }


def build_document(
    commands: Mapping[str, Mapping[str, Any]], event_kinds: Mapping[str, str]
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document. `commands`: the body schema of every verb; `event_kinds`:
    every ticket event kind with its description."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}

    def add_outgoing(
        message: MessageType,
        channel: str,
        name: str,
        schema: Mapping[str, Any],
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        address = f"{BASE}/{channel}"
        channel_id = _channel_id(channel)
        schemas[name] = schema
        entry: dict[str, Any] = {
            "name": name,
            "title": message.title,
            "summary": message.description,
            "contentType": message.content_type,
            "payload": {"$ref": f"#/components/schemas/{name}"},
            "bindings": {"mqtt": _mqtt_message_binding(message.content_type)},
            "x-limits": _limits(message),
        }
        if headers is not None:
            entry["headers"] = headers
        messages[name] = entry
        channels[channel_id] = {
            "address": address,
            "title": message.title,
            "parameters": _parameters(address),
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"send_{channel_id}"] = {
            "action": "send",
            "title": f"Publish {message.title.lower()} on `{channel}`",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{name}"}],
            "bindings": _operation_binding(message, retain=message.retain),
        }

    ticket = MESSAGE_TYPES[OutboxKind.TICKET]
    by_channel = kinds_by_channel(event_kinds)
    for channel in ticket.channels:
        tree, tail = channel.split("/")
        name = "Incident" if tree == "incidents" else "Ticket"
        schema_name = f"{name}{tail.capitalize()}"
        add_outgoing(
            ticket, channel, schema_name, ticket_event_schema(by_channel[tail], channel), _headers()
        )
    for kind, name in (
        (OutboxKind.STATUS, "Status"),
        (OutboxKind.HEALTH, "Health"),
        (OutboxKind.SUMMARY, "Summary"),
    ):
        message = MESSAGE_TYPES[kind]
        for channel in message.channels:
            add_outgoing(message, channel, name, payload_schema(message))

    reply = MESSAGE_TYPES[OutboxKind.REPLY]
    schemas["CommandReply"] = payload_schema(reply)
    messages["CommandReply"] = {
        "name": "CommandReply",
        "title": reply.title,
        "summary": reply.description,
        "contentType": JSON_CONTENT_TYPE,
        "payload": {"$ref": "#/components/schemas/CommandReply"},
        "correlationId": {"location": "$message.header#/correlationData"},
        "bindings": {"mqtt": _mqtt_message_binding(JSON_CONTENT_TYPE, correlated=True)},
        "x-limits": _limits(reply),
    }
    channels["commandReply"] = {
        "address": None,
        "title": "Command replies",
        "description": "The MQTT 5 Response Topic of the command. A reply is never published "
        f"under `{BASE}/` (a forged command cannot make the gateway publish into its own tree).",
        "messages": {"CommandReply": {"$ref": "#/components/messages/CommandReply"}},
    }
    envelope = (
        f"At most {MAX_COMMAND_BYTES // 1024} KiB, nesting at most {MAX_NESTING} deep, no "
        "duplicate keys, finite numbers only; send it with a Response Topic and Correlation "
        "Data to get the reply."
    )
    for verb, body in sorted(commands.items()):
        name = f"Command_{verb}"
        address = f"{BASE}/cmd/{verb}"
        channel_id = f"cmd_{verb}"
        schema = dict(body)
        schema["description"] = f"{body.get('description', '')} {envelope}".strip()
        schemas[name] = schema
        messages[name] = {
            "name": name,
            "title": f"`{verb}` command",
            "summary": body.get("description", ""),
            "contentType": JSON_CONTENT_TYPE,
            "payload": {"$ref": f"#/components/schemas/{name}"},
            "correlationId": {"location": "$message.header#/correlationData"},
            "bindings": {"mqtt": _mqtt_message_binding(JSON_CONTENT_TYPE, correlated=True)},
            "x-limits": {"maxBytes": MAX_COMMAND_BYTES, "maxDepth": MAX_NESTING},
        }
        channels[channel_id] = {
            "address": address,
            "title": f"`{verb}` commands",
            "parameters": _parameters(address),
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"receive_{channel_id}"] = {
            "action": "receive",
            "title": f"Take the `{verb}` command",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{name}"}],
            "bindings": _operation_binding(None),
            "reply": {
                "address": {
                    "description": "The command's MQTT 5 Response Topic.",
                    "location": "$message.header#/responseTopic",
                },
                "channel": {"$ref": "#/channels/commandReply"},
                "messages": [{"$ref": "#/channels/commandReply/messages/CommandReply"}],
            },
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Edge gateway MQTT contract",
            "version": CONTRACT_VERSION,
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": JSON_CONTENT_TYPE,
        "servers": {
            "site-broker": {
                "host": "{host}:{port}",
                "protocol": "mqtt",
                "protocolVersion": "5",
                "description": "The site's MQTT 5 broker (`uplink.host`/`uplink.port`); TLS "
                "when `uplink.tls` is set.",
                "variables": {"host": {"default": "localhost"}, "port": {"default": "1883"}},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def shipped_document() -> dict[str, Any]:
    """The AsyncAPI document shipped in the package."""
    text = resources.files("uplink").joinpath(SHIPPED_FILE).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document
