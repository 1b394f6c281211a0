"""telemetry.db: raw samples and waveforms, kept on site for a retention period (DESIGN.md 8).

Nothing here ever leaves the plant; the uplink reads state.db only. Throughput matters more
than the last second of history, so this file runs `synchronous=NORMAL` (WAL still keeps it
consistent after a crash; only the newest transactions may be lost on power failure).

A BAD sample is stored without a value, with its quality and its reason: the gap is part of
the record, and a made-up value never is (DESIGN.md section 9).

Samples are stored one row per device and timestamp (`sample_groups`, see
`gateway/store/sample_groups.py`): a poll of 30 registers is one row, not 30. The
one-row-per-sample table of schema versions 1-2 (`samples`) is no longer written; rows already
in it are still read, pruned and trimmed, until retention has emptied it.

With `flush_interval_s` > 0 (the daemon's `storage.telemetry_flush_s`, 1 s by default) samples
are held in memory and written at least that often, in one transaction: polls arrive a few at a
time, and each transaction costs several hand-offs to the SQLite thread, each waking both
threads. Reads and `close` write what is held first; `run_flusher` writes it when no
new sample arrives. A power failure can lose that much raw history, as `synchronous=NORMAL`
already may.

Retention is by age and by size, enforced by `run_retention`, a periodic task: rows
older than the retention period go first, then the oldest rows until the data fits the size
limit. Size is measured as the pages in use (`page_count - freelist_count`): SQLite reuses
freed pages, so the file stops growing at about the limit instead of shrinking and growing
again (no VACUUM on a plant box).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.clock import Clock
from gateway.core.errors import StoreError
from gateway.core.records import Quality, Sample, Waveform
from gateway.store.sample_groups import (
    ColumnCatalogue,
    pack,
    split_tag,
    unpack_one,
    unpack_row,
)
from gateway.store.sqlite import Database, DatabaseStore, Migration, Synchronous

log = logging.getLogger(__name__)

TELEMETRY_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        statements=(
            """
            CREATE TABLE samples (
                tag       TEXT NOT NULL,
                ts        REAL NOT NULL,
                value     REAL,            -- NULL when the sample is BAD
                quality   INTEGER NOT NULL,
                reason    TEXT,
                source_ts REAL
            )
            """,
            "CREATE INDEX samples_by_tag_ts ON samples (tag, ts)",
            "CREATE INDEX samples_by_ts ON samples (ts)",
            """
            CREATE TABLE waveforms (
                tag              TEXT NOT NULL,
                ts               REAL NOT NULL,
                sample_rate      REAL NOT NULL,
                unit             TEXT NOT NULL,
                running_speed_hz REAL,
                quality          INTEGER NOT NULL,
                n                INTEGER NOT NULL,
                data             BLOB NOT NULL   -- little-endian float64
            )
            """,
            "CREATE INDEX waveforms_by_tag_ts ON waveforms (tag, ts)",
            "CREATE INDEX waveforms_by_ts ON waveforms (ts)",
        ),
    ),
    # With a (tag, ts) index every sample of a site polling 15 000 tags lands on a
    # different index page, so each batch rewrote thousands of pages (9 us of CPU per row
    # with a few minutes of history, more than the polling itself). Keyed by a 10 s time
    # bucket first, new rows land in the last few pages (2 us per row); a tag's history is
    # one index seek per bucket, and retention ranges over the leading bucket, so the ts
    # index goes too. The expression is repeated verbatim in the queries (SQLite uses an
    # expression index only for the same expression): see `_BUCKET`.
    Migration(
        version=2,
        statements=(
            "CREATE INDEX samples_by_bucket_tag ON samples (CAST(ts / 10 AS INTEGER), tag)",
            "DROP INDEX samples_by_tag_ts",
            "DROP INDEX samples_by_ts",
        ),
    ),
    # One row per device and timestamp instead of one per sample (a poll of 30
    # registers: 30 times fewer rows and index entries; the writer thread's CPU and the
    # file's growth drop accordingly). Indexed like migration 2: the 10 s bucket first, so new
    # rows land in the last pages, then the device, so one tag's history is one seek per bucket.
    Migration(
        version=3,
        statements=(
            """
            CREATE TABLE sample_columns (
                device TEXT NOT NULL,
                point  TEXT NOT NULL,
                col    INTEGER NOT NULL,
                PRIMARY KEY (device, point),
                UNIQUE (device, col)
            )
            """,
            """
            CREATE TABLE sample_groups (
                device    TEXT NOT NULL,
                ts        REAL NOT NULL,
                cols      BLOB NOT NULL,  -- uint32 column numbers (sample_columns.col)
                vals      BLOB NOT NULL,  -- float64 per column, NaN where the sample is BAD
                quality   BLOB,           -- one byte per column; NULL when all are GOOD
                reasons   TEXT,           -- JSON {position: reason}; NULL when none
                source_ts BLOB            -- float64 per column (NaN: none); NULL when none
            )
            """,
            "CREATE INDEX sample_groups_by_bucket_device"
            " ON sample_groups (CAST(ts / 10 AS INTEGER), device)",
        ),
    ),
)

# The samples index's leading key: the 10 s bucket of `ts` (CAST truncates like `int()`).
_BUCKET = "CAST(ts / 10 AS INTEGER)"
_BUCKET_S = 10

# Retention deletes in slices so the write lock is released between them and a large backlog
# does not stall the sample writer for seconds (a group holds a poll's samples: tens of them).
_PRUNE_SLICE_ROWS = {"samples": 20_000, "sample_groups": 2_000, "waveforms": 20_000}
# Size trimming removes the oldest rows in steps of about this many rows (plus every
# waveform block up to that time), then measures again.
_TRIM_SLICE_ROWS = {"samples": 5_000, "sample_groups": 500}
# A flush of up to `_CHUNK_ROWS` group rows is one statement, padded with NULL rows that the
# WHERE drops: always the same SQL text, so SQLite prepares it once (a text per row count
# filled the statement cache with large programs: +2.5 MB RSS). Larger flushes take the
# transaction path.
_CHUNK_ROWS = 256
_GROUP_COLUMNS = 7
_CHUNK_INSERT = (
    "INSERT INTO sample_groups (device, ts, cols, vals, quality, reasons, source_ts)"
    " SELECT column1, column2, column3, column4, column5, column6, column7 FROM (VALUES "
    + ", ".join(["(" + ", ".join("?" * _GROUP_COLUMNS) + ")"] * _CHUNK_ROWS)
    + ") WHERE column1 IS NOT NULL"
)
_PADDING_ROW = (None,) * _GROUP_COLUMNS
# `read_recent` reads this many 10 s buckets (5 min) per query, newest first.
_RECENT_SLICE_BUCKETS = 30
# Held samples are written at once past this many, whatever the interval (bounded memory).
_MAX_PENDING_SAMPLES = 50_000
# What one deleted row counts for in `rows_pruned` / `rows_trimmed_for_size`: samples.
_DELETED_SAMPLES = {"samples": "1", "sample_groups": "length(cols) / 4", "waveforms": "1"}


@dataclass(slots=True)
class _Held:
    """Packed rows not written yet, the columns they numbered, and how many samples."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    columns: list[tuple[str, str, int]] = field(default_factory=list)
    samples: int = 0

    def add(
        self, rows: list[tuple[Any, ...]], columns: list[tuple[str, str, int]], samples: int
    ) -> None:
        self.rows += rows
        self.columns += columns
        self.samples += samples


