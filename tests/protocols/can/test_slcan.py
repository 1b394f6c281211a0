"""CAN across processes over slcan (issue 3): the gateway's CanDriver opens one end of a real
socat pty pair with python-can's own `slcan` interface; the simulator's slcan adapter serves the
other end, in this process or in a process of its own.

Each driver open costs 2 s: python-can's slcan sleeps that long after opening the port, and the
gateway keeps python-can's defaults on purpose, so these tests open the driver three times only.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import can
import pytest

from gateway.core.clock import ManualClock
from gateway.core.errors import BadResponse
from gateway.core.interfaces import Record
from gateway.core.records import Quality, Sample, Tag
from protocols.can.config import CanConnection, CanSignal
from protocols.can.driver import CanDriver
from simulator.can_bus import DEMO_DBC, CanMachine
from simulator.ptypair import PtyPair, pty_pair
from simulator.slcan import SlcanAdapter, encode_frame, parse_frame

REPO = Path(__file__).resolve().parents[3]

SIGNALS = [
    CanSignal(name="speed", message="MotorData", signal="SpeedRpm"),
    CanSignal(name="winding", message="MotorData", signal="WindingTemp"),
    CanSignal(name="state", message="MotorStatus", signal="State"),
    CanSignal(name="hours", message="MotorStatus", signal="OperatingHours"),
    CanSignal(name="bearing_de", message="BearingTemps", signal="BearingTempDE"),
]
# What CanMachine models at its defaults (1480 rpm, load 0.6, no fault).
EXPECTED = {
    "m.speed": 1480.0,
    "m.winding": 75.0,
    "m.state": 1.0,
    "m.hours": 12_345.6,
    "m.bearing_de": 55.0,
}
MOTOR_DATA_TAGS = {"m.speed", "m.winding"}


def _driver(channel: Path, clock: ManualClock) -> CanDriver:
    connection = CanConnection.model_validate(
        {
            "protocol": "can",
            "interface": "slcan",
            "channel": str(channel),
            "bitrate": 500_000,
            "dbc": "demo_machine.dbc",
        }
    )
    tags = [Tag(id=f"m.{s.name}", asset="m") for s in SIGNALS]
    return CanDriver("m", connection, SIGNALS, tags, DEMO_DBC, clock, receive_poll_s=0.02)


async def _until(
    stream: AsyncIterator[Record], done: Callable[[list[Sample]], bool], timeout_s: float = 5.0
) -> list[Sample]:
    taken: list[Sample] = []
    async with asyncio.timeout(timeout_s):
        while not done(taken):
            record = await anext(stream)
            assert isinstance(record, Sample)
            taken.append(record)
    return taken


def _latest_good(samples: Sequence[Sample]) -> dict[str, float]:
    values: dict[str, float] = {}
    for sample in samples:
        if sample.quality is Quality.GOOD:
            assert isinstance(sample.value, float)
            values[sample.tag] = sample.value
    return values


def _all_good_seen(samples: list[Sample]) -> bool:
    return set(_latest_good(samples)) == set(EXPECTED)


async def _run_machine(machine: CanMachine, stop: asyncio.Event) -> None:
    await machine.run(stop, period_s=0.02)


async def _eventually(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    # The state changes in the adapter's thread, which has no asyncio.Event to set.
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- the protocol, line by line ------------------------------------------------------------


def _exchange(fd: int, command: bytes, reply_bytes: int) -> bytes:
    os.write(fd, command)
    reply = b""
    while len(reply) < reply_bytes:
        ready, _, _ = select.select([fd], [], [], 2.0)
        assert ready, f"no reply to {command!r}; got {reply!r}"
        reply += os.read(fd, 256)
    return reply


def _raw_host(path: Path) -> int:
    import tty

    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    return fd


async def test_adapter_answers_the_host_like_a_usb_can_adapter(tmp_path: Path) -> None:
    async with pty_pair(tmp_path / "plant", tmp_path / "gw") as pair:
        adapter = SlcanAdapter(pair.plant_end)
        host = _raw_host(pair.gateway_end)
        try:
            # python-can's set-up sequence for bitrate 500000, then the queries it offers.
            assert _exchange(host, b"C\rS6\r\rO\r", 3) == b"\r\r\r"
            assert adapter.is_open and adapter.bitrate == 500_000
            assert _exchange(host, b"V\r", 6) == b"V1013\r"
            assert _exchange(host, b"N\r", 6) == b"NSIM1\r"
            assert _exchange(host, b"F\r", 4) == b"F00\r"
            # Bit rate while open, open twice, timestamps, unknown: BELL, as Lawicel says.
            assert _exchange(host, b"S4\rO\rZ1\rQ\r", 4) == b"\a\a\a\a"
            assert adapter.bitrate == 500_000
            # A transmit from the host is acknowledged and reaches recv().
            assert _exchange(host, b"t1232ABCD\r", 2) == b"z\r"
            sent = adapter.recv(timeout=1.0)
            assert sent is not None and sent.arbitration_id == 0x123
            assert bytes(sent.data) == b"\xab\xcd"
            # A bus frame goes up the line while open ...
            adapter.send(can.Message(arbitration_id=0x18FF1001, data=b"\x01\x02", dlc=2))
            assert _exchange(host, b"", 15) == b"T18FF100120102\r"
            # ... and not after the host closed the channel.
            assert _exchange(host, b"C\r", 1) == b"\r"
            adapter.send(
                can.Message(arbitration_id=0x100, data=b"\x01", dlc=1, is_extended_id=False)
            )
            assert select.select([host], [], [], 0.05)[0] == []
            stats = adapter.statistics()
            assert (stats.frames_to_host, stats.frames_dropped_closed) == (1, 1)
            assert (stats.host_opens, stats.frames_from_host, stats.rejected) == (1, 1, 4)
            with pytest.raises(can.CanOperationError, match="error frames"):
                adapter.send(can.Message(is_error_frame=True))
        finally:
            os.close(host)
            adapter.shutdown()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("t1232ABCD", (0x123, False, False, b"\xab\xcd")),
        ("T18FF10010", (0x18FF1001, True, False, b"")),
        ("r7FF8", (0x7FF, False, True, b"")),
        ("t800", None),  # standard id above 0x7FF
        ("t1239", None),  # DLC 9
        ("t1232AB", None),  # fewer bytes than the DLC
        ("t12Z2ABCD", None),
        ("T123", None),
        ("x", None),
    ],
)
def test_parses_host_transmit_lines(
    line: str, expected: tuple[int, bool, bool, bytes] | None
) -> None:
    frame = parse_frame(line)
    if expected is None:
        assert frame is None
    else:
        assert frame is not None
        got = (frame.arbitration_id, frame.is_extended_id, frame.is_remote_frame, bytes(frame.data))
        assert got == expected
        assert encode_frame(frame) == line.encode() + b"\r"


# --- the gateway's driver over the line ----------------------------------------------------


async def test_dbc_signals_decode_end_to_end_and_a_paused_message_goes_stale(
    tmp_path: Path,
) -> None:
    clock, stop = ManualClock(), asyncio.Event()
    async with (
        pty_pair(tmp_path / "plant", tmp_path / "gw") as pair,
        CanMachine(str(pair.plant_end), interface="slcan") as machine,
    ):
        runner = asyncio.create_task(_run_machine(machine, stop), name="can-machine")
        try:
            async with _driver(pair.gateway_end, clock) as driver:
                stream = driver.records()
                samples = await _until(stream, _all_good_seen)
                assert _latest_good(samples) == pytest.approx(EXPECTED)
                assert not [s for s in samples if s.quality is not Quality.GOOD]

                machine.pause("MotorData")
                clock.advance(0.5)  # > 3 cycles of 100 ms; the other messages stay fresh
                stale = await _until(
                    stream,
                    lambda got: {s.tag for s in got if s.quality is Quality.BAD} >= MOTOR_DATA_TAGS,
                )
                bad = [s for s in stale if s.quality is Quality.BAD]
                assert {s.tag for s in bad} == MOTOR_DATA_TAGS
                assert all(s.value is None and "stale" in (s.reason or "") for s in bad)

                machine.resume("MotorData")
                back = await _until(stream, lambda got: set(_latest_good(got)) >= MOTOR_DATA_TAGS)
                assert _latest_good(back)["m.speed"] == 1480.0
                assert driver.statistics().stale == 2
            adapter = machine.bus
            assert isinstance(adapter, SlcanAdapter)
            assert adapter.bitrate == 500_000  # the gateway's `S6` reached the adapter
            assert adapter.statistics().host_opens == 1
            await _eventually(lambda: not adapter.is_open)  # python-can sent `C` on shutdown
        finally:
            stop.set()
            await runner
    _assert_torn_down(pair)


async def test_garbled_serial_lines_are_counted_never_values(tmp_path: Path) -> None:
    clock = ManualClock()
    async with (
        pty_pair(tmp_path / "plant", tmp_path / "gw") as pair,
        CanMachine(str(pair.plant_end), interface="slcan") as machine,
        _driver(pair.gateway_end, clock) as driver,
    ):
        adapter = machine.bus
        assert isinstance(adapter, SlcanAdapter)
        stream = driver.records()
        await _eventually(lambda: adapter.is_open)  # frames sent before `O` never go up
        machine.send("MotorData")
        first = await _until(stream, lambda got: len(got) == 2)
        assert _latest_good(first) == {"m.speed": 1480.0, "m.winding": 75.0}

        # Line noise python-can cannot parse: skipped and counted.
        for noise in (b"t10", b"t10Z8", b"t1002ZZZZ", b"T18FF"):
            adapter.write_line(noise)
        # Lines it parses into frames the DBC refuses: BAD samples, no value.
        adapter.write_line(b"t1003AABBCC")  # MotorData with 3 bytes instead of 8
        adapter.write_line(b"t1008" + b"00" * 7)  # DLC 8, seven bytes
        adapter.write_line(b"t7FF0")  # an id the DBC does not know
        machine.temperature_offset_c = 10.0
        machine.send("MotorData")  # a good frame still gets through afterwards
        after = await _until(stream, lambda got: len(got) == 6)

        bad = [s for s in after if s.quality is Quality.BAD]
        assert len(bad) == 4 and {s.tag for s in bad} == MOTOR_DATA_TAGS
        assert all(s.value is None and "malformed" in (s.reason or "") for s in bad)
        assert _latest_good(after) == {"m.speed": 1480.0, "m.winding": 85.0}
        stats = driver.statistics()
        assert (stats.malformed, stats.unknown_ids, stats.decoded) == (4 + 2, 1, 2)

        # A burst of noise means the line is unusable: the stream fails, and the source
        # reconnects with a fresh bus.
        for _ in range(25):
            adapter.write_line(b"t10")
        with pytest.raises(BadResponse, match="20 lines in a row"):
            await _until(stream, lambda got: False)
    _assert_torn_down(pair)


def _assert_torn_down(pair: PtyPair) -> None:
    assert not _alive(pair.socat_pid)
    assert not pair.plant_end.is_symlink() and not pair.gateway_end.is_symlink()
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if n.startswith(("slcan-adapter", "can-recv"))], names


# --- across processes ----------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children.extend(int(child) for child in text)
    return children


async def _loop_stall_s(stop: asyncio.Event) -> float:
    """The longest the event loop was unavailable while `stop` was not set."""
    loop = asyncio.get_running_loop()
    longest, last = 0.0, loop.time()
    while not stop.is_set():
        await asyncio.sleep(0.01)
        now = loop.time()
        longest, last = max(longest, now - last), now
    return longest


async def test_simulator_in_its_own_process_serves_the_gateway(tmp_path: Path) -> None:
    gateway_tty = tmp_path / "can-gw"
    plant = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulator.can_bus",
        "--gateway-tty",
        str(gateway_tty),
        "--period-s",
        "0.02",
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(10.0):
            while not gateway_tty.is_symlink():
                assert plant.returncode is None, "the plant process died"
                await asyncio.sleep(0.02)
        [socat] = _children(plant.pid)

        clock, opened = ManualClock(), asyncio.Event()
        watch = asyncio.create_task(_loop_stall_s(opened), name="loop-watch")
        async with _driver(gateway_tty, clock) as driver:
            opened.set()
            stream = driver.records()
            samples = await _until(stream, _all_good_seen)
            assert _latest_good(samples) == pytest.approx(EXPECTED)
        # python-can's slcan sleeps 2 s after opening the port: not on our event loop.
        assert await watch < 0.5

        plant.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5.0):
            assert await plant.wait() == 0
    finally:
        if plant.returncode is None:
            plant.kill()
            await plant.wait()
        assert plant.stderr is not None
        log = (await plant.stderr.read()).decode()
    assert "host opened the channel" in log, log
    assert not _alive(socat)
    assert not gateway_tty.is_symlink()
    assert not gateway_tty.with_name("can-gw.plant").is_symlink()
