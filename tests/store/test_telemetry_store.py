"""telemetry.db on a real file: batched samples, BAD samples as gaps, retention, refusals."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import struct

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


async def test_the_page_cache_is_bounded_below_sqlites_default(telemetry):
    # SQLite's default is 2 MiB per connection, held once filled: memory a busy site keeps.
    cache = await telemetry.pragma("cache_size")
    assert isinstance(cache, int) and -512 <= cache < 0  # KiB


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
    # On disk the three gaps hold no number (NaN is only the mark of a gap) and say BAD.
    with sqlite3.connect(tmp_path / "telemetry.db") as raw:
        stored = raw.execute("SELECT vals, quality FROM sample_groups ORDER BY ts").fetchall()
    values = [struct.unpack("<d", vals)[0] for vals, _ in stored]
    assert [math.isnan(v) for v in values] == [True, True, True, False]
    assert [quality[0] for _, quality in stored] == [0, 0, 0, 1]


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


async def test_trim_to_size_deletes_the_oldest_rows_until_the_data_fits(telemetry):
    await telemetry.write_samples([Sample(TAG, float(t), float(t)) for t in range(40_000)])
    await telemetry.write_waveform(Waveform("pump-1.vib", 5.0, 1000.0, np.ones(4096)))
    await telemetry.write_waveform(Waveform("pump-1.vib", 39_000.0, 1000.0, np.ones(4096)))
    before = await telemetry.used_bytes()
    limit = before // 2
    deleted = await telemetry.trim_to_size(limit)
    assert deleted > 0
    assert await telemetry.used_bytes() <= limit
    remaining = await telemetry.read_samples(TAG, 0.0, 1e9)
    oldest_kept = remaining[0].ts
    # Oldest first: what is left is one contiguous block of the newest samples.
    assert [s.ts for s in remaining] == [float(t) for t in range(int(oldest_kept), 40_000)]
    assert [w.ts for w in await telemetry.read_waveforms("pump-1.vib", 0.0, 1e9)] == [39_000.0]
    assert telemetry.statistics().rows_trimmed_for_size == deleted
    assert await telemetry.trim_to_size(limit) == 0  # already fits


async def test_retention_task_enforces_age_then_size_each_period(telemetry):
    from gateway.core.clock import ManualClock

    clock = ManualClock(start=100_000.0)
    await telemetry.write_samples([Sample(TAG, float(t), 1.0) for t in range(100_000 - 7200,
                                                                            100_000)])  # fmt: skip
    task = asyncio.create_task(
        telemetry.run_retention(clock, max_age_s=3600.0, max_bytes=10**9, period_s=0.01),
        name="retention",
    )
    try:
        async with asyncio.timeout(5):
            while telemetry.statistics().rows_pruned == 0:  # noqa: ASYNC110 (a counter)
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    remaining = await telemetry.read_samples(TAG, 0.0, 1e9)
    assert remaining[0].ts == 100_000 - 3600 and len(remaining) == 3600
    assert telemetry.statistics().bytes_acquired == 8 * 7200


async def test_reads_one_tag_across_buckets_and_open_windows(telemetry):
    # Samples every 3.7 s over several 10 s index buckets, two tags interleaved, and
    # timestamps exactly on bucket edges: the window bounds decide, not the buckets.
    other = "pump-1.flow"
    times = [1_000.0 + 3.7 * n for n in range(40)] + [1_010.0, 1_020.0]
    await telemetry.write_samples([Sample(tag, t, t) for t in times for tag in (TAG, other)])
    expected = sorted(t for t in times if 1_010.0 <= t < 1_100.0)
    back = await telemetry.read_samples(TAG, 1_010.0, 1_100.0)
    assert [s.ts for s in back] == expected and {s.tag for s in back} == {TAG}
    everything = await telemetry.read_samples(TAG, float("-inf"), float("inf"))
    assert [s.ts for s in everything] == sorted(times)
    assert await telemetry.read_samples(TAG, 5_000.0, 6_000.0) == []
    assert await telemetry.read_samples("no.such_tag", 0.0, float("inf")) == []


async def test_prune_at_a_cutoff_inside_a_bucket_keeps_the_newer_rows(telemetry):
    await telemetry.write_samples([Sample(TAG, 100.0 + t / 4, 1.0) for t in range(100)])
    assert await telemetry.prune(112.5) == 50  # 100.0 .. 112.25
    remaining = await telemetry.read_samples(TAG, 0.0, 1e9)
    assert [s.ts for s in remaining] == [100.0 + t / 4 for t in range(50, 100)]


async def test_a_version_1_database_is_migrated_and_keeps_its_rows(tmp_path):
    from gateway.store.sqlite import Database, Synchronous
    from gateway.store.telemetry import TELEMETRY_MIGRATIONS

    path = tmp_path / "telemetry.db"
    old = await Database.open(
        path,
        label="telemetry.db",
        synchronous=Synchronous.NORMAL,
        busy_timeout_ms=1000,
        migrations=TELEMETRY_MIGRATIONS[:1],  # the schema as the first release wrote it
    )
    async with old.transaction() as conn:
        await conn.executemany(
            "INSERT INTO samples (tag, ts, value, quality, reason, source_ts)"
            " VALUES (?, ?, ?, 0, NULL, NULL)",
            [(TAG, float(t), float(t)) for t in range(50)],
        )
    await old.close()

    store = await TelemetryStore.open(path)
    try:
        indexes = {
            row[0]
            for row in await store._db.conn.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'samples'"
            )
        }
        assert indexes == {"samples_by_bucket_tag"}
        assert [s.value for s in await store.read_samples(TAG, 10.0, 20.0)] == [
            float(t) for t in range(10, 20)
        ]
        assert await store.prune(25.0) == 25
        await store.write_samples([Sample(TAG, 60.0, 6.0)])
        assert len(await store.read_samples(TAG, 0.0, 100.0)) == 26
    finally:
        await store.close()


async def test_a_poll_is_one_row_and_each_tag_reads_back_alone(tmp_path, telemetry):
    # Two devices polled at the same instant, 30 points each: two rows, not sixty.
    polls = [
        Sample(f"{device}.r{i}", 50.0, float(i) + (0.5 if device == "b" else 0.0))
        for device in ("a", "b")
        for i in range(30)
    ]
    await telemetry.write_samples(polls)
    with sqlite3.connect(tmp_path / "telemetry.db") as raw:
        assert raw.execute("SELECT COUNT(*) FROM sample_groups").fetchone() == (2,)
    for device, shift in (("a", 0.0), ("b", 0.5)):
        for i in (0, 17, 29):
            (back,) = await telemetry.read_samples(f"{device}.r{i}", 0.0, 100.0)
            assert (back.tag, back.ts, back.value) == (f"{device}.r{i}", 50.0, i + shift)


async def test_rows_holding_a_subset_of_points_keep_every_tag_in_its_column(telemetry):
    # A deadband lets different points through on each poll: the columns stay put.
    await telemetry.write_samples([Sample("a.x", 1.0, 1.0), Sample("a.y", 1.0, 10.0)])
    await telemetry.write_samples([Sample("a.y", 2.0, 20.0)])
    await telemetry.write_samples([Sample("a.z", 3.0, 300.0), Sample("a.x", 3.0, 3.0)])
    assert [(s.ts, s.value) for s in await telemetry.read_samples("a.x", 0.0, 9.0)] == [
        (1.0, 1.0),
        (3.0, 3.0),
    ]
    assert [s.value for s in await telemetry.read_samples("a.y", 0.0, 9.0)] == [10.0, 20.0]
    assert [s.value for s in await telemetry.read_samples("a.z", 0.0, 9.0)] == [300.0]


async def test_the_same_tag_twice_at_one_timestamp_keeps_both_samples(telemetry):
    await telemetry.write_samples(
        [Sample("a.x", 5.0, 1.0), Sample("a.y", 5.0, 2.0), Sample("a.x", 5.0, 3.0)]
    )
    assert [s.value for s in await telemetry.read_samples("a.x", 0.0, 9.0)] == [1.0, 3.0]


async def test_columns_survive_a_restart(tmp_path):
    path = tmp_path / "telemetry.db"
    async with await TelemetryStore.open(path) as store:
        await store.write_samples([Sample("a.x", 1.0, 1.0), Sample("a.y", 1.0, 2.0)])
    async with await TelemetryStore.open(path) as store:
        await store.write_samples([Sample("a.y", 2.0, 4.0), Sample("a.w", 2.0, 8.0)])
        assert [s.value for s in await store.read_samples("a.y", 0.0, 9.0)] == [2.0, 4.0]
        assert [s.value for s in await store.read_samples("a.x", 0.0, 9.0)] == [1.0]
        assert [s.value for s in await store.read_samples("a.w", 0.0, 9.0)] == [8.0]


async def test_prune_counts_the_samples_of_the_groups_it_deletes(telemetry):
    await telemetry.write_samples(
        [Sample(f"a.r{i}", float(t), 1.0) for t in range(10) for i in range(30)]
    )
    assert await telemetry.prune(5.0) == 5 * 30
    kept = await telemetry.read_samples("a.r7", 0.0, 99.0)
    assert [s.ts for s in kept] == [5.0, 6.0, 7.0, 8.0, 9.0]


def rows_on_disk(path) -> int:
    with sqlite3.connect(path) as raw:
        return raw.execute("SELECT COUNT(*) FROM sample_groups").fetchone()[0]


async def test_held_samples_are_written_by_age_by_reads_and_on_close(tmp_path):
    path = tmp_path / "telemetry.db"
    store = await TelemetryStore.open(path, flush_interval_s=0.2)
    try:
        await store.write_samples([Sample("a.x", 1.0, 1.0)])
        await store.write_samples([Sample("a.x", 2.0, 2.0)])
        # Held: nothing on disk yet, but counted as pending.
        assert rows_on_disk(path) == 0 and store.statistics().samples_pending == 2
        # A read writes what is held first, so it sees every sample written before it.
        assert [s.value for s in await store.read_samples("a.x", 0.0, 9.0)] == [1.0, 2.0]
        assert rows_on_disk(path) == 2 and store.statistics().samples_pending == 0
        await store.write_samples([Sample("a.x", 3.0, 3.0)])
        await asyncio.sleep(0.25)
        await store.write_samples([Sample("a.x", 4.0, 4.0)])  # the oldest is past the interval
        assert rows_on_disk(path) == 4 and store.statistics().samples_written == 4
        await store.write_samples([Sample("a.x", 5.0, 5.0)])
    finally:
        await store.close()
    assert rows_on_disk(path) == 5  # close wrote the last one


async def test_the_flusher_writes_held_samples_when_nothing_new_arrives(tmp_path):
    path = tmp_path / "telemetry.db"
    store = await TelemetryStore.open(path, flush_interval_s=0.05)
    flusher = asyncio.create_task(store.run_flusher(), name="telemetry-flush")
    try:
        await store.write_samples([Sample("a.x", 1.0, 1.0), Sample("a.y", 1.0, 2.0)])
        assert rows_on_disk(path) == 0
        async with asyncio.timeout(5):
            while store.statistics().samples_written < 2:  # noqa: ASYNC110 (a counter)
                await asyncio.sleep(0.01)
        assert rows_on_disk(path) == 1 and store.statistics().samples_pending == 0
    finally:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        await store.close()


async def test_column_numbers_of_a_refused_batch_are_kept_and_written_later(tmp_path):
    path = tmp_path / "telemetry.db"
    store = await TelemetryStore.open(path, busy_timeout_ms=20)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        await store.write_samples([Sample("a.x", 1.0, 1.0), Sample("a.y", 1.0, 2.0)])
        assert store.statistics().samples_refused == 2
        blocker.execute("ROLLBACK")
        await store.write_samples([Sample("a.y", 2.0, 5.0)])  # numbered while refused
    finally:
        blocker.close()
        await store.close()
    async with await TelemetryStore.open(path) as store:
        await store.write_samples([Sample("a.x", 3.0, 7.0)])
        assert [s.value for s in await store.read_samples("a.y", 0.0, 9.0)] == [5.0]
        assert [s.value for s in await store.read_samples("a.x", 0.0, 9.0)] == [7.0]


async def test_a_refused_write_of_known_columns_is_counted_and_recovers(tmp_path, caplog):
    # Known columns take the one-statement path; a refusal there is counted like any other.
    path = tmp_path / "telemetry.db"
    store = await TelemetryStore.open(path, busy_timeout_ms=20)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        await store.write_samples([Sample("a.x", 1.0, 1.0)])
        blocker.execute("BEGIN IMMEDIATE")
        await store.write_samples([Sample("a.x", 2.0, 2.0), Sample("a.x", 3.0, 3.0)])
        stats = store.statistics()
        assert (stats.samples_written, stats.samples_refused, stats.refusing) == (1, 2, True)
        assert "refused" in caplog.text
        blocker.execute("ROLLBACK")
        await store.write_samples([Sample("a.x", 4.0, 4.0)])
        assert store.statistics().refusing is False
        assert [s.value for s in await store.read_samples("a.x", 0.0, 9.0)] == [1.0, 4.0]
    finally:
        blocker.close()
        await store.close()


# --- reads for the site page (issue 16) -------------------------------------------------------


async def test_latest_waveform_is_the_newest_block_at_or_before_a_time(telemetry):
    assert await telemetry.latest_waveform("pump-1.vib") is None
    for ts in (10.0, 11.0, 12.0):
        await telemetry.write_waveform(Waveform("pump-1.vib", ts, 1000.0, np.full(8, ts)))
    await telemetry.write_waveform(Waveform("other.vib", 13.0, 1000.0, np.zeros(8)))
    newest = await telemetry.latest_waveform("pump-1.vib")
    assert newest is not None and newest.ts == 12.0 and newest.data.tolist() == [12.0] * 8
    at = await telemetry.latest_waveform("pump-1.vib", at_or_before=11.5)
    assert at is not None and at.ts == 11.0
    assert await telemetry.latest_waveform("pump-1.vib", at_or_before=9.0) is None


async def test_latest_good_ts_finds_the_last_good_sample_of_a_device_before_an_outage(telemetry):
    # Good polls for five minutes, then ten minutes of BAD samples (the device unreachable).
    await telemetry.write_samples(
        [Sample("press-3.p", float(t), 1.0) for t in range(1000, 1300)]
        + [Sample("press-3.t", 1150.0, 2.0, quality=Quality.UNCERTAIN)]
        + [Sample.bad("press-3.p", float(t), "connection refused") for t in range(1300, 1900)]
        + [Sample("other.p", 1899.0, 5.0)]
    )
    assert await telemetry.latest_good_ts("press-3", since=0.0) == 1299.0
    # Only what lies inside the window counts.
    assert await telemetry.latest_good_ts("press-3", since=1500.0) is None
    assert await telemetry.latest_good_ts("unknown", since=0.0) is None
    assert await telemetry.latest_good_ts("press-3", since=math.nan) is None
