"""Bits, strings, enumerations, waveforms, deadband and answer validation, against the real
pymodbus server on loopback (the simulator's)."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.core.clock import ManualClock
from gateway.core.errors import DeviceTimeout
from gateway.core.records import Quality, Sample, Waveform
from protocols.modbus.config import DataType, ModbusPoint, RegisterTable
from protocols.modbus.decode import encode_string
from protocols.modbus.points import check_points, log_read_plan
from simulator.modbus_server import ResponseFault
from simulator.pump import pump_registers, type_pattern_points
from tests.support.modbus import ModbusSimServer, RegisterMap, make_driver, point

H = RegisterTable.HOLDING


def by_tag(records):
    return {r.tag: r for r in records}


def mixed_registers() -> RegisterMap:
    registers = RegisterMap(holding=600, input=64, coils=64, discrete=32)
    registers.write(RegisterTable.COILS, 0, [1, 0, 1, 1])
    registers.write(RegisterTable.COILS, 40, [1])
    registers.write(RegisterTable.DISCRETE, 17, [1])
    registers.write(H, 0, [0b1000_0000_0000_0100])  # status word: bits 2 and 15 set
    registers.write(H, 1, encode_string("PX-7", 4))  # serial number, NUL padded
    registers.write(H, 5, [1])  # run state code 1
    registers.write(H, 6, [9])  # a state code nobody configured
    registers.write(H, 7, [25600])  # sample rate register (Hz)
    wave = (1000 * np.sin(2 * np.pi * np.arange(256) / 32)).round().astype(int)
    registers.write(H, 100, [int(v) & 0xFFFF for v in wave])  # int16 counts
    return registers


MIXED_POINTS = [
    point(name="pump_on", table="coils", address=0, type="bit"),
    point(name="valve", table="coils", address=2, type="bit"),
    point(name="far_coil", table="coils", address=40, type="bit"),
    point(name="door", table="discrete", address=17, type="bit"),
    point(name="door_closed", table="discrete", address=16, type="bit"),
    point(name="alarm_bit", address=0, type="bit", bit=2),
    point(name="fault_bit", address=0, type="bit", bit=15),
    point(name="ok_bit", address=0, type="bit", bit=3),
    point(name="serial", address=1, type="string", length=4),
    point(name="state", address=5, enum={0: "stopped", 1: "running"}),
    point(name="odd_state", address=6, enum={0: "stopped", 1: "running"}),
    point(name="rate", address=7),
    point(name="vib", address=100, type="int16", scale=0.001, unit="g",
          waveform={"samples": 256, "sample_rate_point": "rate"}),
]  # fmt: skip


async def test_reads_bits_strings_states_and_a_waveform_in_one_poll():
    registers = mixed_registers()
    async with (
        ModbusSimServer(registers) as server,
        make_driver(server.port, MIXED_POINTS) as driver,
    ):
        records = by_tag(await driver.read())
        texts = driver.texts()
        labels = driver.state_labels()
        functions = sorted({r.function_code for r in server.requests})
    values = {tag: r.value for tag, r in records.items() if isinstance(r, Sample)}
    assert values == {
        "dev.pump_on": 1.0, "dev.valve": 1.0, "dev.far_coil": 1.0, "dev.door": 1.0,
        "dev.door_closed": 0.0, "dev.alarm_bit": 1.0, "dev.fault_bit": 1.0, "dev.ok_bit": 0.0,
        "dev.state": 1.0, "dev.odd_state": 9.0, "dev.rate": 25600.0,
    }  # fmt: skip
    assert "dev.serial" not in records  # text is device metadata, not a Sample
    assert texts == {"dev.serial": "PX-7"}
    assert labels == {
        "dev.state": {0: "stopped", 1: "running"},
        "dev.odd_state": {0: "stopped", 1: "running"},
    }
    assert records["dev.state"].quality is Quality.GOOD
    odd = records["dev.odd_state"]
    assert odd.quality is Quality.UNCERTAIN
    assert odd.reason == "state 9 is not in the configured enumeration"
    wave = records["dev.vib"]
    assert isinstance(wave, Waveform)
    assert wave.sample_rate == 25600.0
    assert wave.unit == "g"
    assert wave.data.shape == (256,)
    assert wave.data[8] == pytest.approx(1.0)  # sin(pi/2) * 1000 counts * 0.001 g
    assert wave.data[24] == pytest.approx(-1.0)
    assert functions == [1, 2, 3]


def test_read_plan_is_few_requests_and_logged(caplog):
    caplog.set_level("INFO", logger="protocols.modbus")
    conn = make_driver(1, MIXED_POINTS)._connection
    summary = log_read_plan("dev", MIXED_POINTS, conn)
    # coils 0..40 in one read, discrete 16..17 in one, holding 0..7 in one, and the waveform
    # (256 registers) in reads of at most 125.
    assert summary.startswith("6 requests, 264 registers and 43 bits (")
    assert "holding 100+125, holding 225+125, holding 350+6" in summary
    assert caplog.messages == [f"Device `dev` read plan: {summary}."]


def test_devices_that_reject_large_reads_get_smaller_ones():
    conn = make_driver(1, MIXED_POINTS, max_registers_per_read=64, max_bits_per_read=8)._connection
    summary = log_read_plan("dev", MIXED_POINTS, conn)
    assert "holding 100+64, holding 164+64, holding 228+64, holding 292+64" in summary
    assert "coils 0+3, coils 40+1" in summary


async def test_a_short_waveform_read_makes_a_bad_sample_not_a_waveform():
    registers = mixed_registers()
    async with (
        ModbusSimServer(registers) as server,
        make_driver(server.port, MIXED_POINTS[-2:]) as driver,
    ):
        server.fault = ResponseFault.SHORT_PAYLOAD
        records = by_tag(await driver.read())
    vib = records["dev.vib"]
    assert isinstance(vib, Sample)
    assert (vib.quality, vib.value) == (Quality.BAD, None)
    assert "answer holds" in (vib.reason or "")


async def test_fixed_sample_rate_waveform_with_word_order():
    points = [point(name="vib", table="input", address=0, type="float32", word_order="CDAB",
                    waveform={"samples": 64, "sample_rate_hz": 12800.0})]  # fmt: skip
    registers = RegisterMap(holding=8, input=128)
    for k in range(64):
        registers.write_value(RegisterTable.INPUT, 2 * k, k * 0.5, DataType.FLOAT32, "CDAB")
    async with ModbusSimServer(registers) as server, make_driver(server.port, points) as driver:
        (wave,) = await driver.read()
    assert isinstance(wave, Waveform)
    assert wave.sample_rate == 12800.0
    assert wave.data.tolist() == [k * 0.5 for k in range(64)]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (ResponseFault.WRONG_FUNCTION_CODE, "answer has function code"),
        (ResponseFault.SHORT_PAYLOAD, "answer holds"),
    ],
)
async def test_untrustworthy_answers_to_bit_and_register_reads_are_bad(fault, reason):
    registers = mixed_registers()
    points = [point(name="coil_byte", table="coils", address=0, type="bit"),
              point(name="coil_end", table="coils", address=8, type="bit"),
              MIXED_POINTS[9]]  # fmt: skip
    async with ModbusSimServer(registers) as server, make_driver(server.port, points) as driver:
        server.fault = fault
        records = by_tag(await driver.read())
        assert all(r.quality is Quality.BAD and r.value is None for r in records.values())
        assert all(reason in (r.reason or "") for r in records.values())
        server.fault = ResponseFault.NONE  # the same connection recovers
        records = by_tag(await driver.read())
        values = {t: r.value for t, r in records.items()}
        assert values == {"dev.coil_byte": 1.0, "dev.coil_end": 0.0, "dev.state": 1.0}


@pytest.mark.parametrize("fault", [ResponseFault.WRONG_UNIT_ID, ResponseFault.WRONG_TRANSACTION_ID])
async def test_answers_for_another_unit_or_transaction_are_never_taken(fault):
    """The TCP link skips a frame whose unit or transaction id does not match the request
    (as pymodbus's client did), so the request times out: the source turns that into BAD
    samples and a counted error. What matters is that the foreign answer never becomes a value."""
    registers = mixed_registers()
    async with (
        ModbusSimServer(registers) as server,
        make_driver(server.port, MIXED_POINTS[9:10], timeout_s=0.1) as driver,
    ):
        server.fault = fault
        with pytest.raises(DeviceTimeout, match=r"no answer within 0\.1 s"):
            await driver.read()


async def test_deadband_and_heartbeat_report_by_exception():
    clock = ManualClock()
    registers = RegisterMap(holding=8, input=8)
    points = [
        point(name="abs", address=0, deadband=5, heartbeat_s=10),
        point(name="pct", address=1, deadband=10, deadband_mode="percent"),
        point(name="all", address=2),
    ]
    registers.write(H, 0, [100, 100, 1])
    async with (
        ModbusSimServer(registers) as server,
        make_driver(server.port, points, clock=clock) as driver,
    ):

        async def poll() -> dict[str, float | None]:
            clock.advance(1)
            return {r.tag: r.value for r in await driver.read()}

        assert await poll() == {"dev.abs": 100, "dev.pct": 100, "dev.all": 1}  # first
        registers.write(H, 0, [104, 109])  # inside both bands
        assert await poll() == {"dev.all": 1}
        registers.write(H, 0, [106, 111])  # abs: 6 > 5; pct: 11 % > 10 %
        assert await poll() == {"dev.abs": 106, "dev.pct": 111, "dev.all": 1}
        clock.advance(8)  # 9 s since abs was reported: not yet
        assert await poll() == {"dev.all": 1}
        assert await poll() == {"dev.abs": 106, "dev.all": 1}  # heartbeat after 10 s
        server.exception_code = 4
        bad = await poll()  # a quality change always passes
        assert bad == {"dev.abs": None, "dev.pct": None, "dev.all": None}
        server.exception_code = None
        assert await poll() == {"dev.abs": 106, "dev.pct": 111, "dev.all": 1}


async def test_a_full_session_of_every_point_type_sends_only_read_function_codes():
    registers = pump_registers()
    mixed = mixed_registers()
    async with ModbusSimServer(units={1: registers, 2: mixed}) as server:
        pattern = [p for p, _ in type_pattern_points()]
        # A generous timeout: what is asserted is which requests were sent, not how fast.
        async with (
            make_driver(server.port, pattern, unit_id=1, timeout_s=2.0) as first,
            make_driver(
                server.port, MIXED_POINTS, unit_id=2, device_id="mixed", timeout_s=2.0
            ) as second,
        ):
            for _ in range(3):
                assert len(await first.read()) == len(pattern)
                assert len(await second.read()) == len(MIXED_POINTS) - 1
    received = {r.function_code for r in server.requests}
    assert received == {1, 2, 3, 4}  # every read function was exercised ...
    assert len(server.requests) == 3 * (2 + 6)  # ... and nothing else was ever sent


def test_point_models_refuse_inconsistent_config():
    bad = [
        ({"name": "a", "table": "coils", "address": 0, "type": "uint16"}, "have type `bit`"),
        ({"name": "a", "address": 0, "type": "bit"}, "needs `bit: 0..15`"),
        ({"name": "a", "address": 0, "type": "string"}, "needs `length`"),
        ({"name": "a", "address": 0, "type": "float32", "enum": {0: "x"}}, "`enum` applies"),
        ({"name": "a", "address": 0, "heartbeat_s": 5}, "needs a `deadband`"),
        ({"name": "a", "address": 65000, "waveform": {"samples": 1024, "sample_rate_hz": 1}},
         "runs past 65535"),
        ({"name": "a", "address": 0, "waveform": {"samples": 8}}, "exactly one of"),
    ]  # fmt: skip
    for fields, message in bad:
        with pytest.raises(ValueError, match=message):
            ModbusPoint.model_validate(fields)
    wave = point(name="w", address=0, waveform={"samples": 4, "sample_rate_point": "nope"})
    assert check_points([wave, point(name="w", address=9)]) == [
        "point name `w` is used twice",
        "`w`: sample_rate_point `nope` is not a point of the device",
    ]
