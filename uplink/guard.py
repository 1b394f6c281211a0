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

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core import json_codec
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


class EgressGuard:
    """Checks and counts; `admit` is what the uplink calls before every publish."""

    # Topic verdicts kept per (type, topic): a plant publishes on a few dozen topics, a central
    # system names a few response topics; past this many the memory starts again.
    _MAX_TOPIC_VERDICTS = 4096

    def __init__(
        self, topics: Topics, types: Mapping[OutboxKind, MessageType] = MESSAGE_TYPES
    ) -> None:
        self._policies = {kind: _Compiled(policy) for kind, policy in types.items()}
        replies = _outside_own_tree(topics)
        self._topics: dict[OutboxKind, Callable[[str], bool]] = {
            kind: channel_matcher(topics.base, m.channels) if m.channels else replies
            for kind, m in types.items()
        }
        self._topic_verdicts: dict[tuple[OutboxKind, str], bool] = {}
        self._allowed: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._refused_bytes = 0

    def check(self, kind: OutboxKind, topic: str, payload: bytes) -> None:
        """Raises `PolicyViolation` naming the first rule the message breaks."""
        compiled = self._policies.get(kind)
        if compiled is None:
            raise PolicyViolation(f"message type `{kind}` is not on the egress allow-list")
        if not self._topic_allowed(kind, topic):
            raise PolicyViolation(f"a `{kind}` message may not be published on `{topic}`")
        policy = compiled.policy
        if len(payload) > policy.max_bytes:
            raise PolicyViolation(
                f"{len(payload)} bytes exceed the `{kind}` budget of {policy.max_bytes}"
            )
        try:
            document = json_codec.loads(payload)
        except (UnicodeDecodeError, json_codec.JSONDecodeError) as exc:
            raise PolicyViolation(f"payload is not JSON: {exc.__class__.__name__}") from None
        if not isinstance(document, dict):
            raise PolicyViolation(f"payload is a JSON {type(document).__name__}, not an object")
        _check_fields(compiled, document)
        if not _within_bounds(policy, document, 1):
            _check_bounds(policy, document, "$", 1)  # walked again to name what breaks them

    def _topic_allowed(self, kind: OutboxKind, topic: str) -> bool:
        """The topic rule is a pure function of type and topic, so each verdict is kept."""
        key = (kind, topic)
        verdict = self._topic_verdicts.get(key)
        if verdict is None:
            verdict = self._topics[kind](topic)
            if len(self._topic_verdicts) >= self._MAX_TOPIC_VERDICTS:
                self._topic_verdicts.clear()
            self._topic_verdicts[key] = verdict
        return verdict

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


class _Compiled:
    """A message type's field rules as the check uses them: the required names once, and each
    field's JSON types as exact Python types. The check only sees what `json.loads` made (plain
    `dict`, `list`, `str`, `int`, `float`, `bool`, None, never a subclass), so an exact type
    test judges as `isinstance` would, with bool kept apart from the numbers."""

    __slots__ = ("names", "nested", "policy", "required", "types")

    def __init__(self, policy: MessageType) -> None:
        self.policy = policy
        self.required = policy.required
        self.types = {name: _exact_types(spec.types) for name, spec in policy.fields.items()}
        self.names = {name: _type_name(spec.types) for name, spec in policy.fields.items()}
        self.nested = {
            key: tuple(
                (name, _exact_types(spec.types), _type_name(spec.types))
                for name, spec in required.items()
            )
            for key, required in policy.nested.items()
        }


def _exact_types(types: JsonType) -> frozenset[type]:
    return frozenset(types if isinstance(types, tuple) else (types,))


def _check_fields(compiled: _Compiled, document: Mapping[str, Any]) -> None:
    policy = compiled.policy
    missing = sorted(compiled.required - document.keys())
    if missing:
        raise PolicyViolation(f"`{policy.kind}` message lacks {', '.join(missing)}")
    types = compiled.types
    for key, value in document.items():
        allowed = types.get(key)
        if allowed is None:
            extension = policy.extension_key
            if extension is not None and extension.match(key) and _is_scalar(value):
                continue
            raise PolicyViolation(f"field `{key}` is not part of the `{policy.kind}` schema")
        if type(value) not in allowed:
            raise PolicyViolation(
                f"field `{key}` is a {type(value).__name__}, expected {compiled.names[key]}"
            )
    for key, required in compiled.nested.items():
        inner = document.get(key)
        if type(inner) is not dict:
            continue  # its own type was checked above; absent when optional
        for name, allowed, shown in required:
            if name not in inner:
                raise PolicyViolation(f"`{key}.{name}` is missing")
            if type(inner[name]) not in allowed:
                raise PolicyViolation(
                    f"`{key}.{name}` is a {type(inner[name]).__name__}, expected {shown}"
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
            if len(container) > MAX_NUMERIC_ARRAY and (
                sum(1 for item in container if _is_number(item)) > MAX_NUMERIC_ARRAY
            ):
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
