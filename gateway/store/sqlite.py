"""What state.db and telemetry.db share: opening with the right pragmas, schema migrations, and
one transaction helper that turns every SQLite failure into our `StoreError`.

aiosqlite runs one connection in one worker thread and executes statements in order. Several
coroutines share that connection (ticketing, uplink, telemetry writer), so every public store
method holds `Database.lock`: otherwise another coroutine's statement could land inside our
`BEGIN IMMEDIATE ... COMMIT` and be rolled back with it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

import aiosqlite

from gateway.core.errors import StoreError

log = logging.getLogger(__name__)

# The page cache of each connection, in KiB when negative (SQLite's convention). The default,
# 2 MiB, fills on a busy site and stays: the daemon's three connections (state.db's writer
# and reader, telemetry.db's writer) held up to 6 MB of its RSS. What the writers touch is
# the newest pages (telemetry rows append, its index is by time bucket first; tickets change
# a few rows), and a page not cached is read from the OS's cache, not the disk.
PAGE_CACHE = -512
# Values per `IN (...)` list: well below SQLite's limit of bound parameters.
IN_CHUNK = 500

_R = TypeVar("_R")


class Synchronous(enum.IntEnum):
    """`PRAGMA synchronous` levels (https://sqlite.org/pragma.html#pragma_synchronous)."""

    OFF = 0
    NORMAL = 1
    FULL = 2


@dataclass(frozen=True, slots=True)
class Migration:
    """The statements that bring a schema from `version - 1` to `version`."""

    version: int
    statements: Sequence[str]


class Database:
    """One aiosqlite connection in autocommit mode; transactions are explicit (`transaction`)."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, label: str) -> None:
        self.conn = conn
        self.path = path
        self.label = label
        self.lock = asyncio.Lock()
        # A second, read-only connection with its own worker thread (`open_reader`): WAL lets
        # it read the last commit while a group commit is being written and synced, so a read
        # does not wait for an fsync it does not need.
        self.reader: aiosqlite.Connection | None = None

    async def open_reader(self, busy_timeout_ms: int) -> None:
        """Open the read-only connection `DatabaseRole._read` uses. It sees every transaction
        committed before a read starts, never one in progress."""
        try:
            reader = await aiosqlite.connect(
                self.path.absolute().as_uri() + "?mode=ro", isolation_level=None, uri=True
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open a reader of {self.label} at {self.path}: {exc}") from exc
        reader.row_factory = aiosqlite.Row
        try:
            await reader.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            await reader.execute(f"PRAGMA cache_size = {PAGE_CACHE}")
        except sqlite3.Error as exc:
            await reader.close()
            raise StoreError(f"cannot configure a reader of {self.label}: {exc}") from exc
        self.reader = reader

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        label: str,
        synchronous: Synchronous,
        busy_timeout_ms: int,
        migrations: Sequence[Migration],
        read_only: bool = False,
    ) -> Database:
        """Open, configure and migrate, creating the file when absent.

        `read_only=True` is for readers beside the running daemon (the `tickets` CLI): a
        missing file is an error rather than an empty database left behind, nothing is written,
        and the schema must already be the one this code knows.
        Raises `StoreError` when the file cannot be opened, configured or migrated.
        """
        path = Path(path)
        if read_only and not await asyncio.to_thread(path.is_file):
            # Checked before connecting: a failed aiosqlite connect leaves its worker thread to
            # finish on its own, which races with a closing event loop.
            raise StoreError(f"cannot open {label} at {path}: no such file")
        try:
            if read_only:
                # mode=ro: SQLite still refuses a file that vanished since the check above.
                target: str | Path = path.absolute().as_uri() + "?mode=ro"
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                target = path
            # isolation_level=None: the sqlite3 module must not open transactions behind our
            # back; we issue BEGIN IMMEDIATE ourselves so the write lock is taken up front.
            conn = await aiosqlite.connect(target, isolation_level=None, uri=read_only)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {label} at {path}: {exc}") from exc
        db = cls(conn, path, label)
        try:
            conn.row_factory = aiosqlite.Row
            if read_only:
                await db._check_readable(busy_timeout_ms, migrations)
            else:
                await db._configure(synchronous, busy_timeout_ms)
                await db._migrate(migrations)
        except BaseException:
            await conn.close()
            raise
        return db

    async def close(self) -> None:
        """Idempotent; never raises (a store that cannot close has nothing left to lose)."""
        async with self.lock:
            connections = [self.conn] if self.reader is None else [self.reader, self.conn]
            for conn in connections:
                try:
                    await conn.close()
                except (sqlite3.Error, ValueError) as exc:
                    log.warning("Closing `%s` at `%s` failed: %s", self.label, self.path, exc)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; ROLLBACK on any failure, including cancellation.

        The caller must hold `lock`. SQLite errors leave as `StoreError`.
        """
        try:
            await self.conn.execute("BEGIN IMMEDIATE")
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"{self.label} refused to start a transaction: {exc}") from exc
        except BaseException:
            # Cancelled while BEGIN was queued: the worker thread still runs it, so end that
            # transaction, or the next BEGIN on this connection would fail.
            await self._rollback_quietly()
            raise
        try:
            yield self.conn
            await self.conn.execute("COMMIT")
        except BaseException as exc:
            # The worker thread runs statements in order, so this ROLLBACK follows whatever was
            # queued before, even when we got here by cancellation. rollback() is a no-op when
            # the failed statement was COMMIT itself and SQLite already ended the transaction.
            await self._rollback_quietly()
            if isinstance(exc, sqlite3.Error | ValueError):
                raise StoreError(f"{self.label} refused a write: {exc}") from exc
            raise

    async def run_in_thread(self, fn: Callable[[sqlite3.Connection], _R]) -> _R:
        """Run `fn` with the sqlite3 connection in aiosqlite's worker thread, in order with
        every other statement: several statements in one hand-off instead of one each. The
        caller must hold `lock`. aiosqlite has no public call for this; `_execute` is the one
        it queues its own calls with (aiosqlite is held below 1.0 in pyproject.toml; the
        store tests run every write through here)."""
        conn = self.conn
        return await conn._execute(lambda: fn(conn._conn))

    async def _rollback_quietly(self) -> None:
        try:
            await self.conn.rollback()
        except (sqlite3.Error, ValueError) as exc:
            log.error("Rollback on `%s` at `%s` failed: %s", self.label, self.path, exc)

    async def pragma(self, name: str) -> object:
        async with self.conn.execute(f"PRAGMA {name}") as cursor:
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def _configure(self, synchronous: Synchronous, busy_timeout_ms: int) -> None:
        try:
            # busy_timeout first: switching to WAL itself needs the lock if another process
            # (the `tickets` CLI) has the file open.
            await self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = await self.pragma("journal_mode = WAL")
            await self.conn.execute(f"PRAGMA synchronous = {int(synchronous)}")
            await self.conn.execute("PRAGMA foreign_keys = ON")
            await self.conn.execute(f"PRAGMA cache_size = {PAGE_CACHE}")
            actual_sync = await self.pragma("synchronous")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot configure {self.label} at {self.path}: {exc}") from exc
        # WAL cannot be enabled on some filesystems (network mounts); the durability contract
        # (DESIGN.md section 9) depends on it, so refuse to run rather than degrade silently.
        if str(mode).lower() != "wal" or actual_sync != int(synchronous):
            raise StoreError(
                f"{self.label} at {self.path} runs journal_mode={mode}, synchronous={actual_sync};"
                f" expected wal and {int(synchronous)}"
            )

    async def _check_readable(self, busy_timeout_ms: int, migrations: Sequence[Migration]) -> None:
        target = _latest(migrations)
        try:
            await self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            async with self.conn.execute("SELECT MAX(version) FROM schema_version") as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.label} at {self.path} cannot be read: {exc}") from exc
        current = row[0] if row is not None else None
        if current != target:
            raise StoreError(
                f"{self.label} at {self.path} has schema version {current}; this code reads"
                f" version {target}"
            )

    async def _schema_version(self) -> int:
        try:
            await self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            async with self.conn.execute("SELECT MAX(version) FROM schema_version") as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the schema of {self.label}: {exc}") from exc
        return int(row[0]) if row is not None and row[0] is not None else 0

    async def _migrate(self, migrations: Sequence[Migration]) -> None:
        target = _latest(migrations)
        async with self.lock:
            current = await self._schema_version()
            if current > target:
                raise StoreError(
                    f"{self.label} at {self.path} has schema version {current}; this gateway"
                    f" understands up to {target}. Refusing to touch a newer database."
                )
            for migration in sorted(migrations, key=lambda m: m.version):
                if migration.version <= current:
                    continue
                async with self.transaction() as conn:
                    for statement in migration.statements:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO schema_version (version) VALUES (?)", (migration.version,)
                    )
                log.info(
                    "Migrated `%s` at `%s` to schema version %d.",
                    self.label,
                    self.path,
                    migration.version,
                )


