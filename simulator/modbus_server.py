"""A Modbus TCP or RTU server for simulated machines, on pymodbus's server side.

A machine model writes engineering values into a `RegisterMap`; the server answers reads
from it. Faults a real plant produces can be switched on at runtime: an exception answer, a
wrong function code, a short payload, or no answer at all (DESIGN.md section 9: each must
become a BAD sample, never a value). Every request received is recorded, so a test can prove
that the gateway only ever reads.

    async with ModbusSimServer(registers, port=0) as server:
        ... server.port ...

    # RTU: several units on one serial line (a pty in tests), each with its own map.
    async with ModbusSimServer(units={1: map_1, 2: map_2}, serial_port="/dev/pts/7"):
        ...
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.modbus.config import DataType as ValueType
from protocols.modbus.config import RegisterTable, WordOrder
from protocols.modbus.decode import encode

log = logging.getLogger(__name__)

_TABLE_OF_FUNCTION = {
    1: RegisterTable.COILS,
    2: RegisterTable.DISCRETE,
    3: RegisterTable.HOLDING,
    4: RegisterTable.INPUT,
}
_READ_FUNCTIONS = frozenset({1, 2, 3, 4})
_MBAP_SIZE = 7  # transaction id, protocol id, length, unit id


class RegisterMap:
    """The four tables from address 0; reads past the end answer exception 2. Coils and
    discrete inputs hold 0/1 and are sized in bits (a multiple of 16)."""

    def __init__(
        self, holding: int = 128, input: int = 128, coils: int = 16, discrete: int = 16
    ) -> None:
        if not (1 <= holding <= 65536 and 1 <= input <= 65536):
            raise ValueError("each table needs 1..65536 registers")
        if coils % 16 or discrete % 16 or not (16 <= coils <= 65536 and 16 <= discrete <= 65536):
            raise ValueError("coils and discrete inputs come in multiples of 16, 16..65536")
        self._tables: dict[RegisterTable, list[int]] = {
            RegisterTable.HOLDING: [0] * holding,
            RegisterTable.INPUT: [0] * input,
            RegisterTable.COILS: [0] * coils,
            RegisterTable.DISCRETE: [0] * discrete,
        }

    def size(self, table: RegisterTable) -> int:
        return len(self._tables[table])

    def write(self, table: RegisterTable, address: int, registers: Sequence[int]) -> None:
        target = self._tables[table]
        if address < 0 or address + len(registers) > len(target):
            raise IndexError(f"{table} {address}+{len(registers)} is outside the map")
        top = 1 if table.is_bits else 0xFFFF
        for register in registers:
            if not 0 <= register <= top:
                raise ValueError(f"value {register} is outside 0..{top} for {table}")
        target[address : address + len(registers)] = registers

    def packed_bits(self, table: RegisterTable, word: int) -> int:
        """Bits 16*word .. 16*word+15 of a bit table as one register, LSB first (the layout
        pymodbus's simulator keeps bit tables in)."""
        bits = self._tables[table][16 * word : 16 * word + 16]
        return sum(bit << i for i, bit in enumerate(bits))

    def write_value(
        self,
        table: RegisterTable,
        address: int,
        value: float,
        data_type: ValueType,
        word_order: WordOrder = WordOrder.ABCD,
        scale: float = 1.0,
        offset: float = 0.0,
    ) -> None:
        """Store an engineering value as a device configured like that would hold it."""
        self.write(table, address, encode(value, data_type, word_order, scale, offset))

    def read(self, table: RegisterTable, address: int, count: int) -> list[int]:
        return self._tables[table][address : address + count]


class ResponseFault(enum.Enum):
    """How the server mangles its answers to reads (faults seen in real plants)."""

    NONE = "none"
    WRONG_FUNCTION_CODE = "wrong_function_code"  # a gateway mixing up answers
    WRONG_UNIT_ID = "wrong_unit_id"  # an answer from another unit (TCP only)
    WRONG_TRANSACTION_ID = "wrong_transaction_id"  # a stale answer (TCP only)
    SHORT_PAYLOAD = "short_payload"  # one register fewer than asked, consistently framed
    NO_ANSWER = "no_answer"  # the device hangs: the request is swallowed


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    function_code: int
    address: int
    count: int
    unit_id: int


class ModbusSimServer:
    """A pymodbus server answering from RegisterMaps. Start and stop it any number of times
    (a test stops it to make the device disappear and starts it again on the same port)."""

    def __init__(
        self,
        registers: RegisterMap | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit_id: int = 0,
        units: Mapping[int, RegisterMap] | None = None,
        serial_port: str | None = None,
        history: int = 10_000,
    ) -> None:
        """TCP by default; `serial_port` serves Modbus RTU on that device instead.
        `registers` with `unit_id` 0 answers every unit id; `units` serves several units
        (an RTU line or a Modbus gateway), each with its own map, and no answer at all to
        other units, as on a real line. `port` 0 picks a free port at the first start and
        keeps it for restarts."""
        if (registers is None) == (units is None):
            raise ValueError("give either `registers` or `units`")
        self.units: dict[int, RegisterMap] = (
            dict(units) if units is not None else {unit_id: registers}  # type: ignore[dict-item]
        )
        self.registers = next(iter(self.units.values()))
        self.host = host
        self._port = port
        self._serial_port = serial_port
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self.fault = ResponseFault.NONE
        # An exception code (ExcCodes value) every read answers with, or None.
        self.exception_code: int | None = None
        self.requests: deque[ReceivedRequest] = deque(maxlen=history)

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("the server has not been started yet")
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("server already running")
        devices = [self._device(unit, registers) for unit, registers in self.units.items()]
        if self._serial_port is not None and 0 not in self.units:
            devices.append(self._device(0, RegisterMap(holding=1, input=1)))  # silent catch-all
        server: ModbusTcpServer | ModbusSerialServer
        if self._serial_port is not None:
            server = ModbusSerialServer(
                devices,
                framer=FramerType.RTU,
                port=self._serial_port,
                trace_packet=self._trace_serial_packet,
                trace_pdu=self._trace_pdu,
            )
        else:
            server = ModbusTcpServer(
                devices,
                address=(self.host, self._port),
                trace_packet=self._trace_packet,
                trace_pdu=self._trace_pdu,
            )
        await server.serve_forever(background=True)
        self._server = server
        if self._serial_port is None and self._port == 0:
            sockets = getattr(server.transport, "sockets", None) or []
            self._port = int(sockets[0].getsockname()[1])
        log.debug("Modbus simulator serving at %s.", self._serial_port or f"port {self._port}")

    async def stop(self) -> None:
        """Close the listener and every client connection. Safe to call when stopped."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()
            # Let the closed transports deliver connection_lost before the port is reused.
            await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _device(self, unit: int, registers: RegisterMap) -> SimDevice:
        def block(table: RegisterTable) -> list[SimData]:
            if table.is_bits:  # pymodbus sizes bit blocks in registers of 16 bits
                count, kind = registers.size(table) // 16, DataType.BITS
            else:
                count, kind = registers.size(table), DataType.REGISTERS
            return [SimData(0, count=count, values=0, datatype=kind)]

        return SimDevice(
            id=unit,
            simdata=(
                block(RegisterTable.COILS),
                block(RegisterTable.DISCRETE),
                block(RegisterTable.HOLDING),
                block(RegisterTable.INPUT),
            ),
            action=functools.partial(self._on_request, registers),
        )

    async def _on_request(
        self,
        registers: RegisterMap,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this after checking the address range, before answering."""
        if function_code not in _READ_FUNCTIONS or set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # read-only, like a protected PLC area
        if self.exception_code is not None:
            return ExcCodes(self.exception_code)
        table = _TABLE_OF_FUNCTION[function_code]
        offset = address - start_address
        if table.is_bits:
            # pymodbus 3.16 passes the bit address but counts whole 16-bit registers.
            first = address // 16
            for k in range(count):
                current_registers[first - start_address + k] = registers.packed_bits(
                    table, first + k
                )
        else:
            current_registers[offset : offset + count] = registers.read(table, address, count)
        return None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests.append(
                ReceivedRequest(
                    function_code=pdu.function_code,
                    address=int(getattr(pdu, "address", 0)),
                    count=int(getattr(pdu, "count", 0)),
                    unit_id=pdu.dev_id,
                )
            )
        return pdu

    def _trace_serial_packet(self, sending: bool, packet: bytes) -> bytes:
        """An answer from a unit that is not on the line is swallowed: on RS-485 nobody
        answers it. (pymodbus 3.16's `ignore_missing_devices` raises KeyError in its simulator
        datastore, so a silent catch-all unit answers and its answer is dropped here.)"""
        if sending and packet and packet[0] not in self.units:
            return b""
        return packet

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        if not sending or self.fault is ResponseFault.NONE or len(packet) <= _MBAP_SIZE:
            return packet
        function_code = packet[_MBAP_SIZE]
        if function_code not in _TABLE_OF_FUNCTION:
            return packet  # exception answers and other functions pass unchanged
        if self.fault is ResponseFault.NO_ANSWER:
            return b""
        if self.fault is ResponseFault.WRONG_UNIT_ID:
            return packet[:6] + bytes([(packet[6] + 1) % 256]) + packet[_MBAP_SIZE:]
        if self.fault is ResponseFault.WRONG_TRANSACTION_ID:
            tid = (int.from_bytes(packet[0:2], "big") + 1000) % 65536 or 1
            return tid.to_bytes(2, "big") + packet[2:]
        if self.fault is ResponseFault.WRONG_FUNCTION_CODE:
            wrong = {1: 2, 2: 1, 3: 4, 4: 3}[function_code]
            return packet[:_MBAP_SIZE] + bytes([wrong]) + packet[_MBAP_SIZE + 1 :]
        # SHORT_PAYLOAD: drop the last register (or bit byte), keeping the byte count and the
        # MBAP length right.
        drop = 1 if function_code in (1, 2) else 2
        byte_count = packet[_MBAP_SIZE + 1]
        if byte_count < drop:
            return packet
        length = int.from_bytes(packet[4:6], "big") - drop
        body = packet[_MBAP_SIZE:-drop]
        return (
            packet[:4]
            + length.to_bytes(2, "big")
            + packet[6:_MBAP_SIZE]
            + body[:1]
            + bytes([byte_count - drop])
            + body[2:]
        )


async def run_modbus_server(
    registers: RegisterMap,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    unit_id: int = 0,
    on_ready: Callable[[ModbusSimServer], None] | None = None,
) -> None:
    """Serve `registers` until cancelled. `on_ready` receives the server once it listens."""
    async with ModbusSimServer(registers, host=host, port=port, unit_id=unit_id) as server:
        if on_ready is not None:
            on_ready(server)
        await asyncio.Event().wait()
