"""state.db: tickets, ticket events and the outbox, durable (DESIGN.md sections 3, 6 and 9).

`StateStore` implements `TicketRepository` and `Outbox` from `gateway.core.interfaces`.
A ticket change, its events and the messages announcing it are written in one
`BEGIN IMMEDIATE ... COMMIT` (the transactional outbox): the uplink can only publish what was
committed, and a crash never leaves a ticket change without its message or the reverse.
WAL with `synchronous=FULL`, so a committed change survives power loss, not only a crash.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Awaitable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from gateway.core.clock import Clock, SystemClock
from gateway.core.errors import StoreError
from gateway.core.interfaces import NewMessage, TicketEvent
from gateway.core.records import (
    ChatterRecord,
    FloodArrival,
    FloodRecord,
    MaintenanceWindow,
    OutboxItem,
    OutboxKind,
    Priority,
    Shelving,
    Ticket,
    TicketState,
)
from gateway.store.sqlite import Database, DatabaseStore, Synchronous
from gateway.store.state_schema import STATE_MIGRATIONS

log = logging.getLogger(__name__)

_R = TypeVar("_R")

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

_SEQUENCE_COUNTER = "cloudevents_sequence"
_SAVE_COUNTER = """
    INSERT INTO counters (name, value) VALUES (?, ?)
    ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)
"""


_SAVE_SHELVING = """
    INSERT INTO shelved_conditions (key, until, reason, actor, set_at) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET
        until = excluded.until,
        reason = excluded.reason,
        actor = excluded.actor,
        set_at = excluded.set_at
"""
_DELETE_SHELVING = "DELETE FROM shelved_conditions WHERE key = ?"

_SAVE_FLOOD = """
    INSERT INTO area_floods (area, started_at, incident_key, published_members, published_at,
                             members, folded, quieted)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (area) DO UPDATE SET
        started_at = excluded.started_at,
        incident_key = excluded.incident_key,
        published_members = excluded.published_members,
        published_at = excluded.published_at,
        members = excluded.members,
        folded = excluded.folded,
        quieted = excluded.quieted
