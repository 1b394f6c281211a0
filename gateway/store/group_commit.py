"""Group commit for state.db: every write unit queued while the previous commit ran is committed
in one transaction, so that a burst of writes costs one fsync, not one each.

A unit is a function of the `sqlite3.Connection` that runs its statements; the writer runs a
whole group in the connection's worker thread at once (one hand-off, one fsync), each unit
inside a SAVEPOINT of its own: a unit the database refuses (a duplicate event id, a revision
that does not move forward) is rolled back alone and its caller gets the `StoreError`, the rest
of the group commits. When COMMIT itself fails (disk full, I/O error) every unit of the group
fails and nothing of it is written.

A caller's `run` returns only after the COMMIT that made its unit durable, so whoever announces
a change (the outbox signal that wakes the uplink, a command's reply) does so after it is on
disk: "committed before published" holds for each unit. `on_commit` callbacks run in the event
loop right after that COMMIT, before any caller resumes, even a caller that was cancelled.

The writer is a task started on demand and ending when nothing is queued. A caller cancelled
while its unit is being committed waits for that commit to end before the cancellation goes
on (the other units of the group need it); one cancelled before, drops its unit.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from gateway.core.errors import StoreError
from gateway.store.sqlite import Database

log = logging.getLogger(__name__)

_R = TypeVar("_R")

Work = Callable[[sqlite3.Connection], _R]


@dataclass(slots=True, eq=False)
class _Unit(Generic[_R]):
    work: Work[_R]
    future: asyncio.Future[_R]
    on_commit: Callable[[_R], None] | None = None
    # Refused unrun when a unit was refused since this `refused` count (see `run`).
    clean_since: int | None = None


@dataclass(slots=True)
class GroupStatistics:
    transactions: int = 0  # COMMITs issued by the writer
    units: int = 0  # units committed
    refused: int = 0  # units rolled back (alone, or with a failed COMMIT)
    largest: int = 0  # most units in one transaction
    groups: list[int] = field(default_factory=list)  # sizes of the last groups, for benches


class GroupCommitter:
    """One per `Database`. `run(work)` queues a unit and waits until it is committed."""

    MAX_GROUP = 1000  # units per transaction: bounds how long the write lock is held
    _KEEP_SIZES = 1000

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: list[_Unit[Any]] = []
        self._writer: asyncio.Task[None] | None = None
        self.stats = GroupStatistics()

    async def run(
        self,
        work: Work[_R],
        on_commit: Callable[[_R], None] | None = None,
        *,
        clean_since: int | None = None,
    ) -> _R:
        """Commit `work` in the next group; its result once durable. Raises `StoreError` when
        the database refused the unit or its group's COMMIT.

        `clean_since`, a `stats.refused` count read before the writes this one depends on were
        queued: the unit is refused without running when any unit was refused since (earlier
        in its own transaction or in one before). Queued behind those writes, it joins their
        transaction when it can, and is never kept without them.

        Cancelled, a unit not yet taken by the writer is dropped (nothing written); one being
        committed is waited for before the cancellation goes on, so that when the caller sees
        it, the unit is either durable or gone, never still to come."""
        unit = self._queue_unit(work, on_commit, clean_since)
        try:
            return await asyncio.shield(unit.future)
        except asyncio.CancelledError:
            if unit in self._queue:
                self._queue.remove(unit)
                unit.future.cancel()
            else:
                await asyncio.wait([unit.future])
            raise

    def submit(
        self, work: Work[_R], on_commit: Callable[[_R], None] | None = None
    ) -> asyncio.Future[_R]:
        """Queue `work` without waiting; the future resolves after its COMMIT. For callers that
        make several changes together and wait for them once."""
        return self._queue_unit(work, on_commit).future

    def _queue_unit(
        self,
        work: Work[_R],
        on_commit: Callable[[_R], None] | None,
        clean_since: int | None = None,
    ) -> _Unit[_R]:
        future: asyncio.Future[_R] = asyncio.get_running_loop().create_future()
        unit = _Unit(work, future, on_commit, clean_since)
        self._queue.append(unit)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="state.db group commit")
        return unit

    async def _write(self) -> None:
        while self._queue:
            group = self._queue[: self.MAX_GROUP]
            del self._queue[: self.MAX_GROUP]
            await self._commit(group)

    async def _commit(self, group: list[_Unit[Any]]) -> None:
        works = [(unit.work, unit.clean_since) for unit in group]
        refused_before = self.stats.refused  # every earlier group's refusals are counted
        try:
            async with self._db.lock:
                outcomes = await self._db.run_in_thread(
                    lambda conn: _run_group(conn, works, refused_before)
                )
        except (sqlite3.Error, ValueError, StoreError) as exc:
            error = (
                exc
                if isinstance(exc, StoreError)
                else StoreError(f"{self._db.label} refused a write: {exc}")
            )
            outcomes = [error] * len(group)
        except BaseException as exc:
            # Cancelled (the database is closing): the callers must not wait forever.
            for unit in group:
                if not unit.future.done():
                    unit.future.set_exception(StoreError(f"{self._db.label} closed: {exc!r}"))
            raise
        committed = sum(1 for outcome in outcomes if not isinstance(outcome, StoreError))
        if committed:
            self.stats.transactions += 1
            self.stats.largest = max(self.stats.largest, committed)
            self.stats.groups.append(committed)
            del self.stats.groups[: -self._KEEP_SIZES]
        self.stats.units += committed
        self.stats.refused += len(group) - committed
        for unit, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, StoreError):
                if not unit.future.done():
                    unit.future.set_exception(outcome)
                else:
                    log.error("A cancelled write to `%s` was refused: %s", self._db.label, outcome)
                continue
            if unit.on_commit is not None:
                unit.on_commit(outcome)
            if not unit.future.done():
                unit.future.set_result(outcome)


def _run_group(
    conn: sqlite3.Connection, works: list[tuple[Work[Any], int | None]], refused_before: int
) -> list[Any]:
    """In the worker thread: BEGIN IMMEDIATE, each unit in its SAVEPOINT, COMMIT. A unit with
    a `clean_since` is refused unrun when a unit was refused since (`refused_before` counts the
    earlier groups' refusals)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StoreError(f"state.db refused to start a transaction: {exc}") from exc
    outcomes: list[Any] = []
    refused = refused_before
    try:
        for work, clean_since in works:
            if clean_since is not None and refused != clean_since:
                refused += 1
                outcomes.append(
                    StoreError("state.db did not write it: a write it depends on was refused")
                )
                continue
            conn.execute("SAVEPOINT unit")
            try:
                outcomes.append(work(conn))
            except (sqlite3.Error, ValueError, StoreError) as exc:
                conn.execute("ROLLBACK TO unit")
                refused += 1
                ours = isinstance(exc, StoreError)
                outcomes.append(exc if ours else StoreError(f"state.db refused a write: {exc}"))
            conn.execute("RELEASE unit")
        conn.execute("COMMIT")
    except BaseException as exc:
        # A failed COMMIT (disk full, I/O error) or a SAVEPOINT that could not be taken: the
        # whole group is rolled back, so every unit of it fails.
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as rollback_error:
                log.error("Rollback on state.db failed: %s", rollback_error)
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"state.db refused a write: {exc}") from exc
        raise
    return outcomes
