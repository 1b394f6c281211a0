"""The ticket role of state.db: tickets and their event history (DESIGN.md section 6).
Implements `gateway.core.interfaces.TicketRepository`.

A ticket change, its events, the messages announcing it and the shelving it sets or ends are
written in one unit (the transactional outbox): the uplink can only publish what was
committed, and a crash never leaves a ticket change without its message or the reverse. The
outbox and noise-state roles write their rows inside this unit. Units queued together are
committed in one transaction by state.db's group commit (`group_commit.py`), each in its own
savepoint: one change refused rolls back alone.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from gateway.core.errors import StoreError
from gateway.core.interfaces import NewMessage, TicketEvent
from gateway.core.records import Priority, Shelving, Ticket, TicketState
from gateway.store.group_commit import GroupCommitter
from gateway.store.json_columns import to_json
from gateway.store.noise_state import NoiseStateStore
from gateway.store.outbox import Inserted, OutboxStore
from gateway.store.sqlite import Database, DatabaseRole

_TICKET_COLUMNS = (
    "id, key, site, asset, fault_code, detector, priority, state, revision, opened_at,"
    " first_seen, last_seen, occurrences, peak_value, message, condition_active, central_id,"
    " acknowledged_at, evidence, respond_by, resolve_by, closed_at, attributes"
)

# Insert a new ticket or move an existing one forward. The WHERE makes a write that does not
# raise the revision a no-op (rowcount 0), which we turn into an error: two writers racing on
# one ticket, or a replayed change, must never overwrite a newer state with an older one.
_UPSERT_TICKET = f"""
    INSERT INTO tickets ({_TICKET_COLUMNS})
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        priority = excluded.priority,
        state = excluded.state,
        revision = excluded.revision,
        last_seen = excluded.last_seen,
        first_seen = excluded.first_seen,
        occurrences = excluded.occurrences,
        peak_value = excluded.peak_value,
        message = excluded.message,
        condition_active = excluded.condition_active,
        central_id = excluded.central_id,
        acknowledged_at = excluded.acknowledged_at,
        evidence = excluded.evidence,
        respond_by = excluded.respond_by,
        resolve_by = excluded.resolve_by,
        closed_at = excluded.closed_at,
        attributes = excluded.attributes
    WHERE tickets.revision < excluded.revision
