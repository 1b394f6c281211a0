"""telemetry.db on a real file: batched samples, BAD samples as gaps, retention, refusals."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from gateway.core.records import Quality, Sample, Waveform
from gateway.store import TelemetryStore

TAG = "pump-1.bearing_temp"


@pytest.fixture
async def telemetry(tmp_path):
    store = await TelemetryStore.open(tmp_path / "telemetry.db")
    yield store
    await store.close()


async def test_runs_wal_with_synchronous_normal(telemetry):
    assert await telemetry.pragma("journal_mode") == "wal"
    assert await telemetry.pragma("synchronous") == 1


async def test_writes_a_batch_and_reads_it_back(telemetry):
    batch = [Sample(TAG, float(t), 20.0 + t, source_ts=t - 0.5) for t in range(1000)]
    await telemetry.write_samples(batch)
    back = await telemetry.read_samples(TAG, 100.0, 103.0)
    assert back == batch[100:103]
    assert telemetry.statistics().samples_written == 1000


async def test_bad_samples_are_stored_as_gaps_with_their_reason(tmp_path, telemetry):
    await telemetry.write_samples(
        [
            Sample.bad(TAG, 1.0, "connection refused"),
            Sample(TAG, 2.0, float("nan")),  # a driver bug must not become a stored number
            Sample(TAG, 3.0, 42.0, quality=Quality.BAD, reason="exception code 2"),
            Sample(TAG, 4.0, 41.5, quality=Quality.UNCERTAIN),
        ]
    )
    rows = await telemetry.read_samples(TAG, 0.0, 10.0)
    assert [(s.value, s.quality, s.reason) for s in rows] == [
        (None, Quality.BAD, "connection refused"),
        (None, Quality.BAD, "value is not a finite number"),
        (None, Quality.BAD, "exception code 2"),
        (41.5, Quality.UNCERTAIN, None),
    ]
    with sqlite3.connect(tmp_path / "telemetry.db") as raw:
        assert raw.execute("SELECT COUNT(*) FROM samples WHERE value IS NULL").fetchone() == (3,)


async def test_waveform_round_trip(telemetry):
    data = np.sin(np.linspace(0, 20, 4096))
    await telemetry.write_waveform(Waveform("pump-1.vib", 5.0, 25600.0, data, "g", 29.5))
    (back,) = await telemetry.read_waveforms("pump-1.vib", 0.0, 10.0)
    assert back.sample_rate == 25600.0 and back.running_speed_hz == 29.5 and back.unit == "g"
    np.testing.assert_array_equal(back.data, data)


async def test_prune_deletes_only_older_rows(telemetry):
    await telemetry.write_samples([Sample(TAG, float(t), 1.0) for t in range(100)])
    await telemetry.write_waveform(Waveform("pump-1.vib", 10.0, 1000.0, np.zeros(8)))
    await telemetry.write_waveform(Waveform("pump-1.vib", 90.0, 1000.0, np.zeros(8)))
    assert await telemetry.prune(50.0) == 51
    remaining = await telemetry.read_samples(TAG, 0.0, 1000.0)
    assert [s.ts for s in remaining] == [float(t) for t in range(50, 100)]
    assert [w.ts for w in await telemetry.read_waveforms("pump-1.vib", 0.0, 100.0)] == [90.0]
    assert telemetry.statistics().rows_pruned == 51


async def test_refused_writes_are_counted_not_raised_and_recover(tmp_path, caplog):
    store = await TelemetryStore.open(tmp_path / "telemetry.db", busy_timeout_ms=20)
    blocker = sqlite3.connect(tmp_path / "telemetry.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock: a real refusal
        await store.write_samples([Sample(TAG, 1.0, 1.0), Sample(TAG, 2.0, 2.0)])
        await store.write_samples([Sample(TAG, 3.0, 3.0)])
        stats = store.statistics()
        assert (stats.samples_refused, stats.samples_written, stats.refusing) == (3, 0, True)
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 1  # logged once per state change, not per batch
        blocker.execute("ROLLBACK")
        await store.write_samples([Sample(TAG, 4.0, 4.0)])
        stats = store.statistics()
        assert (stats.samples_written, stats.refusing) == (1, False)
        assert [s.ts for s in await store.read_samples(TAG, 0.0, 10.0)] == [4.0]
    finally:
        blocker.close()
        await store.close()
