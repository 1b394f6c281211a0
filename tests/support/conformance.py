"""Adapters that let one conformance suite run against every driver (issue 3, "All protocols").

Each `DriverCase` wraps one driver and a real server (or bus peer) on loopback:

- `start_server()` / `stop_server()` bring the device up and take it away (stop is what the
  "device disappears mid-poll" test does while the driver is connected);
- `make_driver()` gives a driver pointed at the running device, `make_unreachable_driver()` one
  pointed at a closed port, a missing pty or a channel that cannot be opened;
- `session(driver)` says how one batch is read: `read()` for polling drivers, records of
  `records()` until every tag has reported for streaming ones;
- `writes_seen()` lists what the device side recorded that is not a read, and
  `provoke_write()` makes another client write, to show that the recorder can see one.

The suite itself is tests/protocols/test_conformance.py. The OPC UA server takes about a second
to start, so one threaded server (tests.support.opcua.ThreadedServer) serves every OPC UA case of
a module; the Modbus servers, the pty pair and the CAN machine start in milliseconds and live in
each test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, cast

import can
import numpy as np
from asyncua import Client

from gateway.core.clock import ManualClock
from gateway.core.errors import DeviceUnreachable, DriverError
from gateway.core.interfaces import Record
from gateway.core.records import Quality, Sample, Tag, Waveform
from protocols.can.config import CanConnection, CanSignal
from protocols.can.driver import CanDriver
from protocols.modbus.config import DataType, RegisterTable
from protocols.modbus.driver import ModbusRtuLine, ModbusTcpDriver
from protocols.opcua.driver import OpcUaDriver
from simulator.can_bus import DEMO_DBC, CanMachine, run_can_machine
from tests.support import modbus, opcua
from tests.support.modbus import ModbusSimServer, RegisterMap

# Modbus write function codes never expected from the gateway: 5, 6, 15, 16 (write coils and
# registers), 22 (mask write), 23 (read/write multiple). Anything but 1-4 counts as a write.
MODBUS_READ_FUNCTIONS = frozenset({1, 2, 3, 4})


class ConformingDriver(Protocol):
    """What every driver (and the RTU line, whose lifecycle its units share) has in common."""

    def tags(self) -> Sequence[Tag]: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Session:
    """Reads batches from an entered driver: one poll, or one record per tag from a stream."""

    def __init__(
        self,
        driver: ConformingDriver,
        poll: Callable[[], Awaitable[Sequence[Record]]] | None = None,
        stream: AsyncIterator[Record] | None = None,
    ) -> None:
        if (poll is None) == (stream is None):
            raise ValueError("give either `poll` or `stream`")
        self.driver = driver
        self._poll = poll
        self._stream = stream

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    async def next_record(self) -> Record:
        if self._stream is None:
            raise RuntimeError("next_record() is for streaming sessions")
        return await anext(self._stream)

    async def read_batch(self) -> list[Record]:
        """One poll; or stream records until every tag of the driver has reported once."""
        if self._poll is not None:
            return list(await self._poll())
        wanted = {tag.id for tag in self.driver.tags()}
        seen: set[str] = set()
        batch: list[Record] = []
        while not wanted <= seen:
            record = await self.next_record()
            batch.append(record)
            seen.add(record.tag)
        return batch


@contextlib.asynccontextmanager
async def polling_session(
    driver: ConformingDriver, poll: Callable[[], Awaitable[Sequence[Record]]]
) -> AsyncIterator[Session]:
    yield Session(driver, poll=poll)


@contextlib.asynccontextmanager
async def streaming_session(
    driver: ConformingDriver, records: AsyncIterator[Record]
) -> AsyncIterator[Session]:
    """The stream is closed before the driver exits, as the source task does."""
    generator = cast(AsyncGenerator[Record, None], records)
    async with contextlib.aclosing(generator):
        yield Session(driver, stream=generator)


def healthy_problems(record: Record, tag_ids: set[str]) -> list[str]:
    """Why `record` is not a healthy reading of one of `tag_ids` (empty when it is)."""
    problems: list[str] = []
    if record.tag not in tag_ids:
        problems.append(f"{record.tag}: not one of driver.tags()")
    if record.quality is not Quality.GOOD:
        problems.append(f"{record.tag}: quality {record.quality.name}")
    if isinstance(record, Waveform):
        if record.data.size == 0 or not bool(np.isfinite(record.data).all()):
            problems.append(f"{record.tag}: waveform empty or not finite")
    elif not isinstance(record.value, int | float) or not math.isfinite(record.value):
        problems.append(f"{record.tag}: value {record.value!r} is not a finite number")
    return problems


def lost_problems(record: Record) -> list[str]:
    """Why `record` could be mistaken for a value after the device went away."""
    if isinstance(record, Waveform):
        return [f"{record.tag}: a waveform after the device went away"]
    if record.quality is not Quality.BAD or record.value is not None or not record.reason:
        return [f"{record.tag}: {record.quality.name} {record.value!r} after the device left"]
    return []


@dataclass
class DriverCase:
    """One driver and its device. Subclasses fill in the protocol; the suite sees only this."""

    name: str
    # The configured timeout after which a vanished device must have shown up as an error or
    # as BAD/stale samples (for CAN: stale_after of the slowest message, in clock time).
    configured_timeout_s: float
    # What a vanished device gives: a DriverError subclass raised, or None for BAD samples.
    loss_error: type[DriverError] | None
    # What refusing to connect gives (DeviceUnreachable where the protocol can tell).
    unreachable_error: type[DriverError] = DeviceUnreachable
    # Prefix of the threads the driver runs while entered (None: it runs none).
    thread_prefix: str | None = None

    async def start_server(self) -> None:
        raise NotImplementedError

    async def stop_server(self) -> None:
        raise NotImplementedError

    async def release(self) -> None:
        """End of test: free per-test resources; a shared server is left running."""
        await self.stop_server()

    def make_driver(self) -> ConformingDriver:
        raise NotImplementedError

    def make_unreachable_driver(self) -> ConformingDriver:
        raise NotImplementedError

    def session(self, driver: Any) -> contextlib.AbstractAsyncContextManager[Session]:
        return polling_session(driver, driver.read)

    async def settle_after_loss(self, session: Session) -> None:
        """Anything to do between stopping the device and reading again (CAN: see there)."""

    async def writes_seen(self) -> list[str]:
        """Requests that are not reads (CAN: frames nobody on the machine side sent), as the
        device side recorded them since `start_server()`."""
        raise NotImplementedError

    async def provoke_write(self) -> None:
        """Another client writes to the device: the positive control of `writes_seen()`."""
        raise NotImplementedError

    def reads_seen(self) -> int:
        """Read requests (or frames heard) at the device side: proves the recorder works."""
        raise NotImplementedError


# --- Modbus TCP ------------------------------------------------------------------------------

MODBUS_POINTS = [
    modbus.point(name="temperature", address=0, type="float32", unit="degC"),
    modbus.point(name="speed", table="input", address=0, type="uint16", scale=0.5, unit="rpm"),
    modbus.point(name="running", table="coils", address=3, type="bit"),
    modbus.point(name="door_closed", table="discrete", address=5, type="bit"),
]


def modbus_registers(temperature: float = 61.25, speed_counts: int = 2960) -> RegisterMap:
    """A map answering every MODBUS_POINTS point with a plausible value (all four tables)."""
    registers = RegisterMap(holding=16, input=16)
    registers.write_value(RegisterTable.HOLDING, 0, temperature, DataType.FLOAT32)
    registers.write(RegisterTable.INPUT, 0, [speed_counts])
    registers.write(RegisterTable.COILS, 3, [1])
    registers.write(RegisterTable.DISCRETE, 5, [1])
    return registers


@dataclass
class ModbusTcpCase(DriverCase):
    server: ModbusSimServer | None = None
    closed_port: int = 0  # a loopback port nobody listens on (modbus.unused_port())

    async def start_server(self) -> None:
        if self.server is None:
            self.server = ModbusSimServer(modbus_registers())
        if not self.server.running:
            await self.server.start()

    async def stop_server(self) -> None:
        if self.server is not None:
            await self.server.stop()

    def make_driver(self) -> ModbusTcpDriver:
        assert self.server is not None
        return modbus.make_driver(
            self.server.port, MODBUS_POINTS, timeout_s=self.configured_timeout_s
        )

    def make_unreachable_driver(self) -> ModbusTcpDriver:
        return modbus.make_driver(self.closed_port, MODBUS_POINTS)

    async def writes_seen(self) -> list[str]:
        assert self.server is not None
        return _modbus_writes(self.server)

    def reads_seen(self) -> int:
        assert self.server is not None
        return len(self.server.requests)

    async def provoke_write(self) -> None:
        """Write Single Register 0 = 1 as a raw Modbus TCP frame (MBAP + PDU)."""
        assert self.server is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        try:
            writer.write(bytes.fromhex("0001 0000 0006 01") + _WRITE_REGISTER_PDU)
            await writer.drain()
            await reader.readexactly(9)  # the exception answer: illegal function
        finally:
            writer.close()
            await writer.wait_closed()


# Write Single Register (function 6), address 0, value 1.
_WRITE_REGISTER_PDU = bytes.fromhex("06 0000 0001")


def _crc16_modbus(frame: bytes) -> bytes:
    """The RTU frame check (Modbus over serial line V1.02, section 6.2.2), low byte first."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def _modbus_writes(server: ModbusSimServer) -> list[str]:
    return [
        f"function {r.function_code} at {r.address} (unit {r.unit_id})"
        for r in server.requests
        if r.function_code not in MODBUS_READ_FUNCTIONS
    ]


