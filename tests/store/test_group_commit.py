"""Group commits and batched settles (issue 17 item 5), against a real state.db.

What the issue asks and docs/RELIABILITY.md promises: changes that arrive together share
transactions, yet each keeps its own revision, event and CloudEvent id; a change the database
refuses takes nobody else down; acks handled together settle exactly the messages they name.
The crash half (SIGKILL of a real process during group commits, with a real broker watching
the wire) is `test_group_commit_crash.py`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.core.clock import ManualClock
from gateway.core.errors import StoreError
from gateway.core.interfaces import Command, NewMessage, TicketEvent
from gateway.core.records import OutboxKind, TicketState
from gateway.store import StateDatabase
from gateway.ticketing.commands import TicketCommands
from gateway.ticketing.policy import AssetProfile
from gateway.ticketing.service import TicketService
from tests.ticketing.findings import hot
from tests.ticketing.policies import default_policy
from tests.uplink.helpers import TOPICS, make_ticket
from uplink.events import make_ticket_encoder, source_urn

T0 = 1_714_521_600.0
PUMPS = [f"pump-{i}" for i in range(12)]
# One area and one asset class each: no flood folds these conditions into an incident, and no
# storm group (site, fault code, asset class) holds a second new condition for `group_wait`.
ASSETS = {
    p: AssetProfile(p, f"pump-class-{p}", area=f"area-{p}", tags=(f"{p}.temp",)) for p in PUMPS
}


@pytest.fixture
async def site(tmp_path: Path):
    clock = ManualClock(T0)
    store = await StateDatabase.open(tmp_path / "state.db", clock=clock)
    encode = make_ticket_encoder(TOPICS, source_urn("s", "g"), store.outbox.next_sequence)
    service = TicketService(
        "plant-a", "gw-1", store, encode, clock, assets=ASSETS, policy=default_policy()
    )
    await service.start()
    commands = TicketCommands(service, store.outbox, store.commands, clock)
    yield store, service, commands, clock
    await store.close()


def revisions_and_ids(payloads: list[bytes]) -> list[tuple[int, str]]:
    documents = [json.loads(p) for p in payloads]
    return [(d["data"]["revision"], d["id"]) for d in documents]


async def test_a_burst_of_changes_shares_transactions_but_each_keeps_its_revision_and_id(site):
    store, service, _, clock = site
    await service.on_findings([hot(clock.now(), asset=p) for p in PUMPS])
    opened = store.group_commits.transactions
    clock.advance(5)
    # The faults clear together: one change per ticket (`condition_cleared`, revision 2).
    await service.on_findings([hot(clock.now(), asset=p, active=False) for p in PUMPS])
    cleared = store.group_commits.transactions - opened

    assert 1 <= cleared < len(PUMPS), "changes arriving together share transactions"
    all_ids: set[str] = set()
    for ticket in service.open_tickets():
        events = await store.tickets.ticket_events(ticket.id)
        assert [(e.revision, e.kind) for e in events] == [(1, "opened"), (2, "condition_cleared")]
        messages = await store.outbox.ticket_messages(ticket.id)
        pairs = revisions_and_ids([m.payload for m in messages])
        assert [revision for revision, _ in pairs] == [1, 2]
        all_ids.update(event_id for _, event_id in pairs)
        assert (await store.tickets.get_ticket(ticket.id)).revision == 2
    assert len(all_ids) == 2 * len(PUMPS), "every change has its own CloudEvents id"
    sequences = [json.loads(m.payload)["sequence"] for m in await store.outbox.unsettled(100)]
    assert len(set(sequences)) == len(sequences)


async def test_changes_submitted_together_commit_together_and_a_refused_one_alone(tmp_path):
    store = await StateDatabase.open(tmp_path / "state.db")
    try:

        def message(event_id: str, ticket_id: str) -> NewMessage:
            return NewMessage(event_id, "t", b"{}", OutboxKind.TICKET, ticket_id=ticket_id)

        writes = []
        for i in range(10):
            ticket = make_ticket(f"T-{i}", key=f"k{i}")
            # T-5 reuses the event id of T-4: the database must refuse T-5, and only T-5.
            event_id = "e-4" if i == 5 else f"e-{i}"
            event = TicketEvent(ticket.id, 1, "opened", T0)
            writes.append(
                store.tickets.commit_ticket_change(ticket, [event], [message(event_id, ticket.id)])
            )
        before = store.group_commits.transactions
        outcomes = await asyncio.gather(*writes, return_exceptions=True)

        assert [i for i, o in enumerate(outcomes) if isinstance(o, StoreError)] == [5]
        assert store.group_commits.transactions - before < 10
        stored = {t.id for t in await store.tickets.list_tickets()}
        assert stored == {f"T-{i}" for i in range(10)} - {"T-5"}
        assert await store.tickets.ticket_events("T-5") == []
        assert await store.outbox.ticket_messages("T-5") == []
        assert await store.pragma("integrity_check") == "ok"
    finally:
        await store.close()


async def test_acks_handled_together_settle_exactly_the_acked_messages(site):
    store, service, commands, clock = site
    await service.on_findings([hot(clock.now(), asset=p) for p in PUMPS])
    opened = {m.ticket_id: m for m in await store.outbox.unsettled(100)}
    await store.outbox.mark_sent_many([m.seq for m in opened.values()], clock.now())
    acked = sorted(opened)[:5]
    acks = [
        Command("ack", f"c-{tid}", {"command_id": f"c-{tid}", "event_id": opened[tid].event_id})
        for tid in acked
    ]
    duplicate = Command(
        "ack", "c-dup", {"command_id": "c-dup", "event_id": acks[0].body["event_id"]}
    )
    repeat = acks[1]  # the same command again, inside the same batch
    unknown = Command("ack", "c-unknown", {"command_id": "c-unknown", "event_id": "nope"})
    before = store.group_commits.transactions

    replies = await commands.handle_many([*acks, duplicate, repeat, unknown])

    assert [r.accepted for r in replies] == [True] * 7 + [False]
    assert [r.detail["settled"] for r in replies[:5]] == [[opened[t].event_id] for t in acked]
    assert replies[5].detail["settled"] == [], "an ack of a settled message settles nothing"
    assert replies[6].detail.get("replayed") is True
    unsettled = {m.event_id for m in await store.outbox.unsettled(100)}
    acked_ids = {opened[t].event_id for t in acked}
    assert not acked_ids & unsettled
    assert {m.event_id for m in opened.values()} - acked_ids <= unsettled
    # Each acked ticket moved to ACKNOWLEDGED (its own revision 2 and message), the rest not.
    for ticket in service.open_tickets():
        state = TicketState.ACKNOWLEDGED if ticket.id in acked else TicketState.OPENED
        assert (await store.tickets.get_ticket(ticket.id)).state is state
    opened_ids = {m.event_id for m in opened.values()}
    new_messages = [m for m in await store.outbox.unsettled(100) if m.event_id not in opened_ids]
    assert sorted(m.ticket_id for m in new_messages) == acked
    # Settles, ticket changes and the command log of 7 commands: far fewer transactions.
    assert store.group_commits.transactions - before <= 3
    # The command log remembers the batch: the same ack later is a replay.
    again = await commands.handle(acks[2])
    assert again.detail.get("replayed") is True


async def test_the_settles_and_the_command_log_of_a_batch_of_acks_are_one_write_each(site):
    store, service, commands, clock = site
    await service.on_findings([hot(clock.now(), asset=p) for p in PUMPS])
    opened = await store.outbox.unsettled(5)
    await store.outbox.mark_sent_many([m.seq for m in opened], clock.now())
    acks = [
        Command("ack", f"c-{m.seq}", {"command_id": f"c-{m.seq}", "event_id": m.event_id})
        for m in opened
    ]
    before, transactions_before = store.group_commits.units, store.group_commits.transactions

    replies = await commands.handle_many(acks)

    assert [r.accepted for r in replies] == [True] * 5
    # Per ack a ticket change (ACKNOWLEDGED); one settle of the five messages and one entry
    # in the log for all five, all in one transaction.
    assert store.group_commits.units - before == 5 + 1 + 1
    assert store.group_commits.transactions - transactions_before == 1
    assert set(await store.commands.recall_commands([a.command_id for a in acks])) == {
        a.command_id for a in acks
    }


async def test_a_batch_records_sends_and_puback_settles_exactly(site):
    store, _, _, clock = site
    seqs = [
        await store.outbox.enqueue(NewMessage(f"h-{i}", "t", b"{}", OutboxKind.HEALTH))
        for i in range(6)
    ]
    await store.outbox.settle_many(seqs[:3], clock.now())
    await store.outbox.mark_sent_many(seqs[3:5], clock.now())
    left = await store.outbox.unsettled(100)
    assert [m.seq for m in left] == seqs[3:]
    assert [(m.attempts, m.last_sent_at is not None) for m in left] == [
        (1, True),
        (1, True),
        (0, False),
    ]
    assert store.statistics().messages_settled == 3


@pytest.mark.parametrize("event_first", [True, False])
async def test_acks_by_event_and_by_ticket_in_one_batch_settle_as_in_order(site, event_first):
    """A batch with an ack of one message and an ack naming only its ticket: whichever comes
    first settles the message, and each reply reports what it settled, as one after the other
    would (the acks by event id are settled together, but never after a later ack by ticket)."""
    store, service, commands, clock = site
    await service.on_findings([hot(clock.now(), asset="pump-0")])
    clock.advance(5)
    await service.on_findings([hot(clock.now(), False, asset="pump-0")])
    published = await store.outbox.unsettled(10)
    assert len(published) == 2  # opened, condition_cleared
    await store.outbox.mark_sent_many([m.seq for m in published], clock.now())
    first, second = published
    by_event = Command("ack", "c-e", {"command_id": "c-e", "event_id": first.event_id})
    by_ticket = Command("ack", "c-t", {"command_id": "c-t", "ticket_id": first.ticket_id})

    batch = [by_event, by_ticket] if event_first else [by_ticket, by_event]
    replies = await commands.handle_many(batch)

    settled = {reply.command_id: reply.detail["settled"] for reply in replies}
    if event_first:
        assert settled == {"c-e": [first.event_id], "c-t": [second.event_id]}
    else:
        assert settled == {"c-t": [first.event_id, second.event_id], "c-e": []}
    assert not {first.event_id, second.event_id} & {
        m.event_id for m in await store.outbox.unsettled(10)
    }


async def test_a_unit_that_depends_on_earlier_writes_is_refused_with_any_of_them(tmp_path):
    """`clean_since`: committed with the writes queued before it when none is refused; refused
    unrun when one was, in its own transaction or in an earlier one; others unaffected."""
    store = await StateDatabase.open(tmp_path / "state.db")
    committer = store._writer  # the one group committer of state.db
    try:

        def insert(key: str):  # type: ignore[no-untyped-def]
            return lambda conn: (
                conn.execute("INSERT INTO counters (name, value) VALUES (?, 1)", (key,)).rowcount
            )

        async def counters() -> set[str]:
            return await committer.run(
                lambda conn: {row[0] for row in conn.execute("SELECT name FROM counters")}
            )

        mark = committer.stats.refused
        clean = [committer.submit(insert(f"ok-{i}")) for i in range(3)]
        clean.append(asyncio.ensure_future(committer.run(insert("log-1"), clean_since=mark)))
        await asyncio.gather(*clean)

        mark = committer.stats.refused
        dirty = [committer.submit(insert("ok-0"))]  # a duplicate name: refused
        dirty.append(committer.submit(insert("ok-3")))
        dirty.append(asyncio.ensure_future(committer.run(insert("log-2"), clean_since=mark)))
        outcomes = await asyncio.gather(*dirty, return_exceptions=True)
        assert [isinstance(o, StoreError) for o in outcomes] == [True, False, True]

        # The refusal was in an earlier transaction than the dependent unit's.
        mark = committer.stats.refused
        with pytest.raises(StoreError):
            await committer.run(insert("ok-1"))
        with pytest.raises(StoreError, match="depends on was refused"):
            await committer.run(insert("log-3"), clean_since=mark)
        await committer.run(insert("after"))

        assert {"log-1", "ok-3", "after"} <= await counters()
        assert not {"log-2", "log-3"} & await counters()
    finally:
        await store.close()


async def test_a_refused_change_in_a_batch_of_acks_keeps_the_whole_batch_out_of_the_log(
    tmp_path: Path,
):
    """One ACKNOWLEDGED change of a batch refused by state.db: the batch fails (no reply is
    sent), and the command log keeps none of its commands, so the central system's retry is
    applied again rather than answered from the log; the other changes stand."""
    clock = ManualClock(T0)
    store = await StateDatabase.open(tmp_path / "state.db", clock=clock)
    reuse: list[str] = []
    counter = iter(range(10**6))

    def new_id() -> str:
        return reuse.pop() if reuse else f"id-{next(counter)}"

    encode = make_ticket_encoder(TOPICS, source_urn("s", "g"), store.outbox.next_sequence, new_id)
    service = TicketService(
        "plant-a", "gw-1", store, encode, clock, assets=ASSETS, policy=default_policy()
    )
    await service.start()
    commands = TicketCommands(service, store.outbox, store.commands, clock)
    try:
        await service.on_findings([hot(clock.now(), asset=p) for p in PUMPS[:3]])
        opened = await store.outbox.unsettled(10)
        await store.outbox.mark_sent_many([m.seq for m in opened], clock.now())
        acks = [
            Command("ack", f"c-{i}", {"command_id": f"c-{i}", "event_id": m.event_id})
            for i, m in enumerate(opened)
        ]
        reuse.append(opened[0].event_id)  # the first ACKNOWLEDGED message's id is taken

        with pytest.raises(StoreError):
            await commands.handle_many(acks)

        assert await store.commands.recall_commands([a.command_id for a in acks]) == {}
        states = {t.id: t.state for t in await store.tickets.list_tickets()}
        first = opened[0].ticket_id
        assert states[first] is TicketState.OPENED
        assert {s for tid, s in states.items() if tid != first} == {TicketState.ACKNOWLEDGED}

        replies = await commands.handle_many(acks)  # the central system's retry
        assert [r.accepted for r in replies] == [True] * 3
        assert not any(r.detail.get("replayed") for r in replies)
        assert (await store.tickets.get_ticket(first)).state is TicketState.ACKNOWLEDGED
        assert set(await store.commands.recall_commands([a.command_id for a in acks])) == {
            a.command_id for a in acks
        }
    finally:
        await store.close()
