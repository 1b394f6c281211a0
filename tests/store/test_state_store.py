"""state.db on a real file: pragmas, atomic ticket changes, outbox semantics, durability."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace

import pytest

from gateway.core.clock import ManualClock
from gateway.core.errors import StoreError
from gateway.core.interfaces import NewMessage, TicketEvent
from gateway.core.records import OutboxKind, Priority, Ticket, TicketState
from gateway.store import StateDatabase
from gateway.store.state_schema import STATE_MIGRATIONS

T0 = 1_700_000_000.0


def ticket(ticket_id: str = "T-1", revision: int = 1, **changes) -> Ticket:
    base = Ticket(
        id=ticket_id,
        key="s/pump-1/threshold.high/threshold:hot",
        site="s",
        asset="pump-1",
        fault_code="threshold.high",
        detector="threshold:hot",
        priority=Priority.P2,
        state=TicketState.OPENED,
        revision=revision,
        opened_at=T0,
        first_seen=T0,
        last_seen=T0,
        occurrences=1,
        peak_value=85.0,
        message="pump-1.bearing_temp is 85 °C, above its high limit of 80 °C.",
        evidence={"features": {"value": 85.0}, "level": "high"},
    )
    return replace(base, **changes)


def event(ticket_id: str = "T-1", revision: int = 1, kind: str = "opened") -> TicketEvent:
    return TicketEvent(ticket_id, revision, kind, T0 + revision, {"priority": "P2"})


def message(event_id: str, ticket_id: str | None = "T-1", kind=OutboxKind.TICKET) -> NewMessage:
    return NewMessage(
        event_id, f"f/s/g/tickets/{event_id}", b'{"id":"%s"}' % event_id.encode(), kind, ticket_id
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def store(tmp_path, clock):
    s = await StateDatabase.open(tmp_path / "state.db", clock=clock)
    yield s
    await s.close()


async def test_runs_wal_with_synchronous_full(store):
    assert await store.pragma("journal_mode") == "wal"
    assert await store.pragma("synchronous") == 2
    assert await store.pragma("busy_timeout") == 5000
    assert -512 <= await store.pragma("cache_size") < 0  # KiB, below SQLite's 2 MiB default
    assert await store.pragma("integrity_check") == "ok"


async def test_records_its_schema_version(tmp_path, store):
    with sqlite3.connect(tmp_path / "state.db") as raw:
        latest = STATE_MIGRATIONS[-1].version
        assert raw.execute("SELECT MAX(version) FROM schema_version").fetchone() == (latest,)


async def test_committed_change_survives_close_and_reopen(tmp_path, store, clock):
    await store.tickets.commit_ticket_change(ticket(), [event()], [message("e1")])
    await store.close()
    reopened = await StateDatabase.open(tmp_path / "state.db", clock=clock)
    try:
        assert await reopened.tickets.get_ticket("T-1") == ticket()
        assert await reopened.tickets.load_open_tickets() == [ticket()]
        assert await reopened.tickets.ticket_events("T-1") == [event()]
        (item,) = await reopened.outbox.unsettled(10)
        assert (item.event_id, item.ticket_id, item.kind, item.created_at) == (
            "e1",
            "T-1",
            OutboxKind.TICKET,
            T0,
        )
        assert item.payload == b'{"id":"e1"}'
    finally:
        await reopened.close()


async def test_failure_mid_commit_writes_nothing(store):
    await store.outbox.enqueue(message("taken", ticket_id=None, kind=OutboxKind.STATUS))
    # Ticket and event go in first; the second message collides with an existing event id,
    # so the transaction fails after two successful statements.
    with pytest.raises(StoreError, match="UNIQUE"):
        await store.tickets.commit_ticket_change(
            ticket(), [event()], [message("fresh"), message("taken")]
        )
    assert await store.tickets.get_ticket("T-1") is None
    assert await store.tickets.ticket_events("T-1") == []
    assert [i.event_id for i in await store.outbox.unsettled(10)] == ["taken"]
    assert store.statistics().commit_failures == 1
    # The store is usable afterwards: no transaction left open.
    await store.tickets.commit_ticket_change(ticket(), [event()], [message("fresh")])
    assert await store.outbox.depth() == 2


async def test_duplicate_revision_rolls_back_the_ticket_update(store):
    await store.tickets.commit_ticket_change(ticket(), [event()], [message("e1")])
    updated = ticket(revision=2, occurrences=2)
    with pytest.raises(StoreError):
        await store.tickets.commit_ticket_change(updated, [event(revision=1)], [message("e2")])
    assert await store.tickets.get_ticket("T-1") == ticket()
    assert await store.outbox.depth() == 1


async def test_refuses_a_change_that_does_not_raise_the_revision(store):
    await store.tickets.commit_ticket_change(ticket(revision=2), [event(revision=2)], [])
    with pytest.raises(StoreError, match="not newer"):
        await store.tickets.commit_ticket_change(
            ticket(revision=2, occurrences=9), [event(revision=3, kind="updated")], []
        )
    assert (await store.tickets.get_ticket("T-1")).occurrences == 1


async def test_database_allows_one_open_ticket_per_key(store):
    await store.tickets.commit_ticket_change(ticket("T-1"), [event("T-1")], [])
    with pytest.raises(StoreError, match="UNIQUE"):
        await store.tickets.commit_ticket_change(ticket("T-2"), [event("T-2")], [])
    closed = ticket("T-1", revision=2, state=TicketState.CLOSED)
    await store.tickets.commit_ticket_change(closed, [event("T-1", 2, "closed")], [])
    await store.tickets.commit_ticket_change(ticket("T-2"), [event("T-2")], [])
    assert [t.id for t in await store.tickets.load_open_tickets()] == ["T-2"]
    assert [t.id for t in await store.tickets.list_tickets()] == ["T-1", "T-2"]
    assert [t.id for t in await store.tickets.list_tickets(open_only=True)] == ["T-2"]


async def test_outbox_due_resend_and_settle(store, clock):
    seqs = [await store.outbox.enqueue(message(f"e{i}")) for i in range(3)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert [i.event_id for i in await store.outbox.due(T0, 30.0, 10)] == ["e0", "e1", "e2"]
    assert [i.event_id for i in await store.outbox.due(T0, 30.0, 2)] == ["e0", "e1"]

    await store.outbox.mark_sent(seqs[0], T0 + 1)
    assert [i.event_id for i in await store.outbox.due(T0 + 30.9, 30.0, 10)] == ["e1", "e2"]
    due = await store.outbox.due(T0 + 31, 30.0, 10)
    assert [i.event_id for i in due] == ["e0", "e1", "e2"]
    assert (due[0].attempts, due[0].last_sent_at) == (1, T0 + 1)

    await store.outbox.mark_sent(seqs[0], T0 + 31)
    (again,) = [i for i in await store.outbox.unsettled(10) if i.seq == seqs[0]]
    assert (again.attempts, again.last_sent_at) == (2, T0 + 31)

    await store.outbox.settle(seqs[0], T0 + 32)
    await store.outbox.settle(seqs[0], T0 + 99)  # idempotent: the first settlement stands
    assert [i.event_id for i in await store.outbox.due(T0 + 1000, 30.0, 10)] == ["e1", "e2"]
    assert [i.event_id for i in await store.outbox.unsettled(10)] == ["e1", "e2"]
    assert (await store.outbox.get_message("e0")).settled_at == T0 + 32
    assert await store.outbox.depth() == 2
    # A late PUBACK after settlement changes nothing.
    await store.outbox.mark_sent(seqs[0], T0 + 100)
    assert (await store.outbox.get_message("e0")).attempts == 2


async def test_settle_events_settles_each_named_message_once(store):
    """The acks of a batch settled in one unit: the ids settled by this call, unknown and
    already settled ones left out; more ids than one `IN (...)` takes."""
    ids = [f"e{i}" for i in range(1203)]
    await store.tickets.commit_ticket_change(ticket(), [event()], [message(e) for e in ids])
    await store.outbox.settle_event("e7", T0 + 1)
    settled = await store.outbox.settle_events([*ids, "e3", "never-sent"], T0 + 5)
    assert settled == set(ids) - {"e7"}
    assert (await store.outbox.get_message("e7")).settled_at == T0 + 1
    assert (await store.outbox.get_message("e1202")).settled_at == T0 + 5
    assert await store.outbox.depth() == 0
    assert await store.outbox.settle_events(ids, T0 + 6) == set()
    assert await store.outbox.settle_events([], T0 + 6) == set()
    assert store.statistics().messages_settled == len(ids)


async def test_settle_event_is_idempotent(store):
    await store.tickets.commit_ticket_change(ticket(), [event()], [message("e1")])
    settled = await store.outbox.settle_event("e1", T0 + 5)
    assert settled is not None
    assert (settled.event_id, settled.ticket_id, settled.settled_at) == ("e1", "T-1", T0 + 5)
    assert await store.outbox.settle_event("e1", T0 + 6) is None
    assert await store.outbox.settle_event("never-sent", T0 + 6) is None
    assert (await store.outbox.get_message("e1")).settled_at == T0 + 5
    assert await store.outbox.depth() == 0
    assert store.statistics().messages_settled == 1


async def test_duplicate_event_id_is_refused_on_enqueue(store):
    await store.outbox.enqueue(message("e1"))
    with pytest.raises(StoreError):
        await store.outbox.enqueue(message("e1"))
    assert await store.outbox.depth() == 1


async def test_purge_settled_keeps_unsettled(store):
    a = await store.outbox.enqueue(message("a"))
    await store.outbox.enqueue(message("b"))
    await store.outbox.settle(a, T0)
    assert await store.outbox.purge_settled(T0 + 1) == 1
    assert [i.event_id for i in await store.outbox.unsettled(10)] == ["b"]
    # AUTOINCREMENT: a purged sequence number is never handed out again.
    assert await store.outbox.enqueue(message("c")) > a


async def test_sequence_keeps_rising_across_restarts(tmp_path, store, clock):
    numbers = [store.outbox.next_sequence() for _ in range(3)]
    assert numbers == [1, 2, 3]
    await store.tickets.commit_ticket_change(ticket(), [event()], [message("e1")])
    await store.close()
    reopened = await StateDatabase.open(tmp_path / "state.db", clock=clock)
    try:
        assert reopened.outbox.next_sequence() == 4
    finally:
        await reopened.close()


async def test_read_only_open_reads_and_refuses_writes(tmp_path, store):
    await store.tickets.commit_ticket_change(ticket(), [event()], [message("e1")])
    reader = await StateDatabase.open(tmp_path / "state.db", read_only=True)
    try:
        assert [t.id for t in await reader.tickets.list_tickets()] == ["T-1"]
        with pytest.raises(StoreError):
            await reader.outbox.enqueue(message("e2"))
    finally:
        await reader.close()
    assert await store.outbox.depth() == 1


async def test_read_only_open_of_a_missing_file_fails_and_creates_nothing(tmp_path):
    path = tmp_path / "missing" / "state.db"
    with pytest.raises(StoreError, match="cannot open"):
        await StateDatabase.open(path, read_only=True)
    assert not path.exists()


async def test_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        raw.execute("INSERT INTO schema_version VALUES (99)")
    with pytest.raises(StoreError, match="schema version 99"):
        await StateDatabase.open(path)


async def test_use_after_close_is_a_store_error(tmp_path, clock):
    s = await StateDatabase.open(tmp_path / "state.db", clock=clock)
    await s.close()
    await s.close()  # idempotent
    with pytest.raises(StoreError):
        await s.outbox.depth()
    with pytest.raises(StoreError):
        await s.outbox.enqueue(message("e1"))


async def test_cancelled_commits_are_all_or_nothing_and_leave_the_store_usable(store):
    # Cancel a commit after 0 to ~9 ms: wherever that lands (BEGIN queued, between statements,
    # during COMMIT), the ticket is either fully there or fully absent. A cancellation during
    # COMMIT may still commit; the caller then reloads from state.db.
    for turns in range(30):
        ticket_id = f"T-{turns}"
        key_ticket = ticket(ticket_id, key=f"k{turns}")
        task = asyncio.create_task(
            store.tickets.commit_ticket_change(
                key_ticket,
                [event(ticket_id)],
                [message(f"a{turns}", ticket_id), message(f"b{turns}", ticket_id)],
            )
        )
        await asyncio.sleep(turns * 0.0003)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        stored = await store.tickets.get_ticket(ticket_id)
        events = await store.tickets.ticket_events(ticket_id)
        messages = [m for m in await store.outbox.unsettled(100) if m.ticket_id == ticket_id]
        assert (stored is None, len(events), len(messages)) in [(True, 0, 0), (False, 1, 2)]
    # Still usable: no transaction was left open behind a cancellation.
    await store.tickets.commit_ticket_change(ticket("T-last", key="last"), [event("T-last")], [])
    assert await store.tickets.get_ticket("T-last") is not None
    assert await store.pragma("integrity_check") == "ok"


# --- issues 10 and 11: roles, the outbox signal, stored properties, coalescing ---------------


async def test_each_role_implements_its_one_interface(store):
    from gateway.core import interfaces

    roles = {
        "tickets": interfaces.TicketRepository,
        "outbox": interfaces.Outbox,
        "commands": interfaces.CommandLog,
        "noise": interfaces.NoiseStateJournal,
    }
    for name, protocol in roles.items():
        role = getattr(store, name)
        wanted = {m for m in dir(protocol) if not m.startswith("_")}
        assert wanted <= set(dir(role)), (name, wanted - set(dir(role)))
        others = [p for n, p in roles.items() if n != name]
        # No role also serves another role's interface.
        for other in others:
            theirs = {m for m in dir(other) if not m.startswith("_")}
            assert not theirs <= set(dir(role)), (name, other.__name__)


async def test_a_commit_signals_the_outbox_without_anyone_waking_it(store):
    waiter = asyncio.create_task(store.outbox.wait_for_messages())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await store.tickets.commit_ticket_change(ticket(), [event()], [message("e1")])
    await asyncio.wait_for(waiter, 1)
    # Consumed: the next wait blocks until the next commit, a plain enqueue this time.
    again = asyncio.create_task(store.outbox.wait_for_messages())
    await asyncio.sleep(0.01)
    assert not again.done()
    await store.outbox.enqueue(message("h1", None, OutboxKind.HEALTH))
    await asyncio.wait_for(again, 1)


async def test_a_failed_commit_does_not_signal(store):
    await store.outbox.enqueue(message("taken", None, OutboxKind.STATUS))
    await store.outbox.wait_for_messages()
    waiter = asyncio.create_task(store.outbox.wait_for_messages())
    with pytest.raises(StoreError):
        await store.tickets.commit_ticket_change(ticket(), [event()], [message("taken")])
    await asyncio.sleep(0.01)
    assert not waiter.done()
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)


async def test_an_outbox_row_keeps_the_mqtt_properties_of_its_message(store):
    props = (("ce_id", "e1"), ("ce_type", "com.edge-gateway.ticket.opened"), ("ticket", "T-1"))
    built = replace(message("e1"), content_type="application/cloudevents+json",
                    user_properties=props)  # fmt: skip
    await store.tickets.commit_ticket_change(ticket(), [event()], [built])
    item = await store.outbox.get_message("e1")
    assert item is not None
    assert (item.content_type, item.user_properties) == ("application/cloudevents+json", props)


async def test_a_coalesced_message_is_not_queued_twice_while_one_is_unsettled(store, clock):
    first = replace(message("r1"), coalesce_key="resync:T-1")
    second = replace(message("r2"), coalesce_key="resync:T-1")
    other = replace(message("r3", "T-2"), coalesce_key="resync:T-2")
    assert await store.outbox.enqueue(first) is not None
    assert await store.outbox.enqueue(second) is None
    assert await store.outbox.enqueue(other) is not None
    assert [i.event_id for i in await store.outbox.unsettled(10)] == ["r1", "r3"]
    assert store.statistics().messages_coalesced == 1
    await store.outbox.settle_event("r1", clock.now())
    assert await store.outbox.enqueue(second) is not None  # the first was acknowledged


async def test_settle_ticket_settles_only_what_was_published(store, clock):
    seqs = [await store.outbox.enqueue(message(f"e{n}")) for n in range(3)]
    await store.outbox.enqueue(message("x", "T-2"))
    for seq in seqs[:2]:
        assert seq is not None
        await store.outbox.mark_sent(seq, clock.now())
    settled = await store.outbox.settle_ticket("T-1", clock.now())
    assert [i.event_id for i in settled] == ["e0", "e1"]
    assert [i.event_id for i in await store.outbox.unsettled(10)] == ["e2", "x"]
    assert await store.outbox.settle_ticket("T-1", clock.now()) == []


async def test_rows_from_before_schema_5_are_migrated_without_properties(tmp_path, clock):
    """An outbox row committed by the previous schema keeps NULL properties; the uplink derives
    them from the payload for such rows (tests/uplink/test_service.py)."""
    from gateway.store.sqlite import Database, Synchronous

    path = tmp_path / "state.db"
    old = await Database.open(
        path, label="state.db", synchronous=Synchronous.FULL, busy_timeout_ms=1000,
        migrations=STATE_MIGRATIONS[:4],
    )  # fmt: skip
    await old.conn.execute(
        "INSERT INTO outbox (event_id, topic, payload, kind, created_at, ticket_id)"
        " VALUES ('old', 't', x'7b7d', 'ticket', 1.0, 'T-1')"
    )
    await old.close()
    db = await StateDatabase.open(path, clock=clock)
    try:
        (item,) = await db.outbox.unsettled(10)
        assert (item.event_id, item.content_type, item.user_properties) == ("old", None, ())
    finally:
        await db.close()


async def test_a_flood_saved_before_schema_7_keeps_its_members_folded_and_quieted(tmp_path, clock):
    """Issue 13: a flood's members were one JSON array; migration 7 moves them to one row each
    (`storm_members`), so a flood in progress across the upgrade is loaded as it was saved."""
    from gateway.store.sqlite import Database, Synchronous

    path = tmp_path / "state.db"
    old = await Database.open(
        path, label="state.db", synchronous=Synchronous.FULL, busy_timeout_ms=1000,
        migrations=[m for m in STATE_MIGRATIONS if m.version <= 5],
    )  # fmt: skip
    members = (
        '[{"key":"a","asset":"press-1","fault_code":"threshold.high","first_seen":10.0,'
        '"arrivals":3},{"key":"b","asset":"press-2","fault_code":"threshold.high",'
        '"first_seen":11.0,"arrivals":1}]'
    )
    await old.conn.execute(
        "INSERT INTO area_floods (area, started_at, incident_key, published_members,"
        " published_at, members, folded, quieted) VALUES ('hall', 9.0, 'k', 2, 12.0, ?,"
        ' \'["b"]\', \'["a","t"]\')',
        (members,),
    )
    await old.conn.commit()
    await old.close()
    db = await StateDatabase.open(path, clock=clock)
    try:
        (flood,) = await db.noise.load_floods()
        assert (flood.area, flood.started_at, flood.incident_key) == ("hall", 9.0, "k")
        assert [dict(m) for m in flood.members] == [
            {"key": "a", "asset": "press-1", "fault_code": "threshold.high",
             "first_seen": 10.0, "arrivals": 3},
            {"key": "b", "asset": "press-2", "fault_code": "threshold.high",
             "first_seen": 11.0, "arrivals": 1},
        ]  # fmt: skip
        assert flood.folded == ("b",)
        assert sorted(flood.quieted) == ["a", "t"]  # `t`: a quieted ticket, not a member
    finally:
        await db.close()


def test_stored_user_properties_are_read_back_as_pairs_of_text():
    from gateway.store import outbox

    assert outbox._user_properties('[["id","e1"],["revision","2"]]') == (
        ("id", "e1"),
        ("revision", "2"),
    )
    # A value stored as a JSON number (written by hand, or by an older schema) is still text.
    assert outbox._user_properties('[["id","e1"],["revision",2]]') == (
        ("id", "e1"),
        ("revision", "2"),
    )
    assert outbox._user_properties("[]") == ()