class DatabaseRole:
    """Base of the classes that serve one role of a database (state.db's tickets, outbox,
    command log, noise state). They share the `Database` of the object that opened it and never
    close it; reads and writes hold its lock and leave as `StoreError`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction; returns the number of rows changed."""
        async with self._db.lock, self._db.transaction() as conn:
            cursor = await conn.execute(sql, params)
            return cursor.rowcount

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> Iterable[aiosqlite.Row]:
        reader = self._db.reader
        if reader is not None:
            # One statement is one snapshot of the last commit; no lock needed.
            return await self._guarded_read(reader.execute_fetchall(sql, params))
        async with self._db.lock:
            return await self._guarded_read(self._db.conn.execute_fetchall(sql, params))

    async def _guarded_read(self, pending: Awaitable[_R]) -> _R:
        try:
            return await pending
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"{self._db.label} refused a read: {exc}") from exc


class DatabaseStore:
    """Base of `StateDatabase` and `TelemetryStore`: owns one `Database` and closes it on exit."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _latest(migrations: Sequence[Migration]) -> int:
    return max((m.version for m in migrations), default=0)


def in_chunks(values: Sequence[Any]) -> Iterator[tuple[Sequence[Any], str]]:
    """`values` in chunks of `IN_CHUNK`, each with the `?, ?, ...` of its `IN (...)` list."""
    for start in range(0, len(values), IN_CHUNK):
        chunk = values[start : start + IN_CHUNK]
        yield chunk, ", ".join("?" for _ in chunk)
