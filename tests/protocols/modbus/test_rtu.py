"""Modbus RTU for real: the pymodbus serial server on one end of a socat pseudo-terminal pair,
a line of units polled by one SharedLineSource on the other end."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from gateway.core.clock import ManualClock
from gateway.core.records import Quality, Sample
from gateway.pipeline.source import Backoff, SharedLineSource
from gateway.pipeline.statistics import SourceState
from protocols.modbus.config import RegisterTable
from protocols.modbus.driver import ModbusRtuLine
from protocols.modbus.line import RtuLineGroup, group_rtu_devices
from tests.support.modbus import (
    ModbusSimServer,
    RegisterMap,
    point,
    pty_pair,
    rtu_connection,
    tags_for,
    wait_until,
)

POINTS = [point(name="speed", address=0), point(name="run", table="coils", address=3, type="bit")]


def unit_map(speed: int) -> RegisterMap:
    registers = RegisterMap(holding=16, input=16)
    registers.write(RegisterTable.HOLDING, 0, [speed])
    registers.write(RegisterTable.COILS, 3, [1])
    return registers


def make_line(port: str, units: dict[str, int], **overrides: object) -> ModbusRtuLine:
    return ModbusRtuLine(
        port,
        [(device_id, rtu_connection(port, unit, **overrides), POINTS, tags_for(device_id, POINTS))
         for device_id, unit in units.items()],
        ManualClock(),
    )  # fmt: skip


@pytest.fixture
async def line_ends(tmp_path):
    async with pty_pair(tmp_path) as ends:
        yield ends


async def test_reads_several_units_over_a_real_serial_line(line_ends):
    gateway_end, device_end = line_ends
    units = {1: unit_map(1450), 2: unit_map(2950)}
    async with (
        ModbusSimServer(units=units, serial_port=device_end) as server,
        make_line(gateway_end, {"fan-1": 1, "fan-2": 2}) as line,
    ):
        assert line.endpoint == f"modbus_rtu://{gateway_end}"
        first = {r.tag: r.value for r in await line.unit("fan-1").read()}
        second = {r.tag: r.value for r in await line.unit("fan-2").read()}
    assert first == {"fan-1.speed": 1450.0, "fan-1.run": 1.0}
    assert second == {"fan-2.speed": 2950.0, "fan-2.run": 1.0}
    assert [(r.unit_id, r.function_code) for r in server.requests] == [
        (1, 3), (1, 1), (2, 3), (2, 1),
    ]  # fmt: skip


async def test_requests_keep_the_configured_pause_between_them(line_ends):
    gateway_end, device_end = line_ends
    async with (
        ModbusSimServer(units={1: unit_map(7)}, serial_port=device_end),
        make_line(gateway_end, {"fan-1": 1}, inter_request_pause_ms=40) as line,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(3):  # 6 requests, 5 pauses between them
            await line.unit("fan-1").read()
        elapsed = loop.time() - started
    assert elapsed >= 5 * 0.040


async def test_a_dead_unit_is_degraded_and_the_live_one_stays_on_time(line_ends):
    gateway_end, device_end = line_ends
    queue: asyncio.Queue = asyncio.Queue()
    async with ModbusSimServer(units={1: unit_map(1450)}, serial_port=device_end) as server:
        source = SharedLineSource(
            "rtu:test",
            lambda: make_line(gateway_end, {"live": 1, "dead": 9}, timeout_s=0.15),
            queue,
            ManualClock(),
            periods_s={"live": 0.1, "dead": 0.1},
            default_period_s=0.1,
            backoff=Backoff(initial_s=1.0, max_s=5.0, jitter=0.1),
            degrade_after=2,
            rng=random.Random(1),
        )
        task = asyncio.create_task(source.run_source(), name=source.name)
        try:
            degraded = SourceState.DEGRADED
            await wait_until(
                lambda: any(s.state is degraded for s in source.statistics()), within_s=3
            )
            # Once the dead unit is degraded, the live one is polled on its period.
            before = {s.device: s.reads for s in source.statistics()}["live"]
            await asyncio.sleep(0.1 * 10)
            stats = {s.device: s for s in source.statistics()}
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    live_polls = stats["live"].reads - before
    assert live_polls >= 8  # 10 periods; generous for 2 busy cores
    assert stats["dead"].state is SourceState.DEGRADED
    assert stats["live"].state is SourceState.POLLING
    assert stats["dead"].errors <= 4  # 2 to degrade, then probes on a 1 s backoff
    unit_ids = {r.unit_id for r in server.requests}
    assert unit_ids == {1, 9}
    samples = []
    while not queue.empty():
        samples.append(queue.get_nowait())
    dead = [s for s in samples if isinstance(s, Sample) and s.tag.startswith("dead.")]
    assert dead and all(s.quality is Quality.BAD and s.value is None for s in dead)
    assert "no answer within 0.15 s" in (dead[0].reason or "")


async def test_a_missing_serial_port_backs_off_with_bad_samples(tmp_path):
    queue: asyncio.Queue = asyncio.Queue()
    source = SharedLineSource(
        "rtu:none",
        lambda: make_line(str(tmp_path / "no-such-tty"), {"fan-1": 1}),
        queue,
        ManualClock(),
        periods_s={},
        default_period_s=0.05,
        backoff=Backoff(initial_s=0.05, max_s=0.1),
    )
    task = asyncio.create_task(source.run_source(), name=source.name)
    try:
        sample = await asyncio.wait_for(queue.get(), 2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert sample.quality is Quality.BAD
    assert "cannot be opened" in (sample.reason or "")


def test_groups_devices_by_port_and_checks_their_settings():
    a1 = rtu_connection("/dev/ttyUSB0", 1)
    a2 = rtu_connection("/dev/ttyUSB0", 2)
    b1 = rtu_connection("/dev/ttyUSB1", 1)
    groups = group_rtu_devices([("p1", a1), ("q1", b1), ("p2", a2)])
    assert groups == [RtuLineGroup("/dev/ttyUSB0", ("p1", "p2")),
                      RtuLineGroup("/dev/ttyUSB1", ("q1",))]  # fmt: skip
    assert groups[0].line_id == "rtu:/dev/ttyUSB0"
    slow = rtu_connection("/dev/ttyUSB0", 3, baudrate=9600)
    twin = rtu_connection("/dev/ttyUSB0", 1)
    with pytest.raises(ValueError) as caught:
        group_rtu_devices([("p1", a1), ("p3", slow), ("p4", twin)])
    assert str(caught.value) == (
        "`p3` uses 9600 baud 8N1 on `/dev/ttyUSB0`, but `p1` uses 115200 baud 8N1; units of"
        " one line share its settings; `p4` and `p1` both use unit 1 on `/dev/ttyUSB0`"
    )
    assert a1.resource_claims() == ("modbus_rtu /dev/ttyUSB0 unit 1",)
