"""CanDriver against the real python-can virtual bus, driven by the simulator's CanMachine."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import can
import pytest

from gateway.core.clock import ManualClock
from gateway.core.errors import ConfigError, DeviceUnreachable
from gateway.core.interfaces import Record
from gateway.core.records import Quality, Sample, Tag
from protocols.can.config import CanConnection, CanSignal
from protocols.can.driver import CanDriver
from simulator.can_bus import DEMO_DBC, CanMachine, run_can_machine

_channels = itertools.count()

SIGNALS = [
    CanSignal(name="speed", message="MotorData", signal="SpeedRpm"),
    CanSignal(name="current", message="MotorData", signal="CurrentA"),
    CanSignal(name="winding", message="MotorData", signal="WindingTemp"),
    CanSignal(name="state", message="MotorStatus", signal="State"),
    CanSignal(name="fault", message="MotorStatus", signal="FaultCode"),
    CanSignal(name="hours", message="MotorStatus", signal="OperatingHours"),
    CanSignal(name="bearing_de", message="BearingTemps", signal="BearingTempDE"),
]


def _channel() -> str:
    # The virtual bus is process-wide: one channel per test keeps tests apart.
    return f"gw-test-{next(_channels)}"


def _driver(
    channel: str,
    clock: ManualClock,
    signals: Sequence[CanSignal] = SIGNALS,
    dbc: Path = DEMO_DBC,
    **connection: object,
) -> CanDriver:
    conn = CanConnection.model_validate(
        {"protocol": "can", "interface": "virtual", "channel": channel, "dbc": "demo.dbc",
         **connection}
    )
    tags = [Tag(id=f"m.{s.name}", asset="m") for s in signals]
    # A short receive poll keeps each exit (which waits for the receive thread) quick.
    return CanDriver("m", conn, signals, tags, dbc, clock, receive_poll_s=0.02)


async def _take(stream: AsyncIterator[Record], count: int) -> list[Sample]:
    taken: list[Sample] = []
    async with asyncio.timeout(3.0):
        while len(taken) < count:
            record = await anext(stream)
            assert isinstance(record, Sample)
            taken.append(record)
    return taken


async def _take_until(
    stream: AsyncIterator[Record], done: Callable[[Sample], bool]
) -> list[Sample]:
    taken: list[Sample] = []
    async with asyncio.timeout(3.0):
        while not taken or not done(taken[-1]):
            record = await anext(stream)
            assert isinstance(record, Sample)
            taken.append(record)
    return taken


def _receive_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("can-recv")]


async def test_decodes_dbc_signals_with_scaling() -> None:
    channel, clock = _channel(), ManualClock()
    async with _driver(channel, clock) as driver, CanMachine(channel) as machine:
        stream = driver.records()
        machine.send(
            "MotorData",
            {"SpeedRpm": 1506.5, "CurrentA": -12.3, "WindingTemp": 65, "DcLinkVoltage": 560},
        )
        samples = await _take(stream, 3)
    assert {s.tag: s.value for s in samples} == pytest.approx(
        {"m.speed": 1506.5, "m.current": -12.3, "m.winding": 65.0}
    )
    assert all(s.quality is Quality.GOOD and s.ts == clock.now() for s in samples)
    assert driver.statistics().decoded == 1


async def test_multiplexed_pages_update_only_their_signals() -> None:
    channel, clock = _channel(), ManualClock()
    async with _driver(channel, clock) as driver, CanMachine(channel) as machine:
        stream = driver.records()
        machine.fault_code = 17
        machine.send("MotorStatus")  # page 0
        machine.send("MotorStatus")  # page 1
        samples = await _take(stream, 3)
    assert [(s.tag, s.value) for s in samples] == [
        ("m.state", 2.0),
        ("m.fault", 17.0),
        ("m.hours", pytest.approx(machine.operating_hours)),
    ]


async def test_extended_frame_ids_are_decoded() -> None:
    channel, clock = _channel(), ManualClock()
    async with _driver(channel, clock) as driver, CanMachine(channel) as machine:
        stream = driver.records()
        machine.send("BearingTemps", {"BearingTempDE": 71.5, "BearingTempNDE": 60.0})
        [sample] = await _take(stream, 1)
    assert (sample.tag, sample.value) == ("m.bearing_de", 71.5)


async def test_unknown_and_unused_ids_are_ignored_and_counted() -> None:
    channel, clock = _channel(), ManualClock()
    signals = [CanSignal(name="speed", message="MotorData", signal="SpeedRpm")]
    async with _driver(channel, clock, signals) as driver, CanMachine(channel) as machine:
        stream = driver.records()
        machine.send_raw(0x7FF, bytes(8))
        machine.send_raw(0x100, bytes(8), extended=True)  # extended 0x100 is not DBC's 0x100
        machine.send("MotorStatus")  # in the DBC, but no signal of it is configured
        machine.send("MotorData", {"SpeedRpm": 900, "CurrentA": 0, "WindingTemp": 0,
                                   "DcLinkVoltage": 0})
        [sample] = await _take(stream, 1)
        stats = driver.statistics()
    assert (sample.tag, sample.value) == ("m.speed", 900.0)
    assert (stats.frames, stats.unknown_ids, stats.ignored, stats.decoded) == (4, 2, 1, 1)


async def test_wrong_dlc_gives_bad_samples_never_a_value() -> None:
    channel, clock = _channel(), ManualClock()
    async with _driver(channel, clock) as driver, CanMachine(channel) as machine:
        stream = driver.records()
        machine.send_malformed("MotorData", length=3)
        samples = await _take(stream, 3)
        assert driver.statistics().malformed == 1
    assert [s.tag for s in samples] == ["m.speed", "m.current", "m.winding"]
    for sample in samples:
        assert sample.quality is Quality.BAD
        assert sample.value is None
        assert sample.reason == "malformed frame: 3 data bytes, DBC expects 8 for `MotorData`"


async def test_undefined_multiplexer_page_is_malformed() -> None:
    channel, clock = _channel(), ManualClock()
    async with _driver(channel, clock) as driver, CanMachine(channel) as machine:
        stream = driver.records()
        machine.send_raw(0x200, bytes([9, 0, 0, 0, 0, 0, 0, 0]))
        samples = await _take(stream, 3)
    assert {s.tag for s in samples} == {"m.state", "m.fault", "m.hours"}
    assert all(s.value is None and "got 9" in (s.reason or "") for s in samples)


async def test_value_outside_dbc_range_is_uncertain() -> None:
    channel, clock = _channel(), ManualClock()
    signals = [CanSignal(name="state", message="MotorStatus", signal="State")]
    async with _driver(channel, clock, signals) as driver, CanMachine(channel) as machine:
        stream = driver.records()
        machine.send_raw(0x200, bytes([0, 255, 0, 0, 0, 0, 0, 0]))
        [sample] = await _take(stream, 1)
    assert sample.quality is Quality.UNCERTAIN
    assert sample.reason == "255 outside DBC range [0, 3]"


async def test_message_that_stops_turns_stale_once_and_recovers() -> None:
    channel, clock = _channel(), ManualClock()
    signals = [
        # Long cycle: never stale in this test, whatever the real-time tick does.
        CanSignal(name="speed", message="MotorData", signal="SpeedRpm", cycle_ms=1000),
        CanSignal(name="bearing_de", message="BearingTemps", signal="BearingTempDE", cycle_ms=200),
    ]
    async with _driver(channel, clock, signals) as driver, CanMachine(channel) as machine:
        stream = driver.records()
        machine.send("MotorData")
        machine.send("BearingTemps")
        assert [s.quality for s in await _take(stream, 2)] == [Quality.GOOD] * 2

        machine.pause("BearingTemps")
        clock.advance(1.0)  # BearingTemps: 1000 ms silent, stale after 3 x 200 ms
        machine.send("MotorData")
        seen = await _take_until(stream, lambda s: s.tag == "m.bearing_de")
        stale = seen[-1]
        assert stale.quality is Quality.BAD and stale.value is None
        assert stale.reason == "stale: no frame for 1000 ms"

        clock.advance(1.0)  # still silent: no second stale sample
        machine.send("MotorData")
        clock.advance(1.0)
        machine.send("MotorData")
        more = await _take(stream, 2)
        assert [s.tag for s in more] == ["m.speed", "m.speed"]

        machine.resume("BearingTemps")
        machine.send("BearingTemps")
        [back] = await _take(stream, 1)
        assert (back.tag, back.quality) == ("m.bearing_de", Quality.GOOD)
        assert driver.statistics().stale == 1


async def test_signal_that_never_arrives_turns_stale() -> None:
    channel, clock = _channel(), ManualClock()
    signals = [CanSignal(name="speed", message="MotorData", signal="SpeedRpm")]  # DBC 100 ms
    async with _driver(channel, clock, signals) as driver:
        stream = driver.records()
        clock.advance(0.5)
        [sample] = await _take(stream, 1)
    assert sample.reason == "stale: no frame for 500 ms"


async def test_bus_off_raises_device_unreachable() -> None:
    channel, clock = _channel(), ManualClock()
    async with _driver(channel, clock) as driver, CanMachine(channel) as machine:
        stream = driver.records()
        machine.send_error_frame(bus_off=True)
        with pytest.raises(DeviceUnreachable, match="bus-off"):
            await _take(stream, 1)
        assert driver.statistics().error_frames == 1


async def test_single_error_frames_are_counted_a_burst_is_a_lost_bus() -> None:
    channel, clock = _channel(), ManualClock()
    signals = [CanSignal(name="bearing_de", message="BearingTemps", signal="BearingTempDE",
                         cycle_ms=10_000)]
    async with (
        _driver(channel, clock, signals, error_frames_per_s_limit=3) as driver,
        CanMachine(channel) as machine,
    ):
        stream = driver.records()
        machine.send_error_frame()
        machine.send_error_frame()
        machine.send("BearingTemps")
        [sample] = await _take(stream, 1)  # frames are handled when the stream is pulled
        assert sample.tag == "m.bearing_de"
        clock.advance(1.5)  # the first two fall out of the one-second window
        machine.send_error_frame()
        machine.send("BearingTemps")
        [sample] = await _take(stream, 1)
        assert sample.tag == "m.bearing_de"
        assert driver.statistics().error_frames == 3
        machine.send_error_frame()
        machine.send_error_frame()
        with pytest.raises(DeviceUnreachable, match="3 error frames within 1 s"):
            await _take(stream, 1)


async def test_filters_are_applied_by_the_bus() -> None:
    channel, clock = _channel(), ManualClock()
    filters = [{"can_id": 0x100, "can_mask": 0x7FF, "extended": False}]
    async with (
        _driver(channel, clock, filters=filters) as driver,
        CanMachine(channel) as machine,
    ):
        stream = driver.records()
        machine.send("MotorStatus")
        machine.send("BearingTemps")
        machine.send("MotorData")
        samples = await _take(stream, 3)
        assert {s.tag for s in samples} == {"m.speed", "m.current", "m.winding"}
        assert driver.statistics().frames == 1


async def test_full_buffer_drops_the_oldest_frames_and_counts_them() -> None:
    channel, clock = _channel(), ManualClock()
    signals = [CanSignal(name="speed", message="MotorData", signal="SpeedRpm")]
    async with (
        _driver(channel, clock, signals, receive_buffer_frames=16) as driver,
        CanMachine(channel) as machine,
    ):
        stream = driver.records()
        for rpm in range(100):  # nobody reads the stream meanwhile
            machine.send("MotorData", {"SpeedRpm": rpm, "CurrentA": 0, "WindingTemp": 0,
                                       "DcLinkVoltage": 0})
        for _ in range(300):  # the receive thread drains the bus on its own
            if driver.statistics().overruns >= 84:
                break
            await asyncio.sleep(0.01)
        samples = await _take(stream, 16)
    assert [s.value for s in samples] == [float(rpm) for rpm in range(84, 100)]
    assert driver.statistics().overruns == 84


async def test_dbc_that_does_not_parse_fails_enter_with_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.dbc"
    broken.write_text('VERSION ""\n\nBO_ 256 Foo: 8 A\n SG_ Bar : 0|8@1+ (1,0) [0|255 "x" A\n')
    driver = _driver(_channel(), ManualClock(), dbc=broken)
    with pytest.raises(ConfigError) as caught:
        await driver.__aenter__()
    await driver.__aexit__(None, None, None)
    assert caught.value.problems[0].file == str(broken)
    assert caught.value.problems[0].line == 4
    assert _receive_threads() == []


async def test_unknown_interface_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown python-can interface `nosuchcan`"):
        async with _driver(_channel(), ManualClock(), interface="nosuchcan"):
            pass


async def test_channel_that_cannot_be_opened_is_device_unreachable() -> None:
    driver = _driver("gw-missing-can9", ManualClock(), interface="socketcan")
    with pytest.raises(DeviceUnreachable, match="cannot open CAN channel `socketcan:gw-missing"):
        await driver.__aenter__()
    await driver.__aexit__(None, None, None)


async def test_exit_twice_leaves_no_thread_or_task() -> None:
    conn = CanConnection(protocol="can", interface="virtual", channel=_channel(), dbc="d.dbc")
    tags = [Tag(id=f"m.{s.name}", asset="m") for s in SIGNALS]
    driver = CanDriver("m", conn, SIGNALS, tags, DEMO_DBC, ManualClock())  # default poll
    await driver.__aenter__()
    assert len(_receive_threads()) == 1
    await driver.__aexit__(None, None, None)
    await driver.__aexit__(None, None, None)
    assert _receive_threads() == []


async def test_never_sends_on_the_bus() -> None:
    channel, clock = _channel(), ManualClock()
    listener = can.Bus(interface="virtual", channel=channel)  # sees every frame anyone sends
    try:
        async with _driver(channel, clock, receive_own_messages=True) as driver:
            stream = driver.records()
            clock.advance(5.0)
            await _take(stream, len(SIGNALS))  # all stale: the driver ran its full cycle
        assert listener.recv(timeout=0.05) is None
    finally:
        listener.shutdown()


async def test_simulator_run_loop_feeds_every_configured_signal() -> None:
    channel, clock = _channel(), ManualClock()
    stop = asyncio.Event()
    async with _driver(channel, clock) as driver:
        stream = driver.records()
        runner = asyncio.create_task(
            run_can_machine(channel, stop_event=stop, period_s=0.005), name="can-machine"
        )
        try:
            seen: set[str] = set()
            async with asyncio.timeout(3.0):
                while seen != {f"m.{s.name}" for s in SIGNALS}:
                    record = await anext(stream)
                    assert isinstance(record, Sample) and record.quality is Quality.GOOD
                    seen.add(record.tag)
        finally:
            stop.set()
            await runner