"""


@dataclass(frozen=True, slots=True)
class StateStoreStatistics:
    ticket_commits: int
    commit_failures: int
    messages_enqueued: int
    messages_settled: int


class StateStore(DatabaseStore):
    """Durable tickets and outbox in one SQLite file. Use `await StateStore.open(path)`."""

    def __init__(self, db: Database, clock: Clock, sequence: int = 0) -> None:
        super().__init__(db)
        self._clock = clock
        self._sequence = sequence  # last number handed out by next_sequence()
        self._saved_sequence = sequence
        self._ticket_commits = 0
        self._commit_failures = 0
        self._enqueued = 0
        self._settled = 0

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        clock: Clock | None = None,
        read_only: bool = False,
        busy_timeout_ms: int = 5000,
    ) -> StateStore:
        """Open state.db, creating and migrating it as needed.

        `read_only=True` is for readers beside the running daemon, such as the `tickets` CLI:
        a missing file is an error there, not an empty database to leave behind, and every
        write method raises `StoreError`.
        """
        db = await Database.open(
            path,
            label="state.db",
            synchronous=Synchronous.FULL,
            busy_timeout_ms=busy_timeout_ms,
            migrations=STATE_MIGRATIONS,
            read_only=read_only,
        )
        try:
            rows = await db.conn.execute_fetchall(
                "SELECT value FROM counters WHERE name = ?", (_SEQUENCE_COUNTER,)
            )
        except sqlite3.Error as exc:
            await db.close()
            raise StoreError(f"cannot read the counters of state.db: {exc}") from exc
        sequence = next((int(row[0]) for row in rows), 0)
        return cls(db, clock or SystemClock(), sequence)

    @property
    def path(self) -> Path:
        return self._db.path

    def statistics(self) -> StateStoreStatistics:
        return StateStoreStatistics(
            ticket_commits=self._ticket_commits,
            commit_failures=self._commit_failures,
            messages_enqueued=self._enqueued,
            messages_settled=self._settled,
        )

    def next_sequence(self) -> int:
        """The next per-gateway CloudEvents sequence number; synchronous, for the encoder.

        It rises across restarts: the high-water mark is saved in the same transaction as
        every message committed after it was handed out, so no committed message can carry a
        number that is handed out again. A failed commit leaves a gap, which is allowed.
        """
        self._sequence += 1
        return self._sequence

    async def pragma(self, name: str) -> object:
        """Read one PRAGMA (journal_mode, synchronous, integrity_check...); for checks and tests."""
        async with self._db.lock:
            return await self._guarded_read(self._db.pragma(name))

    # --- TicketRepository -------------------------------------------------------------------

    async def load_open_tickets(self) -> list[Ticket]:
        placeholders = ", ".join("?" for _ in _OPEN_STATES)
        return await self._select_tickets(
            f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE state IN ({placeholders})"
            " ORDER BY opened_at, id",
            _OPEN_STATES,
        )

    async def get_ticket(self, ticket_id: str) -> Ticket | None:
        found = await self._select_tickets(
            f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE id = ?", (ticket_id,)
        )
        return found[0] if found else None

    async def list_tickets(self, *, open_only: bool = False) -> list[Ticket]:
        """Every ticket (or only open ones), oldest first; for the `tickets` CLI."""
        if open_only:
            return await self.load_open_tickets()
        return await self._select_tickets(
            f"SELECT {_TICKET_COLUMNS} FROM tickets ORDER BY opened_at, id", ()
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
        """Write the ticket, its new events and their messages atomically, or nothing.

        `shelve` saves a shelved condition and `unshelve` forgets the one of a dedup key in the
        same transaction, so the `shelved` / `unshelved` event and the flag that survives a
        restart never disagree.

        Raises `StoreError` when the database refuses (disk full, a duplicate event id or
        revision, a ticket revision that does not move forward); nothing is written then.
        """
        # Serialise before taking the write lock: a value JSON cannot carry is our bug, not
        # the disk's, and should not hold the database locked.
        ticket_row = _ticket_row(ticket)
        event_rows = [
            (e.ticket_id, e.revision, e.kind, e.ts, _to_json(e.detail, "event detail"))
            for e in events
        ]
        now = self._clock.now()
        message_rows = [_message_row(m, now) for m in messages]
        async with self._db.lock:
            try:
                async with self._db.transaction() as conn:
                    cursor = await conn.execute(_UPSERT_TICKET, ticket_row)
                    if cursor.rowcount != 1:
                        raise StoreError(
                            f"ticket `{ticket.id}` revision {ticket.revision} is not newer than"
                            " the stored one; refusing to overwrite it"
                        )
                    await conn.executemany(
                        "INSERT INTO ticket_events (ticket_id, revision, kind, ts, detail)"
                        " VALUES (?, ?, ?, ?, ?)",
                        event_rows,
                    )
                    await conn.executemany(
                        "INSERT INTO outbox (event_id, topic, payload, kind, created_at,"
                        " ticket_id) VALUES (?, ?, ?, ?, ?, ?)",
                        message_rows,
                    )
                    if unshelve is not None:
                        await conn.execute(_DELETE_SHELVING, (unshelve,))
                    if shelve is not None:
                        await conn.execute(_SAVE_SHELVING, _shelving_row(shelve))
                    sequence = await self._save_sequence(conn)
            except StoreError:
                self._commit_failures += 1
                raise
        self._saved_sequence = sequence
        self._ticket_commits += 1
        self._enqueued += len(message_rows)

    async def last_closed_ticket(self, key: str) -> Ticket | None:
        """The most recently closed (or cancelled) ticket of a dedup key; for recurrence."""
        found = await self._select_tickets(
            f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE key = ? AND closed_at IS NOT NULL"
            " ORDER BY closed_at DESC LIMIT 1",
            (key,),
        )
        return found[0] if found else None

    # --- command log (issue 5: a replayed command has no second effect) --------------------

    async def recall_command(self, command_id: str) -> Mapping[str, Any] | None:
        """The reply stored for a command id seen before, or None for a new command."""
        rows = await self._read("SELECT reply FROM commands WHERE command_id = ?", (command_id,))
        for row in rows:
            reply: Mapping[str, Any] = json.loads(row["reply"])
            return reply
        return None

    async def remember_command(
        self, command_id: str, verb: str, reply: Mapping[str, Any], now: float
    ) -> None:
        """Store the reply of a handled command; a second call for the same id keeps the first."""
        await self._write(
            "INSERT INTO commands (command_id, verb, received_at, reply) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (command_id) DO NOTHING",
            (command_id, verb, now, _to_json(reply, "command reply")),
        )

    # --- shelving and maintenance mode (issue 5: they survive a restart) -------------------

    async def save_shelving(self, shelving: Shelving) -> None:
        """Save a shelved condition on its own (one whose ticket is not changing)."""
        await self._write(_SAVE_SHELVING, _shelving_row(shelving))

    async def clear_shelving(self, key: str) -> None:
        """Forget the shelving of a dedup key; a no-op when there is none."""
        await self._write(_DELETE_SHELVING, (key,))

    async def load_shelvings(self, now: float) -> list[Shelving]:
        """The shelved conditions still in force at `now`; timed ones that ran out while the
        gateway was down are deleted, not returned. One-shot ones (until NULL) always stay."""
        async with self._db.lock, self._db.transaction() as conn:
            await conn.execute(
                "DELETE FROM shelved_conditions WHERE until IS NOT NULL AND until <= ?", (now,)
            )
            rows = await conn.execute_fetchall(
                "SELECT key, until, reason, actor, set_at FROM shelved_conditions ORDER BY key"
            )
        return [
            Shelving(
                key=row["key"],
                until=row["until"],
                reason=row["reason"],
                by=row["actor"],
                set_at=row["set_at"],
            )
            for row in rows
        ]

    async def save_maintenance(self, asset: str, until: float, by: str, set_at: float) -> None:
        """Put an asset in maintenance mode until `until`; a second call moves the end."""
        await self._write(
            "INSERT INTO asset_maintenance (asset, until, actor, set_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (asset) DO UPDATE SET until = excluded.until,"
            " actor = excluded.actor, set_at = excluded.set_at",
            (asset, until, by, set_at),
        )

    async def clear_maintenance(self, asset: str) -> None:
        await self._write("DELETE FROM asset_maintenance WHERE asset = ?", (asset,))

    async def load_maintenance(self, now: float) -> list[MaintenanceWindow]:
        """The assets still in maintenance mode at `now`; ended windows are deleted."""
        async with self._db.lock, self._db.transaction() as conn:
            await conn.execute("DELETE FROM asset_maintenance WHERE until <= ?", (now,))
            rows = await conn.execute_fetchall(
                "SELECT asset, until, actor, set_at FROM asset_maintenance ORDER BY asset"
            )
        return [
            MaintenanceWindow(
                asset=row["asset"], until=row["until"], by=row["actor"], set_at=row["set_at"]
            )
            for row in rows
        ]

    # --- floods and chattering (issue 5: they survive a restart) ---------------------------

    async def save_noise_state(
        self,
        *,
        floods: Sequence[FloodRecord] = (),
        floods_ended: Collection[str] = (),
        arrivals: Sequence[FloodArrival] = (),
        forget_arrivals_before: float | None = None,
        chattering: Sequence[ChatterRecord] = (),
        chatter_ended: Collection[str] = (),
    ) -> None:
        """In one transaction: save (replace) the given floods and chattering conditions,
        forget the ended ones, add the new arrivals and drop the arrivals older than
        `forget_arrivals_before`."""
        flood_rows = [_flood_row(f) for f in floods]
        chatter_rows = [(c.key, _to_json_array(list(c.raises), "raise times")) for c in chattering]
        arrival_rows = [(a.area, a.ts, a.key, a.asset, a.fault_code) for a in arrivals]
        async with self._db.lock, self._db.transaction() as conn:
            await conn.executemany(
                "DELETE FROM area_floods WHERE area = ?", [(a,) for a in floods_ended]
            )
            await conn.executemany(_SAVE_FLOOD, flood_rows)
            await conn.executemany(
                "INSERT INTO flood_arrivals (area, ts, key, asset, fault_code)"
                " VALUES (?, ?, ?, ?, ?)",
                arrival_rows,
            )
            if forget_arrivals_before is not None:
                await conn.execute(
                    "DELETE FROM flood_arrivals WHERE ts < ?", (forget_arrivals_before,)
                )
            await conn.executemany(
                "DELETE FROM chattering_conditions WHERE key = ?", [(k,) for k in chatter_ended]
            )
            await conn.executemany(
                "INSERT INTO chattering_conditions (key, raises) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET raises = excluded.raises",
                chatter_rows,
            )

    async def load_floods(self) -> list[FloodRecord]:
        rows = await self._read(
            "SELECT area, started_at, incident_key, published_members, published_at,"
            " members, folded, quieted FROM area_floods ORDER BY area"
        )
        return [
            FloodRecord(
                area=row["area"],
                started_at=row["started_at"],
                incident_key=row["incident_key"],
                published_members=row["published_members"],
                published_at=row["published_at"],
                members=tuple(json.loads(row["members"])),
                folded=tuple(json.loads(row["folded"])),
                quieted=tuple(json.loads(row["quieted"])),
            )
            for row in rows
        ]

    async def load_flood_arrivals(self, since: float) -> list[FloodArrival]:
        """The arrivals at or after `since`, oldest first."""
        rows = await self._read(
            "SELECT area, ts, key, asset, fault_code FROM flood_arrivals"
            " WHERE ts >= ? ORDER BY ts, id",
            (since,),
        )
        return [
            FloodArrival(
                area=row["area"],
                ts=row["ts"],
                key=row["key"],
                asset=row["asset"],
                fault_code=row["fault_code"],
            )
            for row in rows
        ]

    async def load_chattering(self) -> list[ChatterRecord]:
        rows = await self._read("SELECT key, raises FROM chattering_conditions ORDER BY key")
        return [
            ChatterRecord(key=row["key"], raises=tuple(float(t) for t in json.loads(row["raises"])))
            for row in rows
        ]

    # --- Outbox ----------------------------------------------------------------------------

    async def enqueue(self, message: NewMessage) -> int:
        """Commit one message that announces no ticket change (status, health, replies)."""
        row = _message_row(message, self._clock.now())
        async with self._db.lock, self._db.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO outbox (event_id, topic, payload, kind, created_at, ticket_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
            seq = cursor.lastrowid
            sequence = await self._save_sequence(conn)
        self._saved_sequence = sequence
        self._enqueued += 1
        if seq is None:  # pragma: no cover - SQLite always reports the rowid of an INSERT
            raise StoreError("state.db did not report the sequence number of a new message")
        return seq

    async def due(self, now: float, resend_after: float, limit: int) -> list[OutboxItem]:
        """Unsettled items never sent, or last sent at least `resend_after` seconds ago."""
        return await self._select_outbox(
            "SELECT * FROM outbox WHERE settled_at IS NULL"
            " AND (last_sent_at IS NULL OR last_sent_at <= ?) ORDER BY seq LIMIT ?",
            (now - resend_after, limit),
        )

    async def unsettled(self, limit: int) -> list[OutboxItem]:
        """Every unsettled item in order, sent or not (resent after a reconnect)."""
        return await self._select_outbox(
            "SELECT * FROM outbox WHERE settled_at IS NULL ORDER BY seq LIMIT ?", (limit,)
        )

    async def mark_sent(self, seq: int, now: float) -> None:
        await self._write(
            "UPDATE outbox SET attempts = attempts + 1, last_sent_at = ?"
            " WHERE seq = ? AND settled_at IS NULL",
            (now, seq),
        )

    async def settle(self, seq: int, now: float) -> None:
        """Settle by sequence number (PUBACK for non-ticket messages). Idempotent."""
        if await self._write(
            "UPDATE outbox SET settled_at = ? WHERE seq = ? AND settled_at IS NULL", (now, seq)
        ):
            self._settled += 1

    async def settle_event(self, event_id: str, now: float) -> OutboxItem | None:
        """Settle by CloudEvents id (the central ack). None when unknown or already settled."""
        async with self._db.lock, self._db.transaction() as conn:
            rows = await conn.execute_fetchall(
                "UPDATE outbox SET settled_at = ? WHERE event_id = ? AND settled_at IS NULL"
                " RETURNING *",
                (now, event_id),
            )
        items = [_outbox_item(row) for row in rows]
        if not items:
            return None
        self._settled += 1
        return items[0]

    async def depth(self) -> int:
        """How many messages are committed and not yet settled."""
        rows = await self._read("SELECT COUNT(*) FROM outbox WHERE settled_at IS NULL")
        return int(next(iter(rows))[0])

    async def get_message(self, event_id: str) -> OutboxItem | None:
        """One outbox item by CloudEvents id, settled or not."""
        found = await self._select_outbox("SELECT * FROM outbox WHERE event_id = ?", (event_id,))
        return found[0] if found else None

    async def ticket_messages(self, ticket_id: str) -> list[OutboxItem]:
        """Every message committed for one ticket, settled or not, in commit order (the site
        page shows what the central system received)."""
        return await self._select_outbox(
            "SELECT * FROM outbox WHERE ticket_id = ? ORDER BY seq", (ticket_id,)
        )

    async def purge_settled(self, settled_before: float) -> int:
        """Delete settled messages older than a cut-off; returns how many. Keeps state.db small."""
        return await self._write(
            "DELETE FROM outbox WHERE settled_at IS NOT NULL AND settled_at < ?",
            (settled_before,),
        )

    # --- outbox size policy (issue 6) -------------------------------------------------------

    async def shed(self, max_depth: int, kinds: Collection[OutboxKind]) -> dict[str, int]:
        """Delete the oldest unsettled messages of `kinds` (summaries, health) until at most
        `max_depth` unsettled messages remain or none of `kinds` is left; returns the count
        per kind. Ticket messages are never passed in, so they are never shed."""
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

    async def refuse(self, seq: int, now: float) -> None:
        """Settle a message the egress guard refused: kept on record, never sent or retried."""
        await self._write(
            "UPDATE outbox SET settled_at = ? WHERE seq = ? AND settled_at IS NULL", (now, seq)
        )

    async def outbox_backlog(self) -> tuple[dict[str, int], float | None]:
        """Unsettled messages per kind, and when the oldest of them was committed."""
        rows = await self._read(
            "SELECT kind, COUNT(*), MIN(created_at) FROM outbox"
            " WHERE settled_at IS NULL GROUP BY kind"
        )
        by_kind = {str(row[0]): int(row[1]) for row in rows}
        oldest = min((float(row[2]) for row in rows), default=None)
        return by_kind, oldest

    # --- helpers ---------------------------------------------------------------------------

    async def _save_sequence(self, conn: aiosqlite.Connection) -> int:
        """Inside a transaction: persist the sequence high-water mark when it moved."""
        sequence = self._sequence
        if sequence > self._saved_sequence:
            await conn.execute(_SAVE_COUNTER, (_SEQUENCE_COUNTER, sequence))
        return sequence

    async def _write(self, sql: str, params: Sequence[Any]) -> int:
        async with self._db.lock, self._db.transaction() as conn:
            cursor = await conn.execute(sql, params)
            return cursor.rowcount

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> Iterable[aiosqlite.Row]:
        async with self._db.lock:
            return await self._guarded_read(self._db.conn.execute_fetchall(sql, params))

    async def _select_tickets(self, sql: str, params: Sequence[Any]) -> list[Ticket]:
        return [_ticket(row) for row in await self._read(sql, params)]

    async def _select_outbox(self, sql: str, params: Sequence[Any]) -> list[OutboxItem]:
        return [_outbox_item(row) for row in await self._read(sql, params)]

    @staticmethod
    async def _guarded_read(pending: Awaitable[_R]) -> _R:
        try:
            return await pending
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"state.db refused a read: {exc}") from exc


def _to_json(value: Mapping[str, Any], what: str) -> str:
    try:
        # allow_nan=False: NaN is not JSON, and a central system would choke on it later.
        return json.dumps(dict(value), sort_keys=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} cannot be stored as JSON: {exc}") from exc


def _to_json_array(value: Sequence[Any], what: str) -> str:
    try:
        return json.dumps(list(value), sort_keys=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} cannot be stored as JSON: {exc}") from exc


def _flood_row(f: FloodRecord) -> tuple[Any, ...]:
    return (
        f.area,
        f.started_at,
        f.incident_key,
        f.published_members,
        f.published_at,
        _to_json_array([dict(m) for m in f.members], "flood members"),
        _to_json_array(list(f.folded), "folded keys"),
        _to_json_array(list(f.quieted), "quieted keys"),
    )


def _shelving_row(s: Shelving) -> tuple[Any, ...]:
    return (s.key, s.until, s.reason, s.by, s.set_at)


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
        _to_json(t.evidence, f"evidence of ticket `{t.id}`"),
        t.respond_by,
        t.resolve_by,
        t.closed_at,
        _to_json(t.attributes, f"attributes of ticket `{t.id}`"),
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


def _message_row(m: NewMessage, now: float) -> tuple[Any, ...]:
    return (m.event_id, m.topic, bytes(m.payload), m.kind.value, now, m.ticket_id)


def _outbox_item(row: aiosqlite.Row) -> OutboxItem:
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
    )
