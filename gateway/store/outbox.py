"""The outbox role of state.db: every message that leaves the gateway, until it is settled
(DESIGN.md sections 3 and 7). Implements `gateway.core.interfaces.Outbox`.

Rows are written in the transaction of the change they announce (`insert` is called by the
ticket role inside its own transaction) or on their own (`enqueue`). After every commit that
added rows the outbox signals `wait_for_messages`, so the uplink publishes at once without
anyone waking it. The per-gateway CloudEvents sequence lives here too: its high-water mark is
saved in the transaction of every message committed after it was handed out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from gateway.core.clock import Clock
from gateway.core.errors import StoreError
from gateway.core.interfaces import NewMessage
from gateway.core.records import OutboxItem, OutboxKind, UserProperties
from gateway.store.json_columns import to_json_array
from gateway.store.sqlite import Database, DatabaseRole

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


@dataclass(frozen=True, slots=True)
class Inserted:
    added: int
    offered: int
    sequence: int  # the sequence high-water mark this transaction saves


class OutboxStore(DatabaseRole):
    def __init__(self, db: Database, clock: Clock, sequence: int = 0) -> None:
        super().__init__(db)
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

    # --- writing, also inside another role's transaction ------------------------------------

    async def insert(self, conn: aiosqlite.Connection, messages: Sequence[NewMessage]) -> Inserted:
        """Inside the caller's transaction: add the messages (coalesced ones are not) and save
        the sequence high-water mark. Pass the result to `committed` once the transaction has
        committed."""
        now = self._clock.now()
        added = 0
        for message in messages:
            cursor = await conn.execute(_INSERT, _row(message, now))
            added += cursor.rowcount
        # The numbers handed out so far, including those of these messages; one handed out by
        # another task after this point is saved by a later commit.
        sequence = self._sequence
        if sequence > self._saved_sequence:
            await conn.execute(_SAVE_COUNTER, (SEQUENCE_COUNTER, sequence))
        return Inserted(added, len(messages), sequence)

    def committed(self, inserted: Inserted) -> None:
        """After the transaction of `insert` committed: count, and signal the uplink."""
        self._saved_sequence = max(self._saved_sequence, inserted.sequence)
        self.enqueued += inserted.added
        self.coalesced += inserted.offered - inserted.added
        if inserted.added:
            self._new.set()

    async def enqueue(self, message: NewMessage) -> int | None:
        async with self._db.lock, self._db.transaction() as conn:
            inserted = await self.insert(conn, [message])
            seq = await self._seq_of(conn, message.event_id) if inserted.added else None
        self.committed(inserted)
        return seq

    @staticmethod
    async def _seq_of(conn: aiosqlite.Connection, event_id: str) -> int:
        rows = list(await conn.execute_fetchall(
            "SELECT seq FROM outbox WHERE event_id = ?", (event_id,)
        ))  # fmt: skip
        if not rows:  # pragma: no cover - the row was inserted in this transaction
            raise StoreError(f"state.db lost the message `{event_id}` it just inserted")
        return int(rows[0][0])

    # --- reading -----------------------------------------------------------------------------

    async def due(self, now: float, resend_after: float, limit: int) -> list[OutboxItem]:
        return await self._select(
            "SELECT * FROM outbox WHERE settled_at IS NULL"
            " AND (last_sent_at IS NULL OR last_sent_at <= ?) ORDER BY seq LIMIT ?",
            (now - resend_after, limit),
        )

    async def unsettled(self, limit: int) -> list[OutboxItem]:
        return await self._select(
            "SELECT * FROM outbox WHERE settled_at IS NULL ORDER BY seq LIMIT ?", (limit,)
        )

    async def get_message(self, event_id: str) -> OutboxItem | None:
        found = await self._select("SELECT * FROM outbox WHERE event_id = ?", (event_id,))
        return found[0] if found else None

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
        await self._write(
            "UPDATE outbox SET attempts = attempts + 1, last_sent_at = ?"
            " WHERE seq = ? AND settled_at IS NULL",
            (now, seq),
        )

    async def settle(self, seq: int, now: float) -> None:
        if await self._write(
            "UPDATE outbox SET settled_at = ? WHERE seq = ? AND settled_at IS NULL", (now, seq)
        ):
            self.settled += 1

    async def settle_event(self, event_id: str, now: float) -> OutboxItem | None:
        items = await self._settle_returning(
            "UPDATE outbox SET settled_at = ? WHERE event_id = ? AND settled_at IS NULL"
            " RETURNING *",
            (now, event_id),
        )
        return items[0] if items else None

    async def settle_ticket(self, ticket_id: str, now: float) -> list[OutboxItem]:
        # Only what was published: a message committed after our last publish cannot have been
        # seen by the central system, and settling it would lose it (docs/TICKETS.md, `ack`).
        return await self._settle_returning(
            "UPDATE outbox SET settled_at = ? WHERE ticket_id = ? AND kind = ?"
            " AND settled_at IS NULL AND last_sent_at IS NOT NULL RETURNING *",
            (now, ticket_id, _TICKET),
        )

    async def _settle_returning(self, sql: str, params: Sequence[Any]) -> list[OutboxItem]:
        async with self._db.lock, self._db.transaction() as conn:
            rows = await conn.execute_fetchall(sql, params)
        items = sorted((_item(row) for row in rows), key=lambda item: item.seq)
        self.settled += len(items)
        return items

    async def refuse(self, seq: int, now: float) -> None:
        await self._write(
            "UPDATE outbox SET settled_at = ? WHERE seq = ? AND settled_at IS NULL", (now, seq)
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


def _item(row: aiosqlite.Row) -> OutboxItem:
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
    return tuple((str(name), str(value)) for name, value in json.loads(text))
