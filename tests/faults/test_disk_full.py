"""Issue 6, fault 6: the disk fills up under state.db and telemetry.db.

The "small filesystem" is a real one: a 4 MB tmpfs mounted for the test (this needs root, as
CI and the dev container run; elsewhere the test fails with that reason rather than skipping).
A ballast file eats the free space. Telemetry writes are then refused and counted without an
exception, a ticket commit fails cleanly (nothing half-written), both databases stay intact,
every ticket committed before is kept and delivered, and writes resume once space returns.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.errors import StoreError
from gateway.core.records import Quality, Sample
from gateway.store import StateDatabase, TelemetryStore
from tests.faults.support import (
    TicketProducer,
    delivered_ids,
    make_uplink,
    running_central,
    watching_everything,
)
from tests.support.broker import MosquittoBroker
from tests.uplink.helpers import eventually, running

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SIZE = "4m"


@contextlib.contextmanager
def small_filesystem(mount_point: Path) -> Iterator[Path]:
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.fail(f"cannot mount a {SIZE} tmpfs (needs root): {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Write a ballast file until the filesystem says ENOSPC, in ever smaller pieces."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (64 * 1024, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return ballast


def samples(n: int, t0: float) -> list[Sample]:
    return [Sample(f"pump-1.t{i % 8}", t0 + i * 0.01, float(i), Quality.GOOD) for i in range(n)]


async def test_fault_6_disk_full_keeps_committed_tickets_and_recovers(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "disk") as disk, MosquittoBroker() as broker:
        state = await StateDatabase.open(disk / "state.db")
        telemetry = await TelemetryStore.open(disk / "telemetry.db")
        producer = TicketProducer(state)
        try:
            for _ in range(5):
                await producer.open_one()
            await telemetry.write_samples(samples(500, 1.0))
            before = dict(producer.committed)

            ballast = fill(disk)
            refused_commits = 0
            for _ in range(20):  # enough rows that SQLite must grow the file
                await telemetry.write_samples(samples(2000, 10.0))
                with contextlib.suppress(StoreError):
                    await producer.open_one()
                    continue
                refused_commits += 1
            full = telemetry.statistics()
            assert full.samples_refused > 0 and full.refusing
            assert refused_commits > 0, "a ticket commit must fail cleanly when the disk is full"
            assert await state.pragma("integrity_check") == "ok"
            assert await telemetry.pragma("integrity_check") == "ok"
            kept = {m.event_id for m in await state.outbox.unsettled(10_000)}
            assert set(before) <= kept, "tickets committed before the disk filled are kept"

            os.unlink(ballast)
            await telemetry.write_samples(samples(100, 100.0))
            assert not telemetry.statistics().refusing
            await producer.open_one()  # ticket commits work again

            async with (
                watching_everything(broker.port) as watcher,
                running_central(broker.port) as central,
                running(make_uplink(state, broker.port).run_uplink(), "uplink"),
            ):
                await eventually(lambda: set(producer.committed) <= set(delivered_ids(central)))
            assert watcher.problems() == []
            assert await state.pragma("integrity_check") == "ok"
        finally:
            await telemetry.close()
            await state.close()
