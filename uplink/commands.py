"""The envelope of inbound commands, `cmd/<verb>` (DESIGN.md section 7).

The uplink checks only what every command shares, as bytes arrive from the network, hostile
until proven otherwise:

- the topic names a verb (one lower-case word; which verbs exist is the handler's business);
- the payload is at most `MAX_COMMAND_BYTES`, checked before anything reads it;
- it nests at most `MAX_NESTING` arrays/objects deep, found by a scan of the bytes before any
  recursive parsing (a 10 KB `[[[[...` must not reach the JSON parser's recursion);
- it is strict JSON in UTF-8: one object, no duplicate keys, no NaN/Infinity, no number that
  overflows (1e309) or has more digits than a 64-bit integer, no lone surrogates in text;
- it carries `command_id`, a printable string of at most `MAX_ID_CHARS`;
- the MQTT 5 response topic (if any) is a topic name we can publish to, and the correlation
  data fits `MAX_CORRELATION_BYTES`.

Parsing never raises: a command that fails becomes a `RejectedCommand` with a reason a
central-system integrator can act on. The body's fields are validated by the ticketing
command table against the verb's schema, not here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gateway.core import json_codec
from gateway.core.interfaces import Command, CommandReply

MAX_COMMAND_BYTES = 64 * 1024
MAX_NESTING = 8
MAX_ID_CHARS = 200
MAX_INTEGER_DIGITS = 19  # a signed 64-bit integer; larger ones are not ids or revisions
MAX_TOPIC_CHARS = 1024
MAX_CORRELATION_BYTES = 1024

_VERB = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_PRINTABLE_ID = re.compile(r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$")
# Outside strings, the bytes that matter for nesting; inside one, the rest of it up to and
# including its closing quote (escapes skipped).
_STRUCTURAL = re.compile(rb'[\[\]{}"]')
_STRING_REST = re.compile(rb'(?:[^"\\]++|\\.)*+"', re.DOTALL)
_OPEN = frozenset(b"[{")
_QUOTE = ord('"')


@dataclass(frozen=True, slots=True)
class RejectedCommand:
    """A command refused at the envelope; `command_id` and `verb` when they could be read.

    `response_topic` is None when the one given cannot be published to (no reply then)."""

    reason: str
    verb: str | None = None
    command_id: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None

    def reply(self) -> CommandReply:
        return CommandReply(command_id=self.command_id or "", accepted=False, reason=self.reason)


class _NotAccepted(Exception):
    """Raised by the JSON hooks: the document is JSON but not JSON we accept."""


def parse_command(
    verb: str | None,
    payload: bytes,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
) -> Command | RejectedCommand:
    """`verb` comes from the topic (`cmd/<verb>`), the rest from the MQTT message."""
    reply_to = response_topic if _publishable(response_topic) else None
    correlation = correlation_data
    if correlation is not None and len(correlation) > MAX_CORRELATION_BYTES:
        correlation = None

    def reject(reason: str, command_id: str | None = None) -> RejectedCommand:
        return RejectedCommand(reason, verb, command_id, reply_to, correlation)

    if verb is None or not _VERB.match(verb):
        shown = "" if verb is None else ascii(verb[:40])
        return reject(f"the topic names no command verb {shown}".rstrip())
    if response_topic is not None and reply_to is None:
        return reject("the response topic is not a topic name (empty, wildcard or too long)")
    if correlation_data is not None and correlation is None:
        return reject(f"correlation data longer than {MAX_CORRELATION_BYTES} bytes")
    if len(payload) > MAX_COMMAND_BYTES:
        return reject(f"payload of {len(payload)} bytes exceeds {MAX_COMMAND_BYTES}")
    if nesting_exceeds(payload, MAX_NESTING):
        return reject(f"payload nests deeper than {MAX_NESTING} levels")
    try:
        body = strict_json(payload)
    except _NotAccepted as exc:
        return reject(f"payload is not accepted JSON: {exc}")
    except UnicodeDecodeError as exc:
        return reject(f"payload is not JSON in UTF-8: {exc.reason} at byte {exc.start}")
    except json.JSONDecodeError as exc:
        return reject(f"payload is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    if not isinstance(body, dict):
        return reject(f"payload must be a JSON object, not {_json_type(body)}")
    command_id = body.get("command_id")
    if not isinstance(command_id, str) or not _PRINTABLE_ID.match(command_id):
        return reject("`command_id` must be a non-empty printable string")
    if len(command_id) > MAX_ID_CHARS:
        return reject(f"`command_id` is longer than {MAX_ID_CHARS} characters")
    return Command(
        verb=verb,
        command_id=command_id,
        body=body,
        response_topic=reply_to,
        correlation_data=correlation,
    )


def nesting_exceeds(payload: bytes, limit: int) -> bool:
    """Whether arrays/objects nest deeper than `limit`, brackets inside strings not counted.

    A linear scan that cannot recurse: outside strings it visits only brackets and quotes,
    and a whole string is skipped by one regex match (possessive, so it never backtracks).
    Malformed input gets some answer; the JSON parser rejects it afterwards anyway."""
    depth = 0
    position = 0
    while (found := _STRUCTURAL.search(payload, position)) is not None:
        byte = payload[found.start()]
        position = found.end()
        if byte == _QUOTE:
            rest = _STRING_REST.match(payload, position)
            if rest is None:
                return False  # an unterminated string: not JSON, the parser says so
            position = rest.end()
        elif byte in _OPEN:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def strict_json(payload: bytes) -> Any:
    """`json.loads` of UTF-8 text, refusing what Python's parser lets through but JSON does not
    have or a consumer could misread. Call only on input whose nesting has been bounded.

    Raises `UnicodeDecodeError`, `json.JSONDecodeError` or `_NotAccepted`."""
    document = json.loads(
        payload.decode("utf-8"),
        object_pairs_hook=_unique_keys,
        parse_constant=_no_constant,
        parse_float=_finite_float,
        parse_int=_bounded_int,
    )
    for text in _texts(document):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _NotAccepted("text with a lone surrogate (`\\ud800`...) is not Unicode") from None
    return document


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8259 leaves duplicate names to the parser; two readers of one command could then
    # disagree on its meaning, so it is refused.
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _NotAccepted(f"duplicate key {key[:40]!a}")
        document[key] = value
    return document


def _no_constant(name: str) -> Any:
    raise _NotAccepted(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotAccepted(f"number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _NotAccepted(f"integer of {len(text)} digits is out of range")
    return int(text)


def _texts(value: Any) -> Iterator[str]:
    """Every string in a parsed document, keys included (nesting is bounded by the caller)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"


def _publishable(topic: str | None) -> bool:
    return (
        topic is not None
        and 0 < len(topic) <= MAX_TOPIC_CHARS
        and not any(c in topic for c in "+#\x00")
    )


def encode_reply(reply: CommandReply, verb: str | None) -> bytes:
    """Strict JSON: a number JSON cannot carry (a NaN in a snapshot's figures) becomes null.
    `dumps_compact` writes it so; only when the standard library must encode (an integer
    beyond 64 bits in the detail) is the detail walked for it first."""
    document: dict[str, Any] = {
        "command_id": reply.command_id,
        "verb": verb,
        "accepted": reply.accepted,
        "reason": reply.reason,
        "detail": dict(reply.detail),
    }
    try:
        return json_codec.dumps_compact(document, default=str)
    except ValueError:
        document["detail"] = _finite(document["detail"])
        return json_codec.dumps_compact(document, default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


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
