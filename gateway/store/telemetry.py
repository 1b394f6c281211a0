"""telemetry.db: raw samples and waveforms, kept on site for a retention period (DESIGN.md 8).

Nothing here ever leaves the plant; the uplink reads state.db only. Throughput matters more
than the last second of history, so this file runs `synchronous=NORMAL` (WAL still keeps it
consistent after a crash; only the newest transactions may be lost on power failure).

A BAD sample is stored with a NULL value, its quality and its reason: the gap is part of the
record, and a made-up value never is (DESIGN.md section 9).
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

from gateway.core.errors import StoreError
from gateway.core.records import Quality, Sample, Waveform
from gateway.store.sqlite import Database, Migration, Synchronous

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
)

# Retention deletes in slices so the write lock is released between them and a large backlog
# does not stall the sample writer for seconds.
_PRUNE_SLICE_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class TelemetryStatistics:
    samples_written: int
    waveforms_written: int
    samples_refused: int
    waveforms_refused: int
    rows_pruned: int
    refusing: bool


class TelemetryStore:
    """Raw history on site. Write failures are counted and logged once, never raised.

    Losing some history while the disk is full is acceptable; stopping the detectors (and so
    the tickets) because of it is not (issue 6, fault 6).
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._samples_written = 0
        self._waveforms_written = 0
        self._samples_refused = 0
        self._waveforms_refused = 0
        self._rows_pruned = 0
        self._refusing = False

    @classmethod
    async def open(cls, path: str | Path, *, busy_timeout_ms: int = 5000) -> TelemetryStore:
        db = await Database.open(
            path,
            label="telemetry.db",
            synchronous=Synchronous.NORMAL,
            busy_timeout_ms=busy_timeout_ms,
            migrations=TELEMETRY_MIGRATIONS,
        )
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

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
        )

    async def write_samples(self, samples: Sequence[Sample]) -> None:
        """Store a batch in one transaction (one executemany): thousands of rows per fsync."""
        if not samples:
            return
        rows = [_sample_row(s) for s in samples]
        if await self._insert(
            "INSERT INTO samples (tag, ts, value, quality, reason, source_ts)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        ):
            self._samples_written += len(rows)
        else:
            self._samples_refused += len(rows)

    async def write_waveform(self, waveform: Waveform) -> None:
        data = np.ascontiguousarray(waveform.data, dtype="<f8")
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
            "INSERT INTO waveforms (tag, ts, sample_rate, unit, running_speed_hz, quality, n,"
            " data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [row],
        ):
            self._waveforms_written += 1
        else:
            self._waveforms_refused += 1

    async def read_samples(self, tag: str, start: float, end: float) -> list[Sample]:
        """Samples of one tag with start <= ts < end, oldest first (evidence, `snapshot`)."""
        async with self._db.lock:
            try:
                rows = await self._db.conn.execute_fetchall(
                    "SELECT tag, ts, value, quality, reason, source_ts FROM samples"
                    " WHERE tag = ? AND ts >= ? AND ts < ? ORDER BY ts",
                    (tag, start, end),
                )
            except (sqlite3.Error, ValueError) as exc:  # ValueError: aiosqlite, once closed
                raise StoreError(f"telemetry.db refused a read: {exc}") from exc
        return [
            Sample(
                tag=row["tag"],
                ts=row["ts"],
                value=row["value"],
                quality=Quality(row["quality"]),
                reason=row["reason"],
                source_ts=row["source_ts"],
            )
            for row in rows
        ]

    async def read_waveforms(self, tag: str, start: float, end: float) -> list[Waveform]:
        """Waveform blocks of one tag with start <= ts < end, oldest first."""
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
        deleted = 0
        for table in ("samples", "waveforms"):
            while True:
                async with self._db.lock, self._db.transaction() as conn:
                    cursor = await conn.execute(
                        f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table}"
                        " WHERE ts < ? LIMIT ?)",
                        (older_than_ts, _PRUNE_SLICE_ROWS),
                    )
                    count = cursor.rowcount
                deleted += count
                if count < _PRUNE_SLICE_ROWS:
                    break
        self._rows_pruned += deleted
        if deleted:
            log.info("Pruned %d telemetry rows older than %.0f.", deleted, older_than_ts)
        return deleted

    async def _insert(self, sql: str, rows: list[tuple[Any, ...]]) -> bool:
        """True when committed. A refusal is logged on the change of state, not per batch."""
        try:
            async with self._db.lock, self._db.transaction() as conn:
                await conn.executemany(sql, rows)
        except StoreError as exc:
            if not self._refusing:
                self._refusing = True
                log.error(
                    "Telemetry writes to `%s` refused: %s; counting lost rows until it recovers.",
                    self._db.path,
                    exc,
                )
            return False
        if self._refusing:
            self._refusing = False
            log.info(
                "Telemetry writes to `%s` accepted again after %d refused samples.",
                self._db.path,
                self._samples_refused,
            )
        return True


def _sample_row(s: Sample) -> tuple[Any, ...]:
    value = s.value
    quality = s.quality
    reason = s.reason
    if quality is Quality.BAD:
        value = None
    elif value is None or not math.isfinite(value):
        # A sample claiming to be usable without a finite value is a driver bug; keep the gap
        # and say so rather than storing NaN (which SQLite would turn into NULL silently).
        value, quality, reason = None, Quality.BAD, reason or "value is not a finite number"
    return (s.tag, s.ts, value, int(quality), reason, s.source_ts)
