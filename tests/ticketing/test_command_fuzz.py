"""Property test of every inbound command path (issue 11, item 2): bytes as they come off
`cmd/<verb>`, through the uplink's envelope (`parse_command`) into the ticket command table,
against a real state.db and ticket service with open tickets.

For every example: no exception escapes; a rejected command changes nothing: no row of
state.db is written (the connection's change counter, and every 100th rejection a comparison
of every row of every table), and the service's memory (open tickets, maintenance, shelving,
flags) is as before; every reply is strict JSON a central system can read.

10 000 examples, about a third of them well-formed commands of each verb (with stale
revisions, wrong ids and one field broken or not), the rest hostile payloads (see
tests/support/command_fuzz.py). About 30 s on a quiet machine.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.clock import ManualClock
from gateway.core.interfaces import Command, CommandReply
from gateway.core.records import Sample, TicketState
from gateway.store import StateDatabase
from gateway.ticketing.commands import TicketCommands
from gateway.ticketing.policy import AssetProfile
from gateway.ticketing.service import TicketService
from tests.support.command_fuzz import JSON_VALUES, SCALARS, TEXTS, VERBS, payloads, topic_verbs
from tests.support.state_dump import dump_state
from tests.ticketing.findings import hot
from tests.ticketing.policies import default_policy
from tests.uplink.helpers import TOPICS
from uplink.commands import RejectedCommand, encode_reply, parse_command
from uplink.events import make_ticket_encoder, source_urn

EXAMPLES = 10_000
FULL_DUMP_EVERY = 100
T0 = 1_714_521_600.0  # 2024-05-01
ASSETS = tuple(f"pump-{n}" for n in range(1, 6))
# Well-formed `maintenance` commands take this one out of service (until year 9999 at the
# edge): were it one of the ticket assets, it would never get a ticket again, and the ticket
# verbs would soon find nothing open to accept.
IN_MAINTENANCE = "press-1"
# Ticket ids are handed out in order; the fuzzer names the first ones (open or closed by then).
TICKET_IDS = tuple(f"T-plant-a-gw-1-20240501-{n:04d}" for n in range(1, 41))
# A well-formed command may name "the k-th ticket open when it arrives" instead: work on one
# ticket (accept, start, hold, resume, confirm after a verified repair) takes several
# commands in a row, which fixed ids stop reaching once their tickets are closed.
OPEN_SLOTS = tuple(f"@open-{k}" for k in range(3))
# Or "an open ticket in a state the verb takes it from" (docs/TICKETS.md, Lifecycle): without
# it, tickets drift into states few verbs accept (IN_PROGRESS, VERIFIED) and stay there.
READY = "@ready"
_WAITING = ("OPENED", "ACKNOWLEDGED", "ASSIGNED", "REOPENED")
READY_STATES: dict[str, tuple[str, ...]] = {
    "assign": _WAITING, "accept": _WAITING, "start": _WAITING,
    "hold": ("ASSIGNED", "IN_PROGRESS"), "resume": ("ON_HOLD",), "confirm": ("VERIFIED",),
    "close": (*_WAITING, "IN_PROGRESS", "ON_HOLD"),
}  # fmt: skip
HOLD_REASONS = st.sampled_from(("parts", "access", "production"))
NOTES = st.sampled_from((None, "on site"))
# Mostly fresh ids, some reused (a replay, or the same id for another command: rejected).
FRESH_IDS = st.uuids().map(lambda u: f"c-{u.hex[:16]}")
COMMAND_IDS = st.one_of(st.from_regex(r"\Ac-[0-9]{1,4}\Z"), FRESH_IDS, FRESH_IDS)
EVENT_IDS = tuple(f"e-{n}" for n in range(1, 200))
VERIFY_S = 60.0


# Around the edges: in range, just outside, far outside.
DURATIONS = st.sampled_from((600, 600.5, 28_800, 28_800.001, 0, -1, 1e-9, 10**12))
UNTILS = st.sampled_from((T0 + 3600, T0 + 0.001, T0, T0 - 60, 0, 253_402_300_799, 253_402_300_800))


def _valid_body(verb: str, draw: st.DrawFn) -> dict[str, Any]:
    ticket = draw(
        st.one_of(st.sampled_from(TICKET_IDS[:12]), st.sampled_from(OPEN_SLOTS), st.just(READY))
    )
    bodies: dict[str, dict[str, Any]] = {
        "ack": draw(st.sampled_from(({"ticket_id": ticket}, {"event_id": draw(
            st.sampled_from(EVENT_IDS[:60]))}, {"ticket_id": ticket, "central_id": "WO-1"}))),
        "assign": {"ticket_id": ticket, "assignee": "j.smith"},
        "close": draw(st.sampled_from(({"ticket_id": ticket, "resolution": "fixed",
                                        "cause_code": "3.4", "remedy_code": "1"},
                                       {"ticket_id": ticket, "resolution": "bearing replaced",
                                        "cause_code": "3.4", "remedy_code": "1",
                                        "repaired": True},
                                       {"ticket_id": ticket, "cancel_reason": "test"}))),
        "accept": _with_note({"ticket_id": ticket}, draw),
        "start": _with_note({"ticket_id": ticket}, draw),
        "hold": _with_note({"ticket_id": ticket, "reason": draw(HOLD_REASONS)}, draw),
        "resume": _with_note({"ticket_id": ticket}, draw),
        "confirm": _with_note({"ticket_id": ticket}, draw),
        "shelve": {"ticket_id": ticket, "reason": "parts", "duration_s": draw(DURATIONS)},
        "unshelve": {"ticket_id": ticket},
        "maintenance": {"asset": IN_MAINTENANCE, "until": draw(UNTILS)},
        "snapshot": draw(st.sampled_from(({"asset": "pump-1"}, {"ticket_id": ticket}))),
        "resync": {},
    }  # fmt: skip
    return bodies[verb]


def _with_note(body: dict[str, Any], draw: st.DrawFn) -> dict[str, Any]:
    note = draw(NOTES)
    return body if note is None else body | {"note": note}


@st.composite
def command_messages(draw: st.DrawFn) -> tuple[str | None, bytes]:
    """A well-formed command of a verb, perhaps stale, perhaps with one field broken."""
    verb = draw(st.sampled_from(VERBS))
    body = {"command_id": draw(COMMAND_IDS), "actor": "cmms"}
    body |= _valid_body(verb, draw)
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        body["if_revision"] = draw(st.integers(min_value=1, max_value=8))  # mostly stale
    mutation = draw(st.integers(min_value=0, max_value=4))
    if mutation == 1 and len(body) > 2:
        del body[draw(st.sampled_from(sorted(set(body) - {"command_id"})))]
    elif mutation == 2:
        body[draw(st.sampled_from(sorted(body)))] = draw(st.one_of(SCALARS, JSON_VALUES))
    elif mutation == 3:
        body[draw(TEXTS)] = draw(SCALARS)
    return verb, json.dumps(body, allow_nan=True).encode()


MESSAGES = st.one_of(
    command_messages(),
    st.tuples(topic_verbs(), payloads(TICKET_IDS, EVENT_IDS, ASSETS)),
    st.tuples(st.sampled_from(VERBS), payloads(TICKET_IDS, EVENT_IDS, ASSETS)),
)


class Plant:
    """The ticketing side of a gateway on one state.db, kept with open tickets."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = ManualClock(T0)
        self.rejected = 0

    async def start(self) -> None:
        self.store = await StateDatabase.open(self.path, clock=self.clock)
        events = itertools.count(1)
        encode = make_ticket_encoder(
            TOPICS, source_urn("plant-a", "gw-1"), self.store.outbox.next_sequence,
            new_id=lambda: f"e-{next(events)}",
        )  # fmt: skip
        # One asset class each: a storm group's `group_wait` would hold the second new
        # condition, and the accepting paths need open tickets.
        assets = {
            a: AssetProfile(a, f"pump-class-{a}", area="utilities", tags=(f"{a}.temp",))
            for a in ASSETS
        }
        assets[IN_MAINTENANCE] = AssetProfile(IN_MAINTENANCE, "press", area="utilities")
        # A short verification window: a repair reported by `close` is verified (and can be
        # signed off with `confirm`) after a minute of the asset's samples.
        policy = default_policy(verification_window_s=VERIFY_S)
        self.service = TicketService("plant-a", "gw-1", self.store, encode, self.clock,
                                     assets=assets, policy=policy)  # fmt: skip
        self.commands = TicketCommands(
            self.service, self.store.outbox, self.store.commands, self.clock,
            actors=frozenset({"cmms"}),
        )  # fmt: skip
        await self.service.start()

    async def keep_tickets_open(self) -> None:
        """Commands close tickets; open new ones so the accepting paths keep running. A
        repair being verified gets a minute of normal samples: VERIFIED, ready for `confirm`."""
        for ticket in self.service.open_tickets():
            if ticket.state is TicketState.VERIFYING:
                tag, start = f"{ticket.asset}.temp", self.clock.now()
                self.clock.advance(VERIFY_S)
                await self.service.observe_samples(
                    [Sample(tag, start, 60.0), Sample(tag, start + VERIFY_S, 60.0)]
                )
        open_assets = {t.asset for t in self.service.open_tickets()}
        missing = [
            a for a in ASSETS if a not in open_assets and self.service.in_maintenance(a) is None
        ]
        if missing:
            # Episodes a chatter window apart, the timers run: no ticket stays CHATTERING.
            self.clock.advance(self.service.policy.chatter_window_s + 1)
            await self.service.advance_timers()
        for asset in missing:
            # A new episode (cleared, raised again): a closed ticket is reopened, a
            # cancelled one followed by a new ticket. Raised only, its condition would
            # stay the episode the central system already closed.
            self.clock.advance(1)
            await self.service.on_finding(hot(self.clock.now(), False, asset=asset))
            self.clock.advance(1)
            await self.service.on_finding(hot(self.clock.now(), asset=asset))
        for item in await self.store.outbox.unsettled(50):
            if item.attempts == 0:  # as if published, so an ack by ticket settles them
                await self.store.outbox.mark_sent(item.seq, self.clock.now())

    def memory(self) -> tuple[Any, ...]:
        ledger = self.service._ledger
        return (
            sorted((t.id, t.revision, t.state) for t in self.service.open_tickets()),
            dict(ledger.maintenance),
            dict(ledger.shelves),
            {k: frozenset(v) for k, v in ledger.flags.items() if v},
        )

    async def check(self, verb: str | None, payload: bytes) -> None:
        await self.keep_tickets_open()
        conn = self.store._db.conn
        changes, memory = conn.total_changes, self.memory()
        full = self.rejected % FULL_DUMP_EVERY == 0
        before = dump_state(self.path) if full else None
        payload = self.name_open_tickets(payload, verb)
        parsed = parse_command(verb, payload, "central/replies", b"corr")
        if isinstance(parsed, RejectedCommand):
            reply: CommandReply = parsed.reply()
        else:
            assert isinstance(parsed, Command)
            reply = await self.commands.handle(parsed)
        strict = json.loads(encode_reply(reply, verb), parse_constant=_refuse_constant)
        assert strict["accepted"] is reply.accepted
        if reply.accepted:
            return
        self.rejected += 1
        assert conn.total_changes == changes, f"rejected ({reply.reason}) but state.db changed"
        assert self.memory() == memory, f"rejected ({reply.reason}) but memory changed"
        if before is not None:
            assert dump_state(self.path) == before

    def name_open_tickets(self, payload: bytes, verb: str | None) -> bytes:
        """`@open-k` -> the id of the k-th ticket open now, `@ready` -> the first open one in
        a state the verb applies to (an id never used when there is none)."""
        if b'"@' not in payload:
            return payload
        tickets = self.service.open_tickets()
        ready = READY_STATES.get(verb or "")
        fit = [t.id for t in tickets if ready is None or t.state.value in ready]
        payload = payload.replace(
            f'"{READY}"'.encode(), json.dumps(fit[0] if fit else "T-none-ready").encode()
        )
        open_ids = [t.id for t in tickets]
        for k, slot in enumerate(OPEN_SLOTS):
            ticket_id = open_ids[k] if k < len(open_ids) else "T-none-open"
            payload = payload.replace(f'"{slot}"'.encode(), json.dumps(ticket_id).encode())
        return payload


def _refuse_constant(name: str) -> Any:
    raise AssertionError(f"a reply carried {name}, which is not JSON")


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    # On tmpfs when there is one: the property is about content, not about fsync speed.
    shm = Path("/dev/shm")
    if shm.is_dir():
        with tempfile.TemporaryDirectory(dir=shm) as folder:
            yield Path(folder)
    else:
        yield tmp_path


def test_no_inbound_command_escapes_or_changes_state_when_rejected(state_dir: Path):
    loop = asyncio.new_event_loop()
    plant = Plant(state_dir / "state.db")
    loop.run_until_complete(plant.start())
    accepted_verbs: set[str] = set()

    @settings(max_examples=EXAMPLES, derandomize=True)  # the same 10 000 in every run
    @given(message=MESSAGES)
    def check(message: tuple[str | None, bytes]) -> None:
        verb, payload = message
        before = plant.rejected
        loop.run_until_complete(plant.check(verb, payload))
        if plant.rejected == before and verb is not None:
            accepted_verbs.add(verb)

    try:
        check()
    finally:
        loop.run_until_complete(plant.store.close())
        loop.close()
    # The accepting path of every verb ran too, not only rejections.
    assert set(VERBS) - accepted_verbs == set(), "verbs whose accepting path never ran"
