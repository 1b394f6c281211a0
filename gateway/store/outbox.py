"""The outbox role of state.db: every message that leaves the gateway, until it is settled
(DESIGN.md sections 3 and 7). Implements `gateway.core.interfaces.Outbox`.

Rows are written in the unit of the change they announce (`insert_prepared`, called by the
ticket role inside its unit) or on their own (`enqueue`). Every write is a unit of state.db's
group commit (`group_commit.py`): the sends and settles of a published batch
(`mark_sent_many`, `settle_many`) and the settles of acks handled together share one
transaction. After every commit that added rows the outbox signals `wait_for_messages`, so the
uplink publishes at once without anyone waking it, and never before the rows are durable. The
per-gateway CloudEvents sequence lives here too: its high-water mark is saved in the
transaction of every message committed after it was handed out.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from gateway.core import json_codec
from gateway.core.clock import Clock
from gateway.core.interfaces import NewMessage
from gateway.core.records import OutboxItem, OutboxKind, UserProperties
from gateway.store.group_commit import GroupCommitter
from gateway.store.json_columns import to_json_array
from gateway.store.sqlite import Database, DatabaseRole, in_chunks

SEQUENCE_COUNTER = "cloudevents_sequence"
_SAVE_COUNTER = """
    INSERT INTO counters (name, value) VALUES (?, ?)
    ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)
"""
# A message whose `coalesce_key` is already queued unsettled is not queued again (rowcount 0).
_INSERT = """
    INSERT INTO outbox (event_id, topic, payload, kind, created_at, ticket_id, content_type,
                        user_properties, coalesce_key)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (coalesce_key) WHERE settled_at IS NULL AND coalesce_key IS NOT NULL DO NOTHING
