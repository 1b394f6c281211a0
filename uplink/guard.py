"""The egress guard: the one check every outgoing message passes (DESIGN.md section 8, issue 6).

Raw samples and waveforms stay on site. Rather than trusting every producer to remember that,
the uplink asks this guard about each message just before it leaves: its type must be on the
allow-list, its topic must be one that type may use, its payload must be a JSON object that
fits the type's schema, stay within the type's byte budget, nest no deeper than a few levels,
and carry no array longer than a handful of items. A list of numbers is exactly what a leaked
waveform or sample stream looks like, so numeric arrays get the tightest bound.

A refusal is logged (type, topic, size and reason, never the payload), counted, and the
message is not published. The guard is pure: no I/O, no clock, so it is tested with tables.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.errors import PolicyViolation
from gateway.core.records import OutboxKind
from uplink.topics import Topics

log = logging.getLogger(__name__)

# JSON value types a schema names; bool is kept apart from numbers on purpose.
JsonType = type | tuple[type, ...]
NUMBER: tuple[type, ...] = (int, float)
TEXT = str
OBJECT = dict
BOOLEAN = bool
NULLABLE_TEXT: tuple[type, ...] = (str, type(None))
NULLABLE_OBJECT: tuple[type, ...] = (dict, type(None))

# What a leaked sample stream looks like: a list of numbers. Real evidence has at most a few
# (peak frequencies, harmonics), so anything longer is refused whatever the message type.
MAX_NUMERIC_ARRAY = 16


@dataclass(frozen=True, slots=True)
class MessagePolicy:
    """What one message type may look like on the wire.

    `fields` is the closed set of top-level keys (key -> allowed JSON types); `required` those
    that must be present. `nested` gives the required keys of a nested object (for example the
    ticket summary under `data`); other keys there are allowed but still bounded.
    """

    kind: OutboxKind
    topic: Callable[[str], bool]
    max_bytes: int
    fields: Mapping[str, JsonType]
    required: frozenset[str]
    nested: Mapping[str, Mapping[str, JsonType]] = field(default_factory=dict)
    max_array_items: int = 64
    max_depth: int = 6
    max_string_chars: int = 4096
    # Keys outside `fields` that are still allowed when they match (CloudEvents extensions).
    extension_key: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class GuardStatistics:
    allowed: Mapping[str, int]  # by message type
    refused: Mapping[str, int]  # by message type
    refused_bytes: int


def _under(base: str, *tails: str) -> Callable[[str], bool]:
    exact = {f"{base}/{tail}" for tail in tails if not tail.endswith("/#")}
    prefixes = tuple(f"{base}/{tail[:-1]}" for tail in tails if tail.endswith("/#"))

    def matches(topic: str) -> bool:
        return topic in exact or (bool(prefixes) and topic.startswith(prefixes))

    return matches


def default_policies(topics: Topics, reply_topic: Callable[[str], bool]) -> list[MessagePolicy]:
    """The allow-list of this gateway: one policy per message type it ever sends.

    `reply_topic` decides which response topics a command reply may go to (the central system
    names them; MQTT 5 request/response), since they live outside our own tree.
    """
    base = topics.base
    return [
        MessagePolicy(
            kind=OutboxKind.TICKET,
            topic=_under(
                base, "tickets/opened", "tickets/updated", "tickets/transition", "incidents/#"
            ),
            max_bytes=64 * 1024,
            fields={
                "specversion": TEXT,
                "id": TEXT,
                "source": TEXT,
                "type": TEXT,
                "time": TEXT,
                "subject": TEXT,
                "datacontenttype": TEXT,
                "sequence": TEXT,
                "data": OBJECT,
            },
            required=frozenset({"specversion", "id", "source", "type", "time", "data"}),
            nested={"data": {"id": TEXT, "asset": TEXT, "revision": NUMBER}},
            max_array_items=32,
            max_depth=8,
            # CloudEvents extension attributes: lower-case alphanumerics (spec 3.1.1).
            extension_key=re.compile(r"^[a-z0-9]{1,20}$"),
        ),
        MessagePolicy(
            kind=OutboxKind.STATUS,
            topic=_under(base, "status"),
            max_bytes=2 * 1024,
            fields={
                "state": TEXT,
                "site": TEXT,
                "gateway": TEXT,
                "client_id": TEXT,
                "reason": TEXT,
                "since": TEXT,
            },
            required=frozenset({"state", "site", "gateway"}),
            max_array_items=0,
            max_depth=1,
            max_string_chars=256,
        ),
        MessagePolicy(
            kind=OutboxKind.HEALTH,
            topic=_under(base, "health"),
            max_bytes=128 * 1024,
            fields={
                "site": TEXT,
                "gateway": TEXT,
                "time": TEXT,
                "uptime_s": NUMBER,
                "ready": BOOLEAN,
                "devices": list,
                "pipeline": OBJECT,
                "uplink": OBJECT,
                "outbox": OBJECT,
                "drops": OBJECT,
                "telemetry": OBJECT,
                "residency": OBJECT,
                "tickets": OBJECT,  # alarm-management KPIs (issue 5): counts and rates only
            },
            required=frozenset({"site", "gateway", "time"}),
            max_array_items=2000,  # one entry per device
            max_string_chars=1024,
        ),
        MessagePolicy(
            kind=OutboxKind.SUMMARY,
            topic=_under(base, "summaries/#"),
            max_bytes=32 * 1024,
            fields={
                "site": TEXT,
                "gateway": TEXT,
                "asset": TEXT,
                "time": TEXT,
                "period_s": NUMBER,
                "tags": OBJECT,
                "findings": OBJECT,
            },
            required=frozenset({"site", "gateway", "asset", "time", "period_s", "tags"}),
            max_array_items=16,
            max_depth=4,
            max_string_chars=512,
        ),
        MessagePolicy(
            kind=OutboxKind.REPLY,
            topic=reply_topic,
            max_bytes=32 * 1024,
            fields={
                "command_id": TEXT,
                "verb": NULLABLE_TEXT,
                "accepted": BOOLEAN,
                "reason": TEXT,
                "detail": NULLABLE_OBJECT,
            },
            required=frozenset({"command_id", "accepted"}),
            # `snapshot` replies carry a bounded summary (per-tag min/mean/max/last, open
            # tickets of the asset), `resync` ones a count: room for both, no sample arrays.
            max_array_items=256,
            max_depth=6,
            max_string_chars=1024,
        ),
    ]


def _outside_own_tree(topics: Topics) -> Callable[[str], bool]:
    """Replies may go to any response topic except into our own tree (which would let a
    forged command make us publish on `tickets/...`), and never to a wildcard."""
    own = topics.base + "/"

    def allowed(topic: str) -> bool:
        return bool(topic) and not topic.startswith(own) and not set("+#\x00") & set(topic)

    return allowed


def _type_name(types: JsonType) -> str:
    names = [t.__name__ for t in (types if isinstance(types, tuple) else (types,))]
    return " or ".join(names)


def _is_type(value: Any, types: JsonType) -> bool:
    allowed = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in allowed
    return isinstance(value, allowed)


class EgressGuard:
    """Checks and counts; `admit` is what the uplink calls before every publish."""

    def __init__(self, topics: Topics, policies: list[MessagePolicy] | None = None) -> None:
        chosen = policies or default_policies(topics, _outside_own_tree(topics))
        self._policies: dict[OutboxKind, MessagePolicy] = {p.kind: p for p in chosen}
        self._allowed: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._refused_bytes = 0

    def check(self, kind: OutboxKind, topic: str, payload: bytes) -> None:
        """Raises `PolicyViolation` naming the first rule the message breaks."""
        policy = self._policies.get(kind)
        if policy is None:
            raise PolicyViolation(f"message type `{kind}` is not on the egress allow-list")
        if not policy.topic(topic):
            raise PolicyViolation(f"a `{kind}` message may not be published on `{topic}`")
        if len(payload) > policy.max_bytes:
            raise PolicyViolation(
                f"{len(payload)} bytes exceed the `{kind}` budget of {policy.max_bytes}"
            )
        try:
            document = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PolicyViolation(f"payload is not JSON: {exc.__class__.__name__}") from None
        if not isinstance(document, dict):
            raise PolicyViolation(f"payload is a JSON {type(document).__name__}, not an object")
        _check_fields(policy, document)
        _check_bounds(policy, document, "$", 1)

    def admit(
        self, kind: OutboxKind, topic: str, payload: bytes, *, publishing: bool = True
    ) -> bool:
        """True when the message may leave; otherwise logged once per message and counted.

        `publishing=False` for the early check before a message is committed to the outbox:
        a refusal counts the same, a pass is counted when the message is finally published.
        """
        try:
            self.check(kind, topic, payload)
        except PolicyViolation as exc:
            self._refused[kind.value] += 1
            self._refused_bytes += len(payload)
            log.error(
                "Egress guard refused a `%s` message of %d bytes on `%s`: %s. Not published.",
                kind.value,
                len(payload),
                topic,
                exc,
            )
            return False
        if publishing:
            self._allowed[kind.value] += 1
        return True

    def statistics(self) -> GuardStatistics:
        return GuardStatistics(
            allowed=dict(self._allowed),
            refused=dict(self._refused),
            refused_bytes=self._refused_bytes,
        )


def _check_fields(policy: MessagePolicy, document: Mapping[str, Any]) -> None:
    missing = sorted(policy.required - document.keys())
    if missing:
        raise PolicyViolation(f"`{policy.kind}` message lacks {', '.join(missing)}")
    for key, value in document.items():
        expected = policy.fields.get(key)
        if expected is None:
            extension = policy.extension_key
            if extension is not None and extension.match(key) and _is_scalar(value):
                continue
            raise PolicyViolation(f"field `{key}` is not part of the `{policy.kind}` schema")
        if not _is_type(value, expected):
            raise PolicyViolation(
                f"field `{key}` is a {type(value).__name__}, expected {_type_name(expected)}"
            )
    for key, required in policy.nested.items():
        inner = document.get(key)
        if not isinstance(inner, dict):
            continue  # its own type was checked above; absent when optional
        for name, expected in required.items():
            if name not in inner:
                raise PolicyViolation(f"`{key}.{name}` is missing")
            if not _is_type(inner[name], expected):
                raise PolicyViolation(
                    f"`{key}.{name}` is a {type(inner[name]).__name__}, "
                    f"expected {_type_name(expected)}"
                )


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _check_bounds(policy: MessagePolicy, value: Any, path: str, depth: int) -> None:
    if depth > policy.max_depth and isinstance(value, dict | list):
        raise PolicyViolation(f"`{path}` nests deeper than {policy.max_depth} levels")
    if isinstance(value, str):
        if len(value) > policy.max_string_chars:
            raise PolicyViolation(
                f"`{path}` is a string of {len(value)} characters (limit {policy.max_string_chars})"
            )
    elif isinstance(value, list):
        if len(value) > policy.max_array_items:
            raise PolicyViolation(
                f"`{path}` is an array of {len(value)} items (limit {policy.max_array_items})"
            )
        numbers = sum(1 for item in value if _is_number(item))
        if numbers > MAX_NUMERIC_ARRAY:
            raise PolicyViolation(
                f"`{path}` holds {numbers} numbers: looks like raw samples (limit "
                f"{MAX_NUMERIC_ARRAY})"
            )
        for index, item in enumerate(value):
            _check_bounds(policy, item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if len(key) > 200:
                raise PolicyViolation(f"`{path}` has a key of {len(key)} characters")
            _check_bounds(policy, item, f"{path}.{key}", depth + 1)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
