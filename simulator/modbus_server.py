"""A Modbus TCP server for simulated machines, on pymodbus's server side.

A machine model writes engineering values into a `RegisterMap`; the server answers reads
from it. Faults a real plant produces can be switched on at runtime: an exception answer, a
wrong function code, a short payload, or no answer at all (DESIGN.md section 9: each must
become a BAD sample, never a value). Every request received is recorded, so a test can prove
that the gateway only ever reads (issue 3).

    async with ModbusSimServer(registers, port=0) as server:
        ... server.port ...
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.modbus.config import DataType as ValueType
from protocols.modbus.config import RegisterTable, WordOrder
from protocols.modbus.decode import encode

log = logging.getLogger(__name__)

_TABLE_OF_FUNCTION = {3: RegisterTable.HOLDING, 4: RegisterTable.INPUT}
_READ_FUNCTIONS = frozenset({1, 2, 3, 4})
_MBAP_SIZE = 7  # transaction id, protocol id, length, unit id


class RegisterMap:
    """Holding and input registers from address 0; reads past the end answer exception 2."""

    def __init__(self, holding: int = 128, input: int = 128) -> None:
        if not (1 <= holding <= 65536 and 1 <= input <= 65536):
            raise ValueError("each table needs 1..65536 registers")
        self._tables: dict[RegisterTable, list[int]] = {
            RegisterTable.HOLDING: [0] * holding,
            RegisterTable.INPUT: [0] * input,
        }

    def size(self, table: RegisterTable) -> int:
        return len(self._tables[table])

    def write(self, table: RegisterTable, address: int, registers: Sequence[int]) -> None:
        target = self._tables[table]
        if address < 0 or address + len(registers) > len(target):
            raise IndexError(f"{table} {address}+{len(registers)} is outside the map")
        for register in registers:
            if not 0 <= register <= 0xFFFF:
                raise ValueError(f"register value {register} is outside 0..65535")
        target[address : address + len(registers)] = registers

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
    SHORT_PAYLOAD = "short_payload"  # one register fewer than asked, consistently framed
    NO_ANSWER = "no_answer"  # the device hangs: the request is swallowed


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    function_code: int
    address: int
    count: int
    unit_id: int


class ModbusSimServer:
    """A pymodbus TCP server answering from a RegisterMap. Start and stop it any number of times
    (a test stops it to make the device disappear and starts it again on the same port)."""

    def __init__(
        self,
        registers: RegisterMap,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit_id: int = 0,
        history: int = 10_000,
    ) -> None:
        """`unit_id` 0 answers every unit id; `port` 0 picks a free port at the first start
        and keeps it for restarts."""
        self.registers = registers
        self.host = host
        self._port = port
        self._unit_id = unit_id
        self._server: ModbusTcpServer | None = None
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
        device = SimDevice(
            id=self._unit_id,
            simdata=(
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [self._block(RegisterTable.HOLDING)],
                [self._block(RegisterTable.INPUT)],
            ),
            action=self._on_request,
        )
        server = ModbusTcpServer(
            device,
            address=(self.host, self._port),
            trace_packet=self._trace_packet,
            trace_pdu=self._trace_pdu,
        )
        await server.serve_forever(background=True)
        self._server = server
        if self._port == 0:
            sockets = getattr(server.transport, "sockets", None) or []
            self._port = int(sockets[0].getsockname()[1])
        log.debug("Modbus simulator serving at %s:%d.", self.host, self._port)

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

    def _block(self, table: RegisterTable) -> SimData:
        return SimData(0, count=self.registers.size(table), values=0, datatype=DataType.REGISTERS)

    async def _on_request(
        self,
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
        table = _TABLE_OF_FUNCTION.get(function_code)
        if table is not None:
            offset = address - start_address
            current_registers[offset : offset + count] = self.registers.read(table, address, count)
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

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        if not sending or self.fault is ResponseFault.NONE or len(packet) <= _MBAP_SIZE:
            return packet
        function_code = packet[_MBAP_SIZE]
        if function_code not in _TABLE_OF_FUNCTION:
            return packet  # exception answers and other functions pass unchanged
        if self.fault is ResponseFault.NO_ANSWER:
            return b""
        if self.fault is ResponseFault.WRONG_FUNCTION_CODE:
            wrong = 4 if function_code == 3 else 3
            return packet[:_MBAP_SIZE] + bytes([wrong]) + packet[_MBAP_SIZE + 1 :]
        # SHORT_PAYLOAD: drop the last register, keeping the byte count and MBAP length right.
        byte_count = packet[_MBAP_SIZE + 1]
        if byte_count < 2:
            return packet
        length = int.from_bytes(packet[4:6], "big") - 2
        body = packet[_MBAP_SIZE:-2]
        return (
            packet[:4]
            + length.to_bytes(2, "big")
            + packet[6:_MBAP_SIZE]
            + body[:1]
            + bytes([byte_count - 2])
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
