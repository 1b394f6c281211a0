"""state.db, durable (DESIGN.md sections 3, 6 and 9): one file, one object per role.

`StateDatabase.open(path)` opens and migrates the file and hands out the roles, each
implementing one interface of `gateway.core.interfaces`:

    db.tickets    TicketRepository   tickets and their events (tickets.py)
    db.outbox     Outbox             every message until settled, the CloudEvents sequence
    db.commands   CommandLog         replies of accepted central commands (idempotency)
    db.noise      NoiseStateJournal  shelving, maintenance mode, floods, chattering

The roles share one connection and its lock. A ticket change and the messages announcing it
(and the shelving it sets) are one unit, written by the ticket role; the writes of the ticket,
outbox and command-log roles go through one group committer (`group_commit.py`), which commits
every unit queued while the previous commit ran in one transaction. WAL with
`synchronous=FULL`, so a committed change survives power loss, not only a crash.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.core.clock import Clock, SystemClock
from gateway.core.errors import StoreError
from gateway.store.command_log import DEFAULT_MAX_ROWS, DEFAULT_WINDOW_S, CommandLogStore
from gateway.store.group_commit import GroupCommitter, GroupStatistics
from gateway.store.noise_state import NoiseStateStore
from gateway.store.outbox import OutboxStore
from gateway.store.sqlite import Database, DatabaseStore, Synchronous
from gateway.store.state_schema import STATE_MIGRATIONS
from gateway.store.tickets import TicketStore


@dataclass(frozen=True, slots=True)
class StateStatistics:
    ticket_commits: int
    commit_failures: int
    messages_enqueued: int
    messages_coalesced: int
    messages_settled: int
    commands_pruned: int
    transactions: int  # group commits: fewer than the units they carried when writes come together
    units_committed: int


class StateDatabase(DatabaseStore):
    """Use `await StateDatabase.open(path)`; `close()` (or `async with`) ends every role."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        sequence: int = 0,
        command_window_s: float = DEFAULT_WINDOW_S,
        command_log_max: int = DEFAULT_MAX_ROWS,
    ) -> None:
        super().__init__(db)
        self._writer = GroupCommitter(db)
        self._outbox = OutboxStore(db, self._writer, clock, sequence)
        self._noise = NoiseStateStore(db)
        self._tickets = TicketStore(db, self._writer, self._outbox, self._noise)
        self._commands = CommandLogStore(
            db, clock, window_s=command_window_s, max_rows=command_log_max, writer=self._writer
        )

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        clock: Clock | None = None,
        read_only: bool = False,
        busy_timeout_ms: int = 5000,
        command_window_s: float = DEFAULT_WINDOW_S,
        command_log_max: int = DEFAULT_MAX_ROWS,
    ) -> StateDatabase:
        """Open state.db, creating and migrating it as needed, and prune the command log.

        `read_only=True` is for readers beside the running daemon, such as the `tickets` CLI:
        the file must exist with the current schema, and nothing is written.
        Raises `StoreError` when the file cannot be opened, configured or migrated.
        """
        clock = clock or SystemClock()
        db = await Database.open(
            path,
            label="state.db",
            synchronous=Synchronous.FULL,
            busy_timeout_ms=busy_timeout_ms,
            migrations=STATE_MIGRATIONS,
            read_only=read_only,
        )
        try:
            if not read_only:
                await db.open_reader(busy_timeout_ms)
            sequence = await OutboxStore.load_sequence(db)
        except StoreError:
            await db.close()
            raise
        except sqlite3.Error as exc:
            await db.close()
            raise StoreError(f"cannot read the counters of state.db: {exc}") from exc
        state = cls(
            db,
            clock,
            sequence=sequence,
            command_window_s=command_window_s,
            command_log_max=command_log_max,
        )
        if not read_only:
            try:
                await state.commands.prune(clock.now())
            except StoreError:
                await db.close()
                raise
        return state

    @property
    def tickets(self) -> TicketStore:
        return self._tickets

    @property
    def outbox(self) -> OutboxStore:
        return self._outbox

    @property
    def commands(self) -> CommandLogStore:
        return self._commands

    @property
    def noise(self) -> NoiseStateStore:
        return self._noise

    @property
    def path(self) -> Path:
        return self._db.path

    async def pragma(self, name: str) -> object:
        """Read one PRAGMA (journal_mode, synchronous, integrity_check...); for checks and tests."""
        async with self._db.lock:
            try:
                return await self._db.pragma(name)
            except (sqlite3.Error, ValueError) as exc:
                raise StoreError(f"state.db refused a read: {exc}") from exc

    def statistics(self) -> StateStatistics:
        tickets = self._tickets.statistics()
        return StateStatistics(
            ticket_commits=tickets.ticket_commits,
            commit_failures=tickets.commit_failures,
            messages_enqueued=self._outbox.enqueued,
            messages_coalesced=self._outbox.coalesced,
            messages_settled=self._outbox.settled,
            commands_pruned=self._commands.pruned,
            transactions=self._writer.stats.transactions,
            units_committed=self._writer.stats.units,
        )

    @property
    def group_commits(self) -> GroupStatistics:
        """The group writer's figures (transactions, units, group sizes); for tests and benches."""
        return self._writer.stats
