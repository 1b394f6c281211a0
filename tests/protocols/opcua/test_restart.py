"""Session loss: a server restart mid-stream raises DeviceUnreachable; entering again (a new
driver or the same one, as the source task does after its backoff) opens a new session whose
subscription delivers again (issue 3: "a server restart is survived")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from contextlib import aclosing

import pytest

from gateway.core.clock import ManualClock
from gateway.core.errors import DeviceUnreachable
from gateway.core.interfaces import Record
from gateway.core.records import Quality, Sample
from gateway.pipeline.source import Backoff
from gateway.pipeline.stream import StreamingSource
from tests.support.opcua import ThreadedServer, make_driver, next_matching, node


@pytest.fixture(scope="module")
def plant() -> Iterator[ThreadedServer]:
    server = ThreadedServer(machine="Press").start()
    yield server
    server.stop()


async def test_server_restart_mid_stream_raises_then_a_new_session_delivers_again(
    plant: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim = plant.sim
    nodes = [
        node(name="temp", node_id=sim.node_id("Temperature")),
        node(name="state", node_id=sim.node_id("RunState"), mode="poll"),
    ]
    driver = make_driver(sim.endpoint, nodes, device_id="press")
    async with driver, aclosing(driver.records()) as stream:
        await next_matching(stream, lambda r: r.tag == "press.temp")
        restart = asyncio.create_task(plant.call(sim.restart()), name="restart-server")
        try:
            with pytest.raises(DeviceUnreachable, match="press"):
                async with asyncio.timeout(10):
                    async for _ in stream:
                        pass
            # The polling shape reports the same loss.
            with pytest.raises(DeviceUnreachable):
                await driver.read()
        finally:
            await restart
    # The same instance enters again: a new session and a new subscription.
    async with driver, aclosing(driver.records()) as stream:
        await plant.call(sim.set_value("Temperature", 61.0))
        again = await next_matching(stream, lambda r: r.tag == "press.temp" and r.value == 61.0)
    assert again.quality is Quality.GOOD
    # And so does a fresh one, as a supervisor that rebuilds drivers would.
    fresh = make_driver(sim.endpoint, nodes, device_id="press")
    async with fresh, aclosing(fresh.records()) as stream:
        await plant.call(sim.set_value("Temperature", 62.0))
        latest = await next_matching(stream, lambda r: r.tag == "press.temp" and r.value == 62.0)
    assert latest.quality is Quality.GOOD
    assert driver.statistics().connects == 2
    # The loss was handled: reported by the driver as DeviceUnreachable, not by asyncua's
    # publish loop as an ERROR with a traceback.
    library = [r for r in caplog.records if r.name.startswith("asyncua")]
    assert [r.getMessage() for r in library if r.levelno >= logging.ERROR or r.exc_info] == []


async def test_server_down_at_connect_is_device_unreachable_and_up_again_connects(
    plant: ThreadedServer,
) -> None:
    sim = plant.sim
    driver = make_driver(sim.endpoint, [node(name="temp", node_id=sim.node_id("Temperature"))])
    await plant.call(sim.stop())
    try:
        with pytest.raises(DeviceUnreachable, match="connection refused"):
            async with driver:
                pass
    finally:
        await plant.call(sim.start())
    async with driver:
        (sample,) = await driver.read()
    assert sample.quality is Quality.GOOD


async def test_streaming_source_survives_a_server_restart(
    plant: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The whole contract with the source task: BAD samples while down, data again after,
    and the loss told in our words: no library traceback, one warning from the source."""
    caplog.set_level(logging.DEBUG)
    sim = plant.sim
    temp = node(name="temp", node_id=sim.node_id("Speed"))
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=100)
    source = StreamingSource(
        "press",
        lambda: make_driver(sim.endpoint, [temp], device_id="press"),
        queue,
        ManualClock(),
        backoff=Backoff(initial_s=0.05, max_s=0.1),
    )
    task = asyncio.create_task(source.run_source(), name=source.name)
    try:
        # A guard against a hang, not a recovery target (tests/faults/test_recovery.py holds
        # that): an asyncua server restart alone can take several seconds on a busy machine.
        async with asyncio.timeout(30):
            first = await queue.get()
            assert first.quality is Quality.GOOD
            await plant.call(sim.restart())
            while (bad := await queue.get()).quality is not Quality.BAD:
                pass
            assert isinstance(bad, Sample) and "press" in (bad.reason or "")
            await plant.call(sim.set_value("Speed", 1234.0))
            while not (isinstance(good := await queue.get(), Sample) and good.value == 1234.0):
                pass
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert source.statistics()[0].reconnects >= 1
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert [r.name for r in caplog.records if r.levelno >= logging.ERROR] == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if w.startswith("Device `press` unreachable")] == warnings[:1]