"""
_TICKET = OutboxKind.TICKET.value
_SETTLE_EVENT = (
    "UPDATE outbox SET settled_at = ? WHERE event_id = ? AND settled_at IS NULL RETURNING *"
)
_SETTLE_TICKET = (
    "UPDATE outbox SET settled_at = ? WHERE ticket_id = ? AND kind = ?"
    " AND settled_at IS NULL AND last_sent_at IS NOT NULL RETURNING *"
)


@dataclass(frozen=True, slots=True)
class PreparedMessages:
    rows: tuple[tuple[Any, ...], ...]
    sequence: int  # the sequence high-water mark their unit saves


@dataclass(frozen=True, slots=True)
class Inserted:
    added: int
    offered: int
    sequence: int  # the sequence high-water mark this transaction saves


class OutboxStore(DatabaseRole):
    def __init__(
        self, db: Database, writer: GroupCommitter, clock: Clock, sequence: int = 0
    ) -> None:
        super().__init__(db)
        self._writer = writer
        self._clock = clock
        self._sequence = sequence  # last number handed out by next_sequence()
        self._saved_sequence = sequence
        self._new = asyncio.Event()
        self.enqueued = 0
        self.coalesced = 0
        self.settled = 0

    @classmethod
    async def load_sequence(cls, db: Database) -> int:
        rows = await db.conn.execute_fetchall(
            "SELECT value FROM counters WHERE name = ?", (SEQUENCE_COUNTER,)
        )
        return next((int(row[0]) for row in rows), 0)

    def next_sequence(self) -> int:
        """Synchronous, for the encoder. A failed commit leaves a gap, which is allowed."""
        self._sequence += 1
        return self._sequence

    async def wait_for_messages(self) -> None:
        await self._new.wait()
        self._new.clear()

    # --- writing, also inside another role's unit of a group commit -------------------------

    def prepare(self, messages: Sequence[NewMessage]) -> PreparedMessages:
        """In the event loop, before the write: the rows, and the sequence high-water mark
        they need saved (every number handed out so far, theirs included; one handed out
        after this point is saved by a later commit)."""
        now = self._clock.now()
        return PreparedMessages(tuple(_row(m, now) for m in messages), self._sequence)

    def insert_prepared(self, conn: sqlite3.Connection, prepared: PreparedMessages) -> Inserted:
        """In the worker thread, inside the caller's unit: add the messages (coalesced ones
        are not) and save the sequence high-water mark. Pass the result to `committed` once
        the unit committed (a `GroupCommitter` `on_commit`)."""
        added = 0
        for row in prepared.rows:
            added += conn.execute(_INSERT, row).rowcount
        if prepared.sequence > self._saved_sequence:
            conn.execute(_SAVE_COUNTER, (SEQUENCE_COUNTER, prepared.sequence))
        return Inserted(added, len(prepared.rows), prepared.sequence)

    def committed(self, inserted: Inserted) -> None:
        """After the unit of `insert_prepared` committed: count, and signal the uplink."""
        self._saved_sequence = max(self._saved_sequence, inserted.sequence)
        self.enqueued += inserted.added
        self.coalesced += inserted.offered - inserted.added
        if inserted.added:
            self._new.set()

    async def enqueue(self, message: NewMessage) -> int | None:
        prepared = self.prepare([message])

        def work(conn: sqlite3.Connection) -> tuple[Inserted, int | None]:
            inserted = self.insert_prepared(conn, prepared)
            if not inserted.added:
                return inserted, None
            row = conn.execute("SELECT seq FROM outbox WHERE event_id = ?", (message.event_id,))
            return inserted, int(row.fetchone()[0])

        _, seq = await self._writer.run(work, lambda done: self.committed(done[0]))
        return seq

    # --- reading -----------------------------------------------------------------------------

    async def due(self, now: float, resend_after: float, limit: int) -> list[OutboxItem]:
        return await self._select(
            "SELECT * FROM outbox WHERE settled_at IS NULL"
            " AND (last_sent_at IS NULL OR last_sent_at <= ?) ORDER BY seq LIMIT ?",
            (now - resend_after, limit),
        )

    async def unsettled(self, limit: int, after_seq: int = 0) -> list[OutboxItem]:
        return await self._select(
            "SELECT * FROM outbox WHERE settled_at IS NULL AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )

    async def get_message(self, event_id: str) -> OutboxItem | None:
        found = await self._select("SELECT * FROM outbox WHERE event_id = ?", (event_id,))
        return found[0] if found else None

    async def get_messages(self, event_ids: Collection[str]) -> dict[str, OutboxItem]:
        found: dict[str, OutboxItem] = {}
        ids = list(dict.fromkeys(event_ids))
        for chunk, marks in in_chunks(ids):
            rows = await self._select(f"SELECT * FROM outbox WHERE event_id IN ({marks})", chunk)
            found.update((item.event_id, item) for item in rows)
        return found

    async def depth(self) -> int:
        rows = await self._read("SELECT COUNT(*) FROM outbox WHERE settled_at IS NULL")
        return int(next(iter(rows))[0])

    async def backlog(self) -> tuple[dict[str, int], float | None]:
        rows = await self._read(
            "SELECT kind, COUNT(*), MIN(created_at) FROM outbox"
            " WHERE settled_at IS NULL GROUP BY kind"
        )
        by_kind = {str(row[0]): int(row[1]) for row in rows}
        oldest = min((float(row[2]) for row in rows), default=None)
        return by_kind, oldest

    # --- delivery ----------------------------------------------------------------------------

    async def mark_sent(self, seq: int, now: float) -> None:
        await self.mark_sent_many([seq], now)

    async def mark_sent_many(self, seqs: Sequence[int], now: float) -> None:
        """Record one send of each message (a published batch), in one unit."""
        if not seqs:
            return
        params = [(now, seq) for seq in seqs]
        await self._writer.run(
            lambda conn: (
                conn.executemany(
                    "UPDATE outbox SET attempts = attempts + 1, last_sent_at = ?"
                    " WHERE seq = ? AND settled_at IS NULL",
                    params,
                ).rowcount
            )
        )

    async def settle(self, seq: int, now: float) -> None:
        await self.settle_many([seq], now)

    async def settle_many(self, seqs: Sequence[int], now: float) -> None:
        """Settle by sequence numbers (PUBACKs of a batch), in one unit."""
        if not seqs:
            return
        params = [(now, seq) for seq in seqs]
        settled = await self._writer.run(
            lambda conn: (
                conn.executemany(
                    "UPDATE outbox SET settled_at = ? WHERE seq = ? AND settled_at IS NULL", params
                ).rowcount
            )
        )
        self.settled += max(0, settled)

    async def settle_event(self, event_id: str, now: float) -> OutboxItem | None:
        return await self._settle_returning(_SETTLE_EVENT, (now, event_id))

    async def settle_events(self, event_ids: Sequence[str], now: float) -> set[str]:
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return set()

        def work(conn: sqlite3.Connection) -> set[str]:
            settled: set[str] = set()
            for chunk, marks in in_chunks(ids):
                rows = conn.execute(
                    f"UPDATE outbox SET settled_at = ? WHERE settled_at IS NULL"
                    f" AND event_id IN ({marks}) RETURNING event_id",
                    (now, *chunk),
                ).fetchall()
                settled.update(row[0] for row in rows)
            return settled

        return await self._writer.run(work, self._count_settled_ids)

    def _count_settled_ids(self, event_ids: set[str]) -> None:
        self.settled += len(event_ids)

    async def settle_ticket(self, ticket_id: str, now: float) -> list[OutboxItem]:
        # Only what was published: a message committed after our last publish cannot have been
        # seen by the central system, and settling it would lose it (docs/TICKETS.md, `ack`).
        def work(conn: sqlite3.Connection) -> list[OutboxItem]:
            rows = conn.execute(_SETTLE_TICKET, (now, ticket_id, _TICKET)).fetchall()
            return sorted((_item(row) for row in rows), key=lambda item: item.seq)

        return await self._writer.run(work, self._count_settled_items)

    async def _settle_returning(self, sql: str, params: Sequence[Any]) -> OutboxItem | None:
        return await self._writer.run(lambda conn: _first(conn, sql, params), self._count_settled)

    def _count_settled(self, item: OutboxItem | None) -> None:
        self.settled += item is not None

    def _count_settled_items(self, items: list[OutboxItem]) -> None:
        self.settled += len(items)

    async def refuse(self, seq: int, now: float) -> None:
        await self._writer.run(
            lambda conn: (
                conn.execute(
                    "UPDATE outbox SET settled_at = ? WHERE seq = ? AND settled_at IS NULL",
                    (now, seq),
                ).rowcount
            )
        )

    async def shed(self, max_depth: int, kinds: Collection[OutboxKind]) -> dict[str, int]:
        """Ticket messages are never passed in `kinds`, so they are never shed."""
        if not kinds:
            return {}
        names = [kind.value for kind in kinds]
        placeholders = ", ".join("?" for _ in names)
        async with self._db.lock, self._db.transaction() as conn:
            rows = await conn.execute_fetchall(
                "SELECT COUNT(*) FROM outbox WHERE settled_at IS NULL"
            )
            excess = int(next(iter(rows))[0]) - max_depth
            if excess <= 0:
                return {}
            shed_rows = await conn.execute_fetchall(
                f"DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox"
                f" WHERE settled_at IS NULL AND kind IN ({placeholders}) ORDER BY seq LIMIT ?)"
                " RETURNING kind",
                (*names, excess),
            )
        counts: dict[str, int] = {}
        for row in shed_rows:
            counts[row[0]] = counts.get(row[0], 0) + 1
        return counts

    async def ticket_messages(self, ticket_id: str) -> list[OutboxItem]:
        """Every message committed for one ticket, settled or not, in commit order (the site
        page shows what the central system received)."""
        return await self._select(
            "SELECT * FROM outbox WHERE ticket_id = ? ORDER BY seq", (ticket_id,)
        )

    async def purge_settled(self, settled_before: float) -> int:
        """Delete settled messages older than a cut-off; returns how many."""
        return await self._write(
            "DELETE FROM outbox WHERE settled_at IS NOT NULL AND settled_at < ?",
            (settled_before,),
        )

    async def _select(self, sql: str, params: Sequence[Any]) -> list[OutboxItem]:
        return [_item(row) for row in await self._read(sql, params)]


def _row(m: NewMessage, now: float) -> tuple[Any, ...]:
    return (
        m.event_id,
        m.topic,
        bytes(m.payload),
        m.kind.value,
        now,
        m.ticket_id,
        m.content_type,
        to_json_array([list(pair) for pair in m.user_properties], "user properties"),
        m.coalesce_key,
    )


def _first(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> OutboxItem | None:
    rows = conn.execute(sql, params).fetchall()
    return _item(rows[0]) if rows else None


def _item(row: aiosqlite.Row | sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        seq=row["seq"],
        event_id=row["event_id"],
        topic=row["topic"],
        payload=bytes(row["payload"]),
        kind=OutboxKind(row["kind"]),
        created_at=row["created_at"],
        attempts=row["attempts"],
        last_sent_at=row["last_sent_at"],
        settled_at=row["settled_at"],
        ticket_id=row["ticket_id"],
        content_type=row["content_type"],
        user_properties=_user_properties(row["user_properties"]),
    )


def _user_properties(text: str) -> UserProperties:
    pairs = tuple(map(tuple, json_codec.loads(text)))
    for name, value in pairs:
        if type(name) is not str or type(value) is not str:
            return tuple((str(name), str(value)) for name, value in pairs)
    return pairs