@dataclass(frozen=True, slots=True)
class TelemetryStatistics:
    samples_written: int
    waveforms_written: int
    samples_refused: int
    waveforms_refused: int
    rows_pruned: int
    refusing: bool
    rows_trimmed_for_size: int = 0
    retention_failures: int = 0
    bytes_acquired: int = 0  # value bytes of samples and waveform points written (8 each)
    samples_pending: int = 0  # held in memory, not written yet (`flush_interval_s`)


class TelemetryStore(DatabaseStore):
    """Raw history on site. Write failures are counted and logged once, never raised.

    Losing some history while the disk is full is acceptable; stopping the detectors (and so
    the tickets) because of it is not.
    """

    def __init__(
        self, db: Database, columns: ColumnCatalogue | None = None, flush_interval_s: float = 0.0
    ) -> None:
        super().__init__(db)
        self._columns = columns or ColumnCatalogue()
        self._flush_interval = flush_interval_s
        self._held = _Held()
        self._pending_since = 0.0  # loop time of the oldest held sample
        self._samples_written = 0
        self._waveforms_written = 0
        self._samples_refused = 0
        self._waveforms_refused = 0
        self._rows_pruned = 0
        self._rows_trimmed = 0
        self._bytes_acquired = 0
        self._retention_failures = 0
        self._retention_failing = False
        self._refusing = False

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        busy_timeout_ms: int = 5000,
        flush_interval_s: float = 0.0,
        read_only: bool = False,
    ) -> TelemetryStore:
        """`flush_interval_s` 0 writes every batch at once; above 0, see the module doc.
        `read_only` is for readers beside the running daemon (`edge-gateway values`): the file
        must exist with this code's schema, and nothing is written."""
        db = await Database.open(
            path,
            label="telemetry.db",
            synchronous=Synchronous.NORMAL,
            busy_timeout_ms=busy_timeout_ms,
            migrations=TELEMETRY_MIGRATIONS,
            read_only=read_only,
        )
        try:
            known = await db.conn.execute_fetchall("SELECT device, point, col FROM sample_columns")
        except sqlite3.Error as exc:
            await db.close()
            raise StoreError(f"telemetry.db refused a read: {exc}") from exc
        catalogue = ColumnCatalogue((row[0], row[1], row[2]) for row in known)
        return cls(db, catalogue, flush_interval_s)

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            await super().close()

    async def pragma(self, name: str) -> object:
        async with self._db.lock:
            return await self._db.pragma(name)

    def statistics(self) -> TelemetryStatistics:
        return TelemetryStatistics(
            samples_written=self._samples_written,
            waveforms_written=self._waveforms_written,
            samples_refused=self._samples_refused,
            waveforms_refused=self._waveforms_refused,
            rows_pruned=self._rows_pruned,
            refusing=self._refusing,
            rows_trimmed_for_size=self._rows_trimmed,
            retention_failures=self._retention_failures,
            bytes_acquired=self._bytes_acquired,
            samples_pending=self._held.samples,
        )

    async def write_samples(self, samples: Sequence[Sample]) -> None:
        """Store a batch (one row per device and timestamp), at once or with the next flush.

        Packed into rows now either way: what is held is a few hundred rows per second, not
        thousands of sample objects for the garbage collector to walk."""
        if not samples:
            return
        self._bytes_acquired += 8 * len(samples)
        rows, new_columns = pack(samples, self._columns)
        now = asyncio.get_running_loop().time()
        if not self._held.samples:
            self._pending_since = now
        self._held.add(rows, new_columns, len(samples))
        if (
            self._flush_interval <= 0
            or self._held.samples >= _MAX_PENDING_SAMPLES
            or now - self._pending_since >= self._flush_interval
        ):
            await self.flush()

    async def flush(self) -> None:
        """Write the held samples now (one transaction)."""
        held, self._held = self._held, _Held()
        if not held.samples:
            return
        try:
            await self._write(held)
        except asyncio.CancelledError:
            # Stopped mid-write (the transaction was rolled back): keep them for `close`.
            held.add(self._held.rows, self._held.columns, self._held.samples)
            self._held = held
            raise

    async def run_flusher(self) -> None:
        """Write held samples once they are `flush_interval_s` old although nothing new came
        (a site whose polling stopped). Runs until cancelled; idle without an interval."""
        if self._flush_interval <= 0:
            await asyncio.Event().wait()
        loop = asyncio.get_running_loop()
        while True:
            due = self._pending_since + self._flush_interval if self._held.samples else None
            now = loop.time()
            if due is not None and now >= due:
                await self.flush()
                continue
            await asyncio.sleep(self._flush_interval if due is None else due - now)

    async def _write(self, held: _Held) -> None:
        if not held.columns and len(held.rows) <= _CHUNK_ROWS:
            # The usual flush: one multi-row INSERT, atomic on its own in autocommit mode.
            # One hand-off to the SQLite thread instead of three (BEGIN, insert, COMMIT):
            # each wakes both threads, which at a few polls a second costs more than the
            # insert (measured at 10 devices x 100 registers).
            written = await self._insert_chunk(held.rows)
        else:
            written = await self._insert(self._group_writes(held))
        if written:
            self._samples_written += held.samples
        else:
            # The samples are lost, but their column numbers stay in use (rows held since
            # then may carry them): keep the numbering to be written with the next rows.
            self._held.columns[:0] = held.columns
            self._samples_refused += held.samples

    @staticmethod
    def _group_writes(held: _Held) -> list[tuple[str, Sequence[tuple[Any, ...]]]]:
        return [
            (
                "INSERT OR IGNORE INTO sample_columns (device, point, col) VALUES (?, ?, ?)",
                held.columns,
            ),
            (
                "INSERT INTO sample_groups (device, ts, cols, vals, quality, reasons, source_ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                held.rows,
            ),
        ]

    async def _insert_chunk(self, rows: Sequence[tuple[Any, ...]]) -> bool:
        """One statement inserting up to `_CHUNK_ROWS` group rows; True when committed."""
        padded = [*rows, *[_PADDING_ROW] * (_CHUNK_ROWS - len(rows))]
        try:
            async with self._db.lock:
                await self._db.conn.execute(_CHUNK_INSERT, [v for row in padded for v in row])
        except (sqlite3.Error, ValueError) as exc:  # ValueError: aiosqlite, once closed
            self._note_refusal(StoreError(f"telemetry.db refused a write: {exc}"))
            return False
        self._note_accepted()
        return True

    async def write_waveform(self, waveform: Waveform) -> None:
        # numpy only with waveforms: a scalar-only site does not load it (resident memory).
        import numpy as np

        data = np.ascontiguousarray(waveform.data, dtype="<f8")
        self._bytes_acquired += int(data.nbytes)
        row = (
            waveform.tag,
            waveform.ts,
            waveform.sample_rate,
            waveform.unit,
            waveform.running_speed_hz,
            int(waveform.quality),
            int(data.size),
            data.tobytes(),
        )
        if await self._insert(
            [
                (
                    "INSERT INTO waveforms (tag, ts, sample_rate, unit, running_speed_hz,"
                    " quality, n, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [row],
                )
            ]
        ):
            self._waveforms_written += 1
        else:
            self._waveforms_refused += 1

    async def read_samples(self, tag: str, start: float, end: float) -> list[Sample]:
        """Samples of one tag with start <= ts < end, oldest first (evidence, `snapshot`).

        One index seek per 10 s bucket of the window (clamped to the stored buckets, so an
        open window such as 0..inf costs no more than the history held)."""
        if not start < end:  # empty, or a NaN bound
            return []
        await self.flush()  # what was written before the read is part of it
        device, point = split_tag(tag)
        col = self._columns.column(device, point)
        async with self._db.lock:
            try:
                legacy = await self._bucket_rows(
                    "samples",
                    "ts, value, quality, reason, source_ts",
                    "tag = ?",
                    tag,
                    start,
                    end,
                )
                groups = (
                    await self._bucket_rows(
                        "sample_groups",
                        "ts, cols, vals, quality, reasons, source_ts",
                        "device = ?",
                        device,
                        start,
                        end,
                    )
                    if col is not None
                    else []
                )
            except (sqlite3.Error, ValueError) as exc:  # ValueError: aiosqlite, once closed
                raise StoreError(f"telemetry.db refused a read: {exc}") from exc
        samples = [
            Sample(
                tag=tag,
                ts=row["ts"],
                value=row["value"],
                quality=Quality(row["quality"]),
                reason=row["reason"],
                source_ts=row["source_ts"],
            )
            for row in legacy
        ]
        if col is not None:
            for row in groups:
                sample = unpack_one(tag, col, row)
                if sample is not None:
                    samples.append(sample)
        # Legacy rows predate every group; the sort is stable, so ties keep their order.
        samples.sort(key=lambda s: s.ts)
        return samples

    async def read_recent(
        self, start: float, end: float, *, device: str | None = None, limit: int = 10_000
    ) -> list[Sample]:
        """The newest `limit` samples with start <= ts < end (of one device, or of all),
        oldest first: what `edge-gateway values` shows. Walks the 10 s buckets from the
        newest back, a slice at a time, so a long window costs no more than `limit` rows."""
        if not start < end or limit < 1:
            return []
        await self.flush()
        async with self._db.lock:
            try:
                samples = await self._recent_groups(start, end, device, limit)
                samples += await self._recent_legacy(start, end, device, limit)
            except (sqlite3.Error, ValueError) as exc:  # ValueError: aiosqlite, once closed
                raise StoreError(f"telemetry.db refused a read: {exc}") from exc
        samples.sort(key=lambda s: s.ts)
        return samples[-limit:]

    async def _recent_groups(
        self, start: float, end: float, device: str | None, limit: int
    ) -> list[Sample]:
        bounds = await self._db.conn.execute_fetchall(
            f"SELECT MIN({_BUCKET}), MAX({_BUCKET}) FROM sample_groups"
        )
        first, last = next(iter(bounds))
        if first is None:
            return []
        first, last = max(first, _bucket_of(start)), min(last, _bucket_of(end))
        match = " AND device = ?" if device is not None else ""
        samples: list[Sample] = []
        names: dict[str, dict[int, str]] = {}
        high = last
        while high >= first and len(samples) < limit:
            low = max(first, high - _RECENT_SLICE_BUCKETS + 1)
            rows = await self._db.conn.execute_fetchall(
                "SELECT device, ts, cols, vals, quality, reasons, source_ts FROM sample_groups"
                f" WHERE {_BUCKET} BETWEEN ? AND ?{match} AND ts >= ? AND ts < ?"
                " ORDER BY ts DESC LIMIT ?",
                (low, high, *((device,) if device is not None else ()), start, end,
                 limit - len(samples)),
            )  # fmt: skip
            for row in rows:
                owner = row[0]
                if owner not in names:
                    names[owner] = self._columns.points(owner)
                samples.extend(unpack_row(owner, names[owner], tuple(row)[1:]))
            high = low - 1
        return samples

    async def _recent_legacy(
        self, start: float, end: float, device: str | None, limit: int
    ) -> list[Sample]:
        """Rows of the one-row-per-sample table of schema versions 1-2, until retention
        has emptied it."""
        match = " AND substr(tag, 1, length(?) + 1) = ? || '.'" if device is not None else ""
        rows = await self._db.conn.execute_fetchall(
            "SELECT tag, ts, value, quality, reason, source_ts FROM samples"
            f" WHERE ts >= ? AND ts < ?{match} ORDER BY ts DESC LIMIT ?",
            (start, end, *((device, device) if device is not None else ()), limit),
        )
        return [
            Sample(row[0], row[1], row[2], Quality(row[3]), source_ts=row[5], reason=row[4])
            for row in rows
        ]

    async def _bucket_rows(
        self, table: str, columns: str, match: str, key: str, start: float, end: float
    ) -> list[sqlite3.Row]:
        """Rows of `table` matching `match` (one `?` bound to `key`) with start <= ts < end,
        oldest first, through the (bucket, key) index. The caller holds the lock."""
        bounds = await self._db.conn.execute_fetchall(
            f"SELECT (SELECT MIN({_BUCKET}) FROM {table}), (SELECT MAX({_BUCKET}) FROM {table})"
        )
        first, last = next(iter(bounds))
        if first is None:
            return []
        first = max(first, _bucket_of(start))
        last = min(last, _bucket_of(end))
        rows = await self._db.conn.execute_fetchall(
            "WITH RECURSIVE buckets(b) AS (VALUES(?) UNION ALL"
            " SELECT b + 1 FROM buckets WHERE b < ?)"
            f" SELECT {columns} FROM buckets JOIN {table} ON {_BUCKET} = buckets.b AND {match}"
            f" WHERE ts >= ? AND ts < ? ORDER BY ts, {table}.rowid",
            (first, last, key, start, end),
        )
        return list(rows)

    async def latest_good_ts(self, device: str, since: float) -> float | None:
        """When `device` last delivered a GOOD sample at or after `since` (None: not since
        then); newest buckets first, a minute of them per query."""
        await self.flush()
        if math.isnan(since):
            return None
        span = 6  # buckets per query
        async with self._db.lock:
            try:
                rows = await self._db.conn.execute_fetchall(
                    f"SELECT MAX({_BUCKET}) FROM sample_groups"
                )
                top = next(iter(rows))[0]
                first = _bucket_of(since)
                while top is not None and top >= first:
                    low = max(first, top - span + 1)
                    rows = await self._db.conn.execute_fetchall(
                        "WITH RECURSIVE buckets(b) AS (VALUES(?) UNION ALL"
                        " SELECT b + 1 FROM buckets WHERE b < ?)"
                        " SELECT MAX(ts) FROM buckets JOIN sample_groups"
                        f" ON {_BUCKET} = buckets.b AND device = ?"
                        " WHERE ts >= ? AND (quality IS NULL OR instr(quality, ?) > 0)",
                        (low, top, device, since, bytes([int(Quality.GOOD)])),
                    )
                    newest = next(iter(rows))[0]
                    if newest is not None:
                        return float(newest)
                    top = low - 1
            except (sqlite3.Error, ValueError) as exc:
                raise StoreError(f"telemetry.db refused a read: {exc}") from exc
        return None

    async def latest_waveform(self, tag: str, at_or_before: float = math.inf) -> Waveform | None:
        """The newest waveform block of `tag` with ts <= `at_or_before`."""
        import numpy as np

        async with self._db.lock:
            try:
                rows = await self._db.conn.execute_fetchall(
                    "SELECT tag, ts, sample_rate, unit, running_speed_hz, quality, data"
                    " FROM waveforms WHERE tag = ? AND ts <= ? ORDER BY ts DESC LIMIT 1",
                    (tag, at_or_before),
                )
            except (sqlite3.Error, ValueError) as exc:  # ValueError: aiosqlite, once closed
                raise StoreError(f"telemetry.db refused a read: {exc}") from exc
        for row in rows:
            return Waveform(
                tag=row["tag"],
                ts=row["ts"],
                sample_rate=row["sample_rate"],
                data=np.frombuffer(row["data"], dtype="<f8").astype(np.float64),
                unit=row["unit"],
                running_speed_hz=row["running_speed_hz"],
                quality=Quality(row["quality"]),
            )
        return None

    async def read_waveforms(self, tag: str, start: float, end: float) -> list[Waveform]:
        """Waveform blocks of one tag with start <= ts < end, oldest first."""
        import numpy as np

        async with self._db.lock:
            try:
                rows = await self._db.conn.execute_fetchall(
                    "SELECT tag, ts, sample_rate, unit, running_speed_hz, quality, data"
                    " FROM waveforms WHERE tag = ? AND ts >= ? AND ts < ? ORDER BY ts",
                    (tag, start, end),
                )
            except (sqlite3.Error, ValueError) as exc:  # ValueError: aiosqlite, once closed
                raise StoreError(f"telemetry.db refused a read: {exc}") from exc
        return [
            Waveform(
                tag=row["tag"],
                ts=row["ts"],
                sample_rate=row["sample_rate"],
                data=np.frombuffer(row["data"], dtype="<f8").astype(np.float64),
                unit=row["unit"],
                running_speed_hz=row["running_speed_hz"],
                quality=Quality(row["quality"]),
            )
            for row in rows
        ]

    async def prune(self, older_than_ts: float) -> int:
        """Delete samples and waveforms older than the cut-off (retention); returns rows deleted.

        Raises `StoreError` when the database refuses: the retention task should log and retry.
        """
        deleted = await self._delete_before(older_than_ts, inclusive=False)
        self._rows_pruned += deleted
        if deleted:
            log.info("Pruned %d telemetry rows older than %.0f.", deleted, older_than_ts)
        return deleted

    async def used_bytes(self) -> int:
        """Bytes of pages holding data (the file may be larger: freed pages are reused)."""
        async with self._db.lock:
            try:
                page_size = await self._db.pragma("page_size")
                pages = await self._db.pragma("page_count")
                free = await self._db.pragma("freelist_count")
            except (sqlite3.Error, ValueError) as exc:
                raise StoreError(f"telemetry.db refused a read: {exc}") from exc
        return (int(str(pages)) - int(str(free))) * int(str(page_size))

    async def trim_to_size(self, max_bytes: int) -> int:
        """Delete the oldest rows (samples and waveforms alike, by time) until the data fits
        `max_bytes`; returns rows deleted. Raises `StoreError` when the database refuses."""
        deleted = 0
        while await self.used_bytes() > max_bytes:
            cutoff = await self._oldest_slice_end()
            if cutoff is None:
                break  # nothing left to delete; the schema alone is larger than the limit
            count = await self._delete_before(cutoff, inclusive=True)
            deleted += count
            if count == 0:
                break
        if deleted:
            self._rows_trimmed += deleted
            log.info(
                "Trimmed %d oldest telemetry rows to keep `%s` under %.1f MB.",
                deleted,
                self._db.path,
                max_bytes / 1e6,
            )
        return deleted

    async def enforce_retention(self, now: float, max_age_s: float, max_bytes: int) -> int:
        """Age first, then size; returns rows deleted."""
        deleted = await self.prune(now - max_age_s)
        deleted += await self.trim_to_size(max_bytes)
        return deleted

    async def run_retention(
        self, clock: Clock, *, max_age_s: float, max_bytes: int, period_s: float
    ) -> None:
        """The periodic retention task (run until cancelled). A refusal (disk full, locked) is
        logged once per state change and retried next period; deleting needs little space."""
        while True:
            try:
                await self.enforce_retention(clock.now(), max_age_s, max_bytes)
            except StoreError as exc:
                self._retention_failures += 1
                if not self._retention_failing:
                    self._retention_failing = True
                    log.error(
                        "Telemetry retention on `%s` failed: %s; retrying every %.0f s.",
                        self._db.path,
                        exc,
                        period_s,
                    )
            else:
                if self._retention_failing:
                    self._retention_failing = False
                    log.info("Telemetry retention on `%s` works again.", self._db.path)
            await asyncio.sleep(period_s)

    async def _oldest_slice_end(self) -> float | None:
        """The timestamp below which about one slice of the oldest rows lies."""
        async with self._db.lock:
            try:
                rows = await self._db.conn.execute_fetchall(
                    f"SELECT MAX(ts) FROM (SELECT ts FROM samples ORDER BY {_BUCKET} LIMIT ?)"
                    " UNION ALL SELECT MAX(ts) FROM"
                    f" (SELECT ts FROM sample_groups ORDER BY {_BUCKET} LIMIT ?)"
                    " UNION ALL SELECT MIN(ts) FROM waveforms",
                    (_TRIM_SLICE_ROWS["samples"], _TRIM_SLICE_ROWS["sample_groups"]),
                )
            except (sqlite3.Error, ValueError) as exc:
                raise StoreError(f"telemetry.db refused a read: {exc}") from exc
        candidates = [float(row[0]) for row in rows if row[0] is not None]
        # The earlier of the two: at least one row goes each step, never a whole table at once.
        return min(candidates) if candidates else None

    async def _delete_before(self, cutoff: float, *, inclusive: bool) -> int:
        deleted = 0
        if math.isnan(cutoff):
            return 0  # nothing is older than NaN (as `ts < NaN` says)
        op = "<=" if inclusive else "<"
        # Samples: the bucket bound lets the index find the old rows; `ts` decides exactly.
        by_bucket = f"{_BUCKET} <= {_bucket_of(cutoff)} AND ts {op} ?"
        where = {"samples": by_bucket, "sample_groups": by_bucket, "waveforms": f"ts {op} ?"}
        for table in ("samples", "sample_groups", "waveforms"):
            while True:
                async with self._db.lock, self._db.transaction() as conn:
                    cursor = await conn.execute(
                        f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table}"
                        f" WHERE {where[table]} LIMIT ?) RETURNING {_DELETED_SAMPLES[table]}",
                        (cutoff, _PRUNE_SLICE_ROWS[table]),
                    )
                    counts = list(await cursor.fetchall())
                deleted += sum(int(row[0]) for row in counts)
                if len(counts) < _PRUNE_SLICE_ROWS[table]:
                    break
        return deleted

    async def _insert(self, writes: Sequence[tuple[str, Sequence[tuple[Any, ...]]]]) -> bool:
        """Run each (statement, rows) in one transaction; True when committed. A refusal is
        logged on the change of state, not per batch."""
        try:
            async with self._db.lock, self._db.transaction() as conn:
                for sql, rows in writes:
                    if rows:
                        await conn.executemany(sql, rows)
        except StoreError as exc:
            self._note_refusal(exc)
            return False
        self._note_accepted()
        return True

    def _note_refusal(self, exc: StoreError) -> None:
        if not self._refusing:
            self._refusing = True
            log.error(
                "Telemetry writes to `%s` refused: %s; counting lost rows until it recovers.",
                self._db.path,
                exc,
            )

    def _note_accepted(self) -> None:
        if self._refusing:
            self._refusing = False
            log.info(
                "Telemetry writes to `%s` accepted again after %d refused samples.",
                self._db.path,
                self._samples_refused,
            )


def _bucket_of(ts: float) -> int:
    """The samples index bucket of `ts`, as SQLite computes it (`_BUCKET`); infinities are
    clamped to SQLite's integer range, as its CAST does."""
    if math.isinf(ts):
        return _INT64_MAX if ts > 0 else _INT64_MIN
    return max(_INT64_MIN, min(_INT64_MAX, int(ts / _BUCKET_S)))


_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
