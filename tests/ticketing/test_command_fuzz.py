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
# Ticket ids are handed out in order; the fuzzer names the first ones (open or closed by then).
TICKET_IDS = tuple(f"T-plant-a-gw-1-20240501-{n:04d}" for n in range(1, 41))
EVENT_IDS = tuple(f"e-{n}" for n in range(1, 200))


# Around the edges: in range, just outside, far outside.
DURATIONS = st.sampled_from((600, 600.5, 28_800, 28_800.001, 0, -1, 1e-9, 10**12))
UNTILS = st.sampled_from((T0 + 3600, T0 + 0.001, T0, T0 - 60, 0, 253_402_300_799, 253_402_300_800))


def _valid_body(verb: str, draw: st.DrawFn) -> dict[str, Any]:
    ticket = draw(st.sampled_from(TICKET_IDS[:12]))
    bodies: dict[str, dict[str, Any]] = {
        "ack": draw(st.sampled_from(({"ticket_id": ticket}, {"event_id": draw(
            st.sampled_from(EVENT_IDS[:60]))}, {"ticket_id": ticket, "central_id": "WO-1"}))),
        "assign": {"ticket_id": ticket, "assignee": "j.smith"},
        "close": draw(st.sampled_from(({"ticket_id": ticket, "resolution": "fixed",
                                        "cause_code": "3.4", "remedy_code": "1"},
                                       {"ticket_id": ticket, "cancel_reason": "test"}))),
        "shelve": {"ticket_id": ticket, "reason": "parts", "duration_s": draw(DURATIONS)},
        "unshelve": {"ticket_id": ticket},
        "maintenance": {"asset": draw(st.sampled_from(ASSETS)), "until": draw(UNTILS)},
        "snapshot": draw(st.sampled_from(({"asset": "pump-1"}, {"ticket_id": ticket}))),
        "resync": {},
    }  # fmt: skip
    return bodies[verb]


@st.composite
def command_messages(draw: st.DrawFn) -> tuple[str | None, bytes]:
    """A well-formed command of a verb, perhaps stale, perhaps with one field broken."""
    verb = draw(st.sampled_from(VERBS))
    body = {"command_id": draw(st.from_regex(r"\Ac-[0-9]{1,4}\Z")), "actor": "cmms"}
    body |= _valid_body(verb, draw)
    if draw(st.booleans()):
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
        self.service = TicketService("plant-a", "gw-1", self.store, encode, self.clock,
                                     assets=assets, policy=default_policy())  # fmt: skip
        self.commands = TicketCommands(
            self.service, self.store.outbox, self.store.commands, self.clock,
            actors=frozenset({"cmms"}),
        )  # fmt: skip
        await self.service.start()

    async def keep_tickets_open(self) -> None:
        """Commands close tickets; open new ones so the accepting paths keep running."""
        open_assets = {t.asset for t in self.service.open_tickets()}
        for asset in ASSETS:
            if asset not in open_assets and self.service.in_maintenance(asset) is None:
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
    assert accepted_verbs == set(VERBS)
