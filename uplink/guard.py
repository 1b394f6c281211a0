"""The egress guard: the one check every outgoing message passes (DESIGN.md section 8).

Raw samples and waveforms stay on site. Rather than trusting every producer to remember that,
the uplink asks this guard about each message just before it leaves: its type must be on the
allow-list, its topic must be one that type may use, its payload must be a JSON object that
fits the type's schema, stay within the type's byte budget, nest no deeper than a few levels,
and carry no array longer than a handful of items. A list of numbers is exactly what a leaked
waveform or sample stream looks like, so numeric arrays get the tightest bound.

What each type may look like is the table of `uplink.messages`, which the contract (the AsyncAPI
document) publishes too: the guard enforces what the contract promises.

A refusal is logged (type, topic, size and reason, never the payload), counted, and the
message is not published. The guard is pure: no I/O, no clock, so it is tested with tables.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import PolicyViolation
from gateway.core.records import OutboxKind
from uplink.messages import MESSAGE_TYPES, JsonType, MessageType
from uplink.topics import Topics

log = logging.getLogger(__name__)

# What a leaked sample stream looks like: a list of numbers. Real evidence has at most a few
# (peak frequencies, harmonics), so anything longer is refused whatever the message type.
MAX_NUMERIC_ARRAY = 16


@dataclass(frozen=True, slots=True)
class GuardStatistics:
    allowed: Mapping[str, int]  # by message type
    refused: Mapping[str, int]  # by message type
    refused_bytes: int


def channel_matcher(base: str, channels: tuple[str, ...]) -> Callable[[str], bool]:
    """The topics of a message type: its channels under `base`, `{name}` being one level."""
    patterns = [
        re.compile(
            "^"
            + re.escape(base + "/")
            + "/".join(
                "[^/+#]+" if re.fullmatch(r"\{\w+\}", level) else re.escape(level)
                for level in channel.split("/")
            )
            + "$"
        )
        for channel in channels
    ]

    def matches(topic: str) -> bool:
        return any(pattern.match(topic) for pattern in patterns)

    return matches


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

    def __init__(
        self, topics: Topics, types: Mapping[OutboxKind, MessageType] = MESSAGE_TYPES
    ) -> None:
        self._policies = dict(types)
        replies = _outside_own_tree(topics)
        self._topics: dict[OutboxKind, Callable[[str], bool]] = {
            kind: channel_matcher(topics.base, m.channels) if m.channels else replies
            for kind, m in types.items()
        }
        self._allowed: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._refused_bytes = 0

    def check(self, kind: OutboxKind, topic: str, payload: bytes) -> None:
        """Raises `PolicyViolation` naming the first rule the message breaks."""
        policy = self._policies.get(kind)
        if policy is None:
            raise PolicyViolation(f"message type `{kind}` is not on the egress allow-list")
        if not self._topics[kind](topic):
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
        if not _within_bounds(policy, document, 1):
            _check_bounds(policy, document, "$", 1)  # walked again to name what breaks them

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


def _check_fields(policy: MessageType, document: Mapping[str, Any]) -> None:
    missing = sorted(policy.required - document.keys())
    if missing:
        raise PolicyViolation(f"`{policy.kind}` message lacks {', '.join(missing)}")
    for key, value in document.items():
        spec = policy.fields.get(key)
        if spec is None:
            extension = policy.extension_key
            if extension is not None and extension.match(key) and _is_scalar(value):
                continue
            raise PolicyViolation(f"field `{key}` is not part of the `{policy.kind}` schema")
        if not _is_type(value, spec.types):
            raise PolicyViolation(
                f"field `{key}` is a {type(value).__name__}, expected {_type_name(spec.types)}"
            )
    for key, required in policy.nested.items():
        inner = document.get(key)
        if not isinstance(inner, dict):
            continue  # its own type was checked above; absent when optional
        for name, spec in required.items():
            if name not in inner:
                raise PolicyViolation(f"`{key}.{name}` is missing")
            if not _is_type(inner[name], spec.types):
                raise PolicyViolation(
                    f"`{key}.{name}` is a {type(inner[name]).__name__}, "
                    f"expected {_type_name(spec.types)}"
                )


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _within_bounds(policy: MessageType, document: Any, depth: int) -> bool:
    """`_check_bounds` without building the path of every value on the way: every message
    leaving is walked, and only a refused one needs to say where it breaks a bound. Walked
    with a stack of the containers only (a string is measured where it is found, a number
    needs nothing), by exact type: the document is what `json.loads` made, only plain `dict`,
    `list`, `str` and scalars."""
    max_depth, max_chars, max_items = (
        policy.max_depth,
        policy.max_string_chars,
        policy.max_array_items,
    )
    if type(document) is str:
        return len(document) <= max_chars
    if type(document) is not dict and type(document) is not list:
        return True
    stack: list[tuple[Any, int]] = [(document, depth)]
    pop, push = stack.pop, stack.append
    while stack:
        container, level = pop()
        if level > max_depth:
            return False
        if type(container) is dict:
            if max(map(len, container), default=0) > 200:  # the keys
                return False
            items = container.values()
        else:
            if len(container) > max_items:
                return False
            if sum(1 for item in container if _is_number(item)) > MAX_NUMERIC_ARRAY:
                return False
            items = container
        for item in items:
            kind = type(item)
            if kind is str:
                if len(item) > max_chars:
                    return False
            elif kind is dict or kind is list:
                push((item, level + 1))
    return True


def _check_bounds(policy: MessageType, value: Any, path: str, depth: int) -> None:
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