# --- Modbus RTU ------------------------------------------------------------------------------

RTU_UNITS = {"fan-1": 1, "fan-2": 2}


@dataclass
class ModbusRtuCase(DriverCase):
    """Two units on one line (a socat pty pair) served by the pymodbus serial server.

    The "driver" whose lifecycle is tested is the line (`ModbusRtuLine`): it opens and closes
    the port; a batch is one `read()` of every unit on it.
    """

    directory: Path = field(default_factory=Path)
    server: ModbusSimServer | None = None
    _ends: tuple[str, str] | None = None
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def start_server(self) -> None:
        if self._ends is None:
            self._ends = await self._stack.enter_async_context(modbus.pty_pair(self.directory))
        if self.server is None:
            units = {
                unit: modbus_registers(40.0 + unit, 1000 * unit) for unit in RTU_UNITS.values()
            }
            self.server = ModbusSimServer(units=units, serial_port=self._ends[1])
        if not self.server.running:
            await self.server.start()

    async def stop_server(self) -> None:
        """The units fall silent; the cable (the pty pair) stays, as on a real line."""
        if self.server is not None:
            await self.server.stop()

    async def release(self) -> None:
        await self.stop_server()
        await self._stack.aclose()

    def _line(self, port: str) -> ModbusRtuLine:
        return ModbusRtuLine(
            port,
            [
                (
                    device_id,
                    modbus.rtu_connection(port, unit, timeout_s=self.configured_timeout_s),
                    MODBUS_POINTS,
                    modbus.tags_for(device_id, MODBUS_POINTS),
                )
                for device_id, unit in RTU_UNITS.items()
            ],
            ManualClock(),
        )

    def make_driver(self) -> ModbusRtuLine:
        assert self._ends is not None
        return self._line(self._ends[0])

    def make_unreachable_driver(self) -> ModbusRtuLine:
        return self._line(str(self.directory / "no-such-tty"))

    def session(self, driver: Any) -> contextlib.AbstractAsyncContextManager[Session]:
        line = cast(ModbusRtuLine, driver)

        async def read_every_unit() -> list[Record]:
            return [record for unit in line.units() for record in await unit.read()]

        return polling_session(line, read_every_unit)

    async def writes_seen(self) -> list[str]:
        assert self.server is not None
        return _modbus_writes(self.server)

    def reads_seen(self) -> int:
        assert self.server is not None
        return len(self.server.requests)

    async def provoke_write(self) -> None:
        """Write Single Register to unit 1 as a raw RTU frame from the gateway's end."""
        assert self._ends is not None and self.server is not None
        frame = bytes([RTU_UNITS["fan-1"]]) + _WRITE_REGISTER_PDU
        descriptor = os.open(self._ends[0], os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(descriptor, frame + _crc16_modbus(frame))
            server = self.server
            await modbus.wait_until(lambda: _modbus_writes(server), within_s=5.0)
        finally:
            os.close(descriptor)


# --- OPC UA ----------------------------------------------------------------------------------


def opcua_nodes(sim: opcua.OpcUaMachineServer, mode: str) -> list[Any]:
    return [
        opcua.node(name="temperature", node_id=sim.node_id("Temperature"), mode=mode),
        opcua.node(name="speed", node_id=sim.node_id("Speed"), mode=mode),
        opcua.node(name="state", node_id=sim.node_id("RunState"), mode=mode),
        opcua.node(
            name="vibration",
            node_id=sim.node_id("Vibration"),
            mode=mode,
            kind="waveform",
            sample_rate_node=sim.node_id("VibrationSampleRate"),
        ),
    ]


@dataclass
class OpcUaCase(DriverCase):
    """The shared threaded server; `mode` "poll" reads with `read()`, "subscribe" streams."""

    plant: opcua.ThreadedServer | None = None
    mode: str = "subscribe"
    closed_port: int = 0
    _stopped: bool = False
    _mutating_before: dict[str, int] = field(default_factory=dict)
    _reads_before: int = 0

    @property
    def sim(self) -> opcua.OpcUaMachineServer:
        assert self.plant is not None
        return self.plant.sim

    def _reads(self) -> int:
        return self.sim.requests["read"] + self.sim.requests["create_monitored_items"]

    async def start_server(self) -> None:
        assert self.plant is not None
        if self._stopped:
            await self.plant.call(self.sim.start())
            self._stopped = False
        self._mutating_before = dict(self.sim.mutating_requests())
        self._reads_before = self._reads()

    async def stop_server(self) -> None:
        assert self.plant is not None
        await self.plant.call(self.sim.stop())
        self._stopped = True

    async def release(self) -> None:
        """The server is shared by the module: power it up again if a test cut it."""
        if self._stopped:
            assert self.plant is not None
            await self.plant.call(self.sim.start())
            self._stopped = False

    def make_driver(self) -> OpcUaDriver:
        return opcua.make_driver(
            self.sim.endpoint,
            opcua_nodes(self.sim, self.mode),
            timeout_s=self.configured_timeout_s,
        )

    def make_unreachable_driver(self) -> OpcUaDriver:
        endpoint = f"opc.tcp://127.0.0.1:{self.closed_port}/edge-gateway/nobody"
        return opcua.make_driver(endpoint, opcua_nodes(self.sim, self.mode))

    def session(self, driver: Any) -> contextlib.AbstractAsyncContextManager[Session]:
        if self.mode == "poll":
            return polling_session(driver, driver.read)
        return streaming_session(driver, driver.records())

    async def writes_seen(self) -> list[str]:
        now = self.sim.mutating_requests()
        return [
            f"{service} x{count - self._mutating_before.get(service, 0)}"
            for service, count in sorted(now.items())
            if count != self._mutating_before.get(service, 0)
        ]

    def reads_seen(self) -> int:
        return self._reads() - self._reads_before

    async def provoke_write(self) -> None:
        async with Client(self.sim.endpoint, timeout=self.configured_timeout_s) as client:
            await client.get_node(self.sim.node_id("Setpoint")).write_value(41.0)


# --- CAN -------------------------------------------------------------------------------------

# One configured signal per frame (and per multiplexer page), so that the number of frames the
# driver has handled tells when every record of the frames sent so far has been yielded.
CAN_SIGNALS = [
    CanSignal(name="speed", message="MotorData", signal="SpeedRpm"),
    CanSignal(name="state", message="MotorStatus", signal="State"),  # page 0
    CanSignal(name="hours", message="MotorStatus", signal="OperatingHours"),  # page 1
    CanSignal(name="bearing_de", message="BearingTemps", signal="BearingTempDE"),
]
# BearingTemps cycles at 500 ms in the DBC; stale after 3 cycles (CanSignal default).
CAN_SLOWEST_STALE_S = 1.5
_MARKER_RPM = 1.5  # the machine runs at 1480 rpm: this speed marks its last frame
_can_channels = itertools.count()


@dataclass
class CanCase(DriverCase):
    """The simulator's CanMachine on a python-can virtual channel of this test alone.

    A second node (`listener`) on the channel hears every frame anyone sends; the machine counts
    what it sent, so anything more was sent by the gateway. Time: the driver runs on a
    ManualClock, so "the device went away" is made explicit by advancing it past stale_after.
    """

    clock: ManualClock = field(default_factory=ManualClock)
    channel: str = ""
    machine: CanMachine | None = None
    listener: can.BusABC | None = None
    _stop: asyncio.Event | None = None
    _runner: asyncio.Task[None] | None = None
    _heard: int = 0

    async def start_server(self) -> None:
        if not self.channel:
            self.channel = f"conformance-can-{next(_can_channels)}"
        if self.listener is None:  # first: it must hear the machine's first frame too
            self.listener = can.Bus(interface="virtual", channel=self.channel)
        if self.machine is None:
            self.machine = CanMachine(self.channel)
        if self._runner is None:
            self._stop = asyncio.Event()
            self._runner = asyncio.create_task(
                run_can_machine(
                    self.channel, stop_event=self._stop, period_s=0.005, machine=self.machine
                ),
                name=f"can-machine[{self.channel}]",
            )

    async def stop_server(self) -> None:
        """The machine stops sending (a controller switched off or its cable pulled)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            assert self._stop is not None
            self._stop.set()
            await runner

    async def release(self) -> None:
        await self.stop_server()
        if self.machine is not None:
            self.machine.close()
        if self.listener is not None:
            self.listener.shutdown()

    def _connection(self, **overrides: object) -> CanConnection:
        fields: dict[str, object] = {
            "protocol": "can",
            "interface": "virtual",
            "channel": self.channel,
            "dbc": "demo_machine.dbc",
        }
        fields.update(overrides)
        return CanConnection.model_validate(fields)

    def _make(self, connection: CanConnection) -> CanDriver:
        tags = [Tag(id=f"motor.{s.name}", asset="motor") for s in CAN_SIGNALS]
        # Short receive poll and stale-check wait: exits and clock jumps take effect quickly.
        return CanDriver(
            "motor",
            connection,
            CAN_SIGNALS,
            tags,
            DEMO_DBC,
            self.clock,
            receive_poll_s=0.02,
            max_wait_s=0.05,
        )

    def make_driver(self) -> CanDriver:
        return self._make(self._connection())

    def make_unreachable_driver(self) -> CanDriver:
        # No such socketcan interface on this machine: python-can cannot open it.
        return self._make(self._connection(interface="socketcan", channel="gw-absent-can9"))

    def session(self, driver: Any) -> contextlib.AbstractAsyncContextManager[Session]:
        return streaming_session(driver, driver.records())

    async def settle_after_loss(self, session: Session) -> None:
        """Take what the machine sent before it went quiet (real values, not bogus ones), then
        move the clock past the slowest message's stale_after.

        The machine's last frame is a marker with a speed it never runs at; the virtual bus and
        the driver keep the order of frames, and each frame gives exactly one record, so once
        the marker's record is out nothing sent earlier is still pending.
        """
        assert self.machine is not None
        self.machine.send(
            "MotorData",
            {"SpeedRpm": _MARKER_RPM, "CurrentA": 0.0, "WindingTemp": 0.0, "DcLinkVoltage": 0.0},
        )
        marker = ("motor.speed", _MARKER_RPM)
        while True:
            record = await session.next_record()
            if isinstance(record, Sample) and (record.tag, record.value) == marker:
                break
        self.clock.advance(CAN_SLOWEST_STALE_S + 0.5)

    async def writes_seen(self) -> list[str]:
        """Frames on the bus beyond those the machine sent (the machine is stopped first so
        that both counts are final)."""
        await self.stop_server()
        assert self.listener is not None and self.machine is not None
        while self.listener.recv(timeout=0) is not None:
            self._heard += 1
        extra = self._heard - self.machine.frames_sent
        return [f"{extra} frame(s) not sent by the machine"] if extra else []

    def reads_seen(self) -> int:
        return self._heard

    async def provoke_write(self) -> None:
        stranger = can.Bus(interface="virtual", channel=self.channel)
        try:
            stranger.send(can.Message(arbitration_id=0x7E0, data=bytes(8), is_extended_id=False))
        finally:
            stranger.shutdown()


__all__ = [
    "CAN_SIGNALS",
    "MODBUS_POINTS",
    "CanCase",
    "ConformingDriver",
    "DriverCase",
    "ModbusRtuCase",
    "ModbusTcpCase",
    "OpcUaCase",
    "Session",
    "healthy_problems",
    "lost_problems",
]
