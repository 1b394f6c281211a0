"""Hostile command payloads for the property tests (issue 11, item 2): what a broken or
malicious central system can publish on `cmd/<verb>`, as bytes.

Each strategy aims at one way in: deep nesting, huge strings and numbers, wrong types,
unicode (lone surrogates, control characters, look-alikes), duplicate keys, NaN/Infinity,
unknown verbs and fields, stale revisions, and well-formed commands with plausible ids so
that the accepting paths run too.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from gateway.ticketing.commands import VERBS as COMMAND_TABLE

# Every verb of the command table: a verb added there is fuzzed too.
VERBS: tuple[str, ...] = tuple(COMMAND_TABLE)
FIELDS = (
    "command_id", "actor", "verb", "event_id", "ticket_id", "central_id", "if_revision",
    "assignee", "team", "resolution", "cause", "repaired", "cancel_reason", "reason",
    "duration_s", "one_shot", "asset", "until", "note",
)  # fmt: skip

# Numbers JSON can spell that Python's json module would read as inf/nan or huge ints.
NASTY_NUMBERS = ("NaN", "Infinity", "-Infinity", "1e309", "-1e309", "1" * 400, "-0", "1e-400")


def topic_verbs() -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.sampled_from(VERBS),
        st.sampled_from(("reboot", "ACK", "ack ", "", "a" * 40, "ack/x")),
        st.text(max_size=12),
        st.none(),
    )


# Text a sender might put anywhere: right, blank, control characters, bidi overrides,
# look-alikes, lone surrogates (escaped by json.dumps), a little random unicode. Drawn from a
# list mostly, since drawing random text character by character is what makes fuzzing slow.
TEXTS: st.SearchStrategy[str] = st.one_of(
    st.sampled_from((
        "j.smith", "mech", "cooler cleaned", "fouling", "parts on order", "WO-1", "cmms",
        "", " ", "\t", "a\nb", "\x00", "\x1b[31m", "\u202eevil", "ﬁx", "é" * 3, "\ud800",
        "x" * 201, "x" * 2001, "T-1", "pump-1",
    )),
    st.text(max_size=6),
)  # fmt: skip


SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXTS,
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def _dumps(document: Any) -> bytes:
    # allow_nan: NaN and Infinity appear as the bare tokens a hostile sender would write; lone
    # surrogates leave as `\ud800` escapes (ensure_ascii).
    return json.dumps(document, allow_nan=True).encode()


@functools.lru_cache(maxsize=8)
def _plausible(
    ticket_ids: tuple[str, ...], event_ids: tuple[str, ...], assets: tuple[str, ...]
) -> dict[str, st.SearchStrategy[Any]]:
    """Per field, a value that could be right (built once: strategies are costly to make)."""
    numbers = st.one_of(st.floats(), st.integers(-10, 2 * 10**9), st.sampled_from((60, 3600)))
    return {
        "command_id": st.one_of(st.from_regex(r"\Ac-[0-9]{1,3}\Z"), TEXTS),
        "actor": st.sampled_from(("cmms", "mallory", "")),
        "verb": st.sampled_from(VERBS),
        "event_id": st.sampled_from([*event_ids, "no-such-event"]),
        "ticket_id": st.sampled_from([*ticket_ids, "T-nope", ""]),
        "central_id": st.sampled_from(("WO-1", "")),
        "if_revision": st.integers(min_value=-2, max_value=12),  # mostly stale
        "assignee": TEXTS,
        "team": TEXTS,
        "resolution": TEXTS,
        "cause": TEXTS,
        "repaired": st.booleans(),
        "cancel_reason": TEXTS,
        "reason": TEXTS,
        "duration_s": numbers,
        "one_shot": st.booleans(),
        "asset": st.sampled_from([*assets, "pump-9"]),
        "until": numbers,
        "note": TEXTS,
    }


# A wrong value that is a container: flat, cheap to draw (deep ones are NESTED's job).
CONTAINERS: st.SearchStrategy[Any] = st.one_of(
    st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=6), SCALARS, max_size=2)
)
_FIELD_SETS = st.lists(st.sampled_from(FIELDS[2:]), max_size=5, unique=True)


@functools.lru_cache(maxsize=8)
def command_bodies(
    ticket_ids: tuple[str, ...] = (),
    event_ids: tuple[str, ...] = (),
    assets: tuple[str, ...] = ("pump-1",),
) -> st.SearchStrategy[dict[str, Any]]:
    """A dict shaped like a command, each field right, wrong or absent; sometimes one more
    field nobody defined."""
    plausible = _plausible(ticket_ids, event_ids, assets)
    values = {
        name: st.one_of(plausible[name], plausible[name], SCALARS, CONTAINERS) for name in FIELDS
    }
    extra = st.dictionaries(st.text(max_size=10), SCALARS, max_size=1)

    @st.composite
    def bodies(draw: st.DrawFn) -> dict[str, Any]:
        body: dict[str, Any] = draw(extra)
        body["command_id"] = draw(values["command_id"])
        body["actor"] = "cmms"
        for name in draw(_FIELD_SETS):
            body[name] = draw(values[name])
        return body

    return bodies()


def _nested(args: tuple[int, tuple[str, str], bool, float]) -> bytes:
    depth, (opener, closer), wrapped, cut = args
    inner = opener * depth + "1" + closer * depth
    text = f'{{"command_id":"c","x":{inner}}}' if wrapped else inner
    if cut < 0.3:
        text = text[: int(len(text) * cut / 0.3)]  # truncated
    return text.encode()


NESTED = st.tuples(
    st.integers(min_value=0, max_value=12_000),
    st.sampled_from((("[", "]"), ('{"a":', "}"), ('[{"b":', "}]"))),
    st.booleans(),
    st.floats(min_value=0, max_value=1),
).map(_nested)


def _huge(args: tuple[int, str, str]) -> bytes:
    size, filler, field = args
    count = size // len(filler.encode())
    return f'{{"command_id":"c","{field}":"{filler * count}"}}'.encode()


HUGE = st.tuples(
    st.integers(min_value=0, max_value=70_000),
    st.sampled_from(("a", '\\"', "é", "[", "\\u0000")),
    st.sampled_from(("x", "assignee", "command_id", "ticket_id")),
).map(_huge)


def _spelled(args: tuple[int, str, str, str]) -> bytes:
    choice, name, number, surrogate = args
    if choice == 0:
        return f'{{"command_id":"c","{name}":1,"{name}":2}}'.encode()
    if choice == 1:
        return f'{{"command_id":"c","actor":"cmms","{name}":{number}}}'.encode()
    return f'{{"command_id":"c{surrogate}","{name}":"x{surrogate}"}}'.encode()


# Duplicate keys, NaN and friends, lone surrogates: spelled by hand, as json.dumps would not.
SPELLED = st.tuples(
    st.integers(min_value=0, max_value=2),
    st.sampled_from(FIELDS),
    st.sampled_from(NASTY_NUMBERS),
    st.sampled_from(("\\ud800", "\\udfff", "\\ud83d")),
).map(_spelled)

ODD = st.sampled_from((b"", b"{}", b"[]", b"null", b'"x"', b"\xef\xbb\xbf{}"))


def payloads(
    ticket_ids: Sequence[str] = (),
    event_ids: Sequence[str] = (),
    assets: Sequence[str] = ("pump-1",),
) -> st.SearchStrategy[bytes]:
    bodies = command_bodies(tuple(ticket_ids), tuple(event_ids), tuple(assets)).map(_dumps)
    return st.one_of(
        bodies, bodies, bodies, bodies,  # shaped like a command: the paths that do work
        NESTED,
        HUGE,
        SPELLED,
        JSON_VALUES.map(_dumps),  # any JSON at all
        st.binary(max_size=200),  # not JSON
        ODD,
    )  # fmt: skip