"""

_OPEN_STATES = tuple(s.value for s in TicketState if s.is_open)


@dataclass(frozen=True, slots=True)
class TicketChange:
    """One ticket change as the store writes it: the ticket at its new revision, the events
    of that change, the messages announcing them, and the shelving it sets or ends."""

    ticket: Ticket
    events: Sequence[TicketEvent]
    messages: Sequence[NewMessage]
    shelve: Shelving | None = None
    unshelve: str | None = None


@dataclass(frozen=True, slots=True)
class TicketStoreStatistics:
    ticket_commits: int
    commit_failures: int


class TicketStore(DatabaseRole):
    def __init__(
        self, db: Database, writer: GroupCommitter, outbox: OutboxStore, noise: NoiseStateStore
    ) -> None:
        super().__init__(db)
        self._writer = writer
        self._outbox = outbox
        self._noise = noise
        self._commits = 0
        self._failures = 0

    def statistics(self) -> TicketStoreStatistics:
        return TicketStoreStatistics(self._commits, self._failures)

    async def load_open_tickets(self) -> list[Ticket]:
        placeholders = ", ".join("?" for _ in _OPEN_STATES)
        return await self._select(
            f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE state IN ({placeholders})"
            " ORDER BY opened_at, id",
            _OPEN_STATES,
        )

    async def get_ticket(self, ticket_id: str) -> Ticket | None:
        found = await self._select(
            f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE id = ?", (ticket_id,)
        )
        return found[0] if found else None

    async def list_tickets(self, *, open_only: bool = False) -> list[Ticket]:
        """Every ticket (or only open ones), oldest first; for the `tickets` CLI."""
        if open_only:
            return await self.load_open_tickets()
        return await self._select(f"SELECT {_TICKET_COLUMNS} FROM tickets ORDER BY opened_at, id")

    async def last_closed_ticket(self, key: str) -> Ticket | None:
        found = await self._select(
            f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE key = ? AND closed_at IS NOT NULL"
            " ORDER BY closed_at DESC LIMIT 1",
            (key,),
        )
        return found[0] if found else None

    async def tickets_since(self, ts: float) -> list[Ticket]:
        """Open tickets and those opened or closed at `ts` or later, oldest first: what the
        outcome KPIs and eradication read at start."""
        placeholders = ", ".join("?" for _ in _OPEN_STATES)
        return await self._select(
            f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE state IN ({placeholders})"
            " OR closed_at >= ? OR opened_at >= ? ORDER BY opened_at, id",
            (*_OPEN_STATES, ts, ts),
        )

    async def ticket_events(self, ticket_id: str) -> list[TicketEvent]:
        """The history of one ticket by revision."""
        rows = await self._read(
            "SELECT ticket_id, revision, kind, ts, detail FROM ticket_events"
            " WHERE ticket_id = ? ORDER BY revision",
            (ticket_id,),
        )
        return [
            TicketEvent(
                ticket_id=row["ticket_id"],
                revision=row["revision"],
                kind=row["kind"],
                ts=row["ts"],
                detail=json.loads(row["detail"]),
            )
            for row in rows
        ]

    async def commit_ticket_change(
        self,
        ticket: Ticket,
        events: Sequence[TicketEvent],
        messages: Sequence[NewMessage],
        *,
        shelve: Shelving | None = None,
        unshelve: str | None = None,
    ) -> None:
        """Write the ticket, its new events and their messages atomically, or nothing, and
        return once that is durable.

        `shelve` saves a shelved condition and `unshelve` forgets the one of a dedup key in the
        same transaction, so the `shelved` / `unshelved` event and the flag that survives a
        restart never disagree.

        Raises `StoreError` when the database refuses (disk full, a duplicate event id or
        revision, a ticket revision that does not move forward); nothing is written then.
        """
        work, committed = self._unit(
            TicketChange(ticket, tuple(events), tuple(messages), shelve, unshelve)
        )
        try:
            await self._writer.run(work, committed)
        except StoreError:
            self._failures += 1
            raise

    def _unit(
        self, change: TicketChange
    ) -> tuple[Callable[[sqlite3.Connection], Inserted], Callable[[Inserted], None]]:
        """The change as a unit of the group commit: changes queued together share a
        transaction, each in its own savepoint, each with its own revision, events and
        messages."""
        # Serialise before the write: a value JSON cannot carry is our bug, not the disk's,
        # and should not hold the database locked.
        ticket = change.ticket
        try:
            ticket_row = _ticket_row(ticket)
            event_rows = [
                (e.ticket_id, e.revision, e.kind, e.ts, to_json(e.detail, "event detail"))
                for e in change.events
            ]
        except StoreError:
            self._failures += 1
            raise
        prepared = self._outbox.prepare(change.messages)
        outbox, noise = self._outbox, self._noise

        def work(conn: sqlite3.Connection) -> Inserted:
            if conn.execute(_UPSERT_TICKET, ticket_row).rowcount != 1:
                raise StoreError(
                    f"ticket `{ticket.id}` revision {ticket.revision} is not newer than"
                    " the stored one; refusing to overwrite it"
                )
            conn.executemany(
                "INSERT INTO ticket_events (ticket_id, revision, kind, ts, detail)"
                " VALUES (?, ?, ?, ?, ?)",
                event_rows,
            )
            inserted = outbox.insert_prepared(conn, prepared)
            noise.write_shelving(conn, shelve=change.shelve, unshelve=change.unshelve)
            return inserted

        def committed(inserted: Inserted) -> None:
            outbox.committed(inserted)
            self._commits += 1

        return work, committed

    async def _select(self, sql: str, params: Sequence[Any] = ()) -> list[Ticket]:
        return [_ticket(row) for row in await self._read(sql, params)]


def _ticket_row(t: Ticket) -> tuple[Any, ...]:
    return (
        t.id,
        t.key,
        t.site,
        t.asset,
        t.fault_code,
        t.detector,
        t.priority.value,
        t.state.value,
        t.revision,
        t.opened_at,
        t.first_seen,
        t.last_seen,
        t.occurrences,
        t.peak_value,
        t.message,
        int(t.condition_active),
        t.central_id,
        t.acknowledged_at,
        to_json(t.evidence, f"evidence of ticket `{t.id}`"),
        t.respond_by,
        t.resolve_by,
        t.closed_at,
        to_json(t.attributes, f"attributes of ticket `{t.id}`"),
    )


def _ticket(row: aiosqlite.Row) -> Ticket:
    return Ticket(
        id=row["id"],
        key=row["key"],
        site=row["site"],
        asset=row["asset"],
        fault_code=row["fault_code"],
        detector=row["detector"],
        priority=Priority(row["priority"]),
        state=TicketState(row["state"]),
        revision=row["revision"],
        opened_at=row["opened_at"],
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        occurrences=row["occurrences"],
        peak_value=row["peak_value"],
        message=row["message"],
        condition_active=bool(row["condition_active"]),
        central_id=row["central_id"],
        acknowledged_at=row["acknowledged_at"],
        evidence=json.loads(row["evidence"]),
        respond_by=row["respond_by"],
        resolve_by=row["resolve_by"],
        closed_at=row["closed_at"],
        attributes=json.loads(row["attributes"]),
    )
