"""ModbusTcpDriver against a real pymodbus server on loopback (the simulator's)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from gateway.config.models import device_model
from gateway.core.clock import ManualClock
from gateway.core.errors import BadResponse, DeviceTimeout, DeviceUnreachable
from gateway.core.records import Quality, Sample
from protocols.modbus.config import NUMERIC_TYPES, DataType, RegisterTable, WordOrder
from protocols.modbus.driver import ModbusTcpDriver
from simulator.modbus_server import ResponseFault
from simulator.pump import PUMP_POINTS, PumpModel, pump_registers, type_pattern_points
from tests.support.modbus import (
    ModbusSimServer,
    RegisterMap,
    make_driver,
    point,
    tags_for,
    unused_port,
)

REPO = Path(__file__).resolve().parents[3]


def by_tag(records) -> dict[str, Sample]:
    assert all(isinstance(r, Sample) for r in records)
    return {r.tag: r for r in records}


@pytest.fixture
async def pattern_server():
    async with ModbusSimServer(pump_registers()) as server:
        yield server


@pytest.mark.parametrize(
    "limits",
    [{}, {"max_registers_per_read": 4, "max_register_gap": 0}],
    ids=["merged-reads", "one-point-per-read"],
)
async def test_decodes_every_type_and_word_order_from_both_tables(pattern_server, limits):
    pattern = type_pattern_points()
    points = [p for p, _ in pattern]
    assert {p.table for p in points} == {RegisterTable.HOLDING, RegisterTable.INPUT}
    assert {(p.type, p.word_order) for p in points} == {
        (t, o) for t in NUMERIC_TYPES for o in WordOrder
    }

    async with make_driver(pattern_server.port, points, **limits) as driver:
        samples = by_tag(await driver.read())

    expected = {f"dev.{p.name}": value for p, value in pattern}
    assert {tag: s.value for tag, s in samples.items()} == expected
    assert all(s.quality is Quality.GOOD for s in samples.values())
    reads = {(r.function_code, r.address, r.count) for r in pattern_server.requests}
    if limits:
        # Per table: uint16/int16 pairs and 32-bit points fill reads of 4 in pairs, each
        # 64-bit point is a read of its own: 80 registers in 20 reads of exactly 4.
        assert len(reads) == 40
        assert {count for _, _, count in reads} == {4}
    else:
        # 32 points per table, 80 contiguous registers each: one read per table.
        assert reads == {(3, 100, 80), (4, 100, 80)}


async def test_applies_scale_and_offset():
    registers = RegisterMap(16, 16)
    points = [
        point(name="temp", address=0, type="uint16", scale=0.1, offset=-40),
        point(name="flow", table="input", address=0, type="int16", scale=0.5),
        point(name="level", address=1, type="float32", word_order="CDAB", scale=100, offset=1),
    ]
    for p, value in zip(points, (83.4, -12.5, 43.0), strict=True):
        registers.write_value(p.table, p.address, value, p.type, p.word_order, p.scale, p.offset)
    assert registers.read(RegisterTable.HOLDING, 0, 1) == [1234]  # raw counts on the wire

    async with ModbusSimServer(registers) as server, make_driver(server.port, points) as driver:
        values = {tag: s.value for tag, s in by_tag(await driver.read()).items()}
    assert values == pytest.approx({"dev.temp": 83.4, "dev.flow": -12.5, "dev.level": 43.0})


async def test_samples_are_stamped_by_the_injected_clock(pattern_server):
    clock = ManualClock(start=1_000.0)
    points = [p for p, _ in type_pattern_points()[:3]]
    async with make_driver(pattern_server.port, points, clock=clock) as driver:
        first = await driver.read()
        clock.advance(5)
        second = await driver.read()
    assert {r.ts for r in first} == {1_000.0}
    assert {r.ts for r in second} == {1_005.0}


async def test_exception_answer_is_bad_response_for_its_request_only():
    registers = RegisterMap(holding=8, input=8)
    registers.write_value(RegisterTable.HOLDING, 0, 7, DataType.UINT16)
    points = [
        point(name="ok", address=0),
        point(name="missing", table="input", address=50),  # past the device's map
    ]
    async with ModbusSimServer(registers) as server, make_driver(server.port, points) as driver:
        with pytest.raises(BadResponse, match=r"exception 2 \(illegal data address\)"):
            await driver.read_registers(RegisterTable.INPUT, 50, 1)
        samples = by_tag(await driver.read())
        assert samples["dev.ok"].value == 7.0
        assert samples["dev.ok"].quality is Quality.GOOD
        missing = samples["dev.missing"]
        assert (missing.quality, missing.value) == (Quality.BAD, None)
        assert "exception 2 (illegal data address)" in (missing.reason or "")

        server.exception_code = 6
        samples = by_tag(await driver.read())
        assert all(s.quality is Quality.BAD for s in samples.values())
        assert "exception 6 (server device busy)" in (samples["dev.ok"].reason or "")

        server.exception_code = None  # the device recovers on the same connection
        assert by_tag(await driver.read())["dev.ok"].value == 7.0


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (ResponseFault.WRONG_FUNCTION_CODE, "answer has function code 4, expected 3"),
        (ResponseFault.SHORT_PAYLOAD, "answer holds 1 registers, expected 2"),
    ],
)
async def test_malformed_answers_become_bad_samples_never_values(pattern_server, fault, reason):
    points = [p for p, _ in type_pattern_points() if p.name == "holding_uint32_abcd"]
    assert points[0].address == 108
    async with make_driver(pattern_server.port, points) as driver:
        assert by_tag(await driver.read())["dev.holding_uint32_abcd"].value == 0x12345678
        pattern_server.fault = fault
        with pytest.raises(BadResponse, match=reason):
            await driver.read_registers(RegisterTable.HOLDING, 108, 2)
        (sample,) = by_tag(await driver.read()).values()
        assert (sample.quality, sample.value) == (Quality.BAD, None)
        assert reason in (sample.reason or "")


async def test_nan_register_pattern_is_a_bad_sample_with_a_reason():
    registers = RegisterMap(8, 8)
    registers.write(RegisterTable.HOLDING, 0, [0x7FC0, 0x0000])
    registers.write_value(RegisterTable.HOLDING, 2, 21.5, DataType.FLOAT32)
    points = [point(name="nan", address=0, type="float32"),
              point(name="fine", address=2, type="float32")]  # fmt: skip
    async with ModbusSimServer(registers) as server, make_driver(server.port, points) as driver:
        samples = by_tag(await driver.read())
    assert samples["dev.nan"].quality is Quality.BAD
    assert samples["dev.nan"].value is None
    assert "nan" in (samples["dev.nan"].reason or "")
    assert samples["dev.fine"].value == 21.5


async def test_a_device_that_does_not_answer_times_out(pattern_server):
    points = [point(name="t", address=100)]
    async with make_driver(pattern_server.port, points, timeout_s=0.1) as driver:
        pattern_server.fault = ResponseFault.NO_ANSWER
        with pytest.raises(DeviceTimeout, match=r"no answer within 0\.1 s"):
            await driver.read()


async def test_connection_refused_is_device_unreachable():
    driver = make_driver(await unused_port(), [point(name="t", address=0)])
    with pytest.raises(DeviceUnreachable, match="connection refused"):
        await driver.__aenter__()
    await driver.__aexit__(None, None, None)  # exit after a failed enter is harmless too


async def test_exit_is_idempotent_and_reading_after_exit_is_unreachable(pattern_server):
    driver = make_driver(pattern_server.port, [point(name="t", address=100)])
    async with driver:
        assert len(await driver.read()) == 1
    await driver.__aexit__(None, None, None)
    await driver.__aexit__(None, None, None)
    with pytest.raises(DeviceUnreachable):
        await driver.read()


async def test_server_going_away_mid_session_is_device_unreachable():
    registers = pump_registers()
    server = ModbusSimServer(registers)
    await server.start()
    try:
        async with make_driver(server.port, [point(name="t", address=100)]) as driver:
            assert len(await driver.read()) == 1
            await server.stop()
            # Whether the close has reached the client yet or arrives while the request
            # waits, the answer is the same: the connection is gone.
            with pytest.raises(DeviceUnreachable, match="connection lost"):
                await driver.read()
    finally:
        await server.stop()


async def test_sends_only_read_function_codes(pattern_server):
    points = [p for p, _ in type_pattern_points()]
    async with make_driver(pattern_server.port, points) as driver:
        for _ in range(3):
            await driver.read()
    assert pattern_server.requests
    assert {r.function_code for r in pattern_server.requests} <= {3, 4}


async def test_endpoint_tags_and_plan():
    points = [point(name="a", address=0), point(name="b", address=1, type="int32")]
    driver = make_driver(5020, points, device_id="press-3", unit_id=7)
    assert driver.endpoint == "modbus_tcp://127.0.0.1:5020/7"
    assert [t.id for t in driver.tags()] == ["press-3.a", "press-3.b"]
    assert [(r.table, r.address, r.count) for r in driver.requests] == [("holding", 0, 3)]


def test_points_and_tags_must_match():
    points = [point(name="a", address=0)]
    conn = make_driver(1, points)._connection
    with pytest.raises(ValueError, match="1 points but 0 tags"):
        ModbusTcpDriver("d", conn, points, [], ManualClock())


async def test_reads_the_example_pump_as_configured_in_configs():
    device = device_model().model_validate(
        yaml.safe_load((REPO / "configs" / "devices" / "pump-1.yaml").read_text())
    )
    assert tuple(device.points) == PUMP_POINTS  # simulator and example config agree

    registers = pump_registers()
    model = PumpModel(seed=3)
    model.write(registers, model.reading(0.0))
    async with ModbusSimServer(registers) as server:
        connection = device.connection.model_copy(update={"port": server.port})
        driver = ModbusTcpDriver(
            device.id, connection, device.points, tags_for(device.id, device.points), ManualClock()
        )
        async with driver:
            samples = by_tag(await driver.read())
    assert samples["pump-1.bearing_temp"].value == pytest.approx(55.0, abs=2.0)
    assert samples["pump-1.discharge_pressure"].value == pytest.approx(4.2, abs=0.2)
    assert samples["pump-1.motor_speed"].value == pytest.approx(2950, abs=20)
    assert samples["pump-1.run_state"].value == 1.0
    assert all(math.isfinite(s.value or math.nan) for s in samples.values())
