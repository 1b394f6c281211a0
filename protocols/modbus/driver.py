"""Modbus TCP driver: the only module that imports pymodbus (DESIGN.md section 1).

It talks to one endpoint and nothing else: the source task (gateway.pipeline.source) owns the
schedule, retries and backoff, so pymodbus's own reconnect is switched off and every library
failure is turned into our DriverError family here, at the boundary.

Read-only by design: the only requests this module can build are function codes 3 (read
holding registers) and 4 (read input registers); DESIGN.md section 9.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Sequence
from contextlib import suppress
from types import TracebackType
from typing import Self

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from gateway.core.clock import Clock
from gateway.core.errors import BadResponse, DeviceTimeout, DeviceUnreachable
from gateway.core.interfaces import Record
from gateway.core.records import Sample, Tag
from protocols.modbus.config import ModbusPoint, ModbusTcpConnection, RegisterTable
from protocols.modbus.decode import DecodeError, decode
from protocols.modbus.plan import ReadRequest, Span, plan_reads

log = logging.getLogger(__name__)

FUNCTION_CODES: dict[RegisterTable, int] = {RegisterTable.HOLDING: 3, RegisterTable.INPUT: 4}

# Exception codes, Modbus Application Protocol V1.1b3 section 7.
EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusTcpDriver:
    """One Modbus TCP endpoint (host, port, unit id) and the points read from it.

    `points` and `tags` run in parallel: `tags[i]` is the tag of `points[i]`. Values leave in
    engineering units (the point's scale and offset applied).
    """

    def __init__(
        self,
        device_id: str,
        connection: ModbusTcpConnection,
        points: Sequence[ModbusPoint],
        tags: Sequence[Tag],
        clock: Clock,
    ) -> None:
        if len(points) != len(tags):
            raise ValueError(f"{len(points)} points but {len(tags)} tags for `{device_id}`")
        self._device_id = device_id
        self._connection = connection
        self._points = tuple(points)
        self._tags = tuple(tags)
        self._clock = clock
        self._timeout = connection.timeout_s
        self._requests = plan_reads(
            [Span(p.table.value, p.address, p.type.registers) for p in self._points],
            max_registers=connection.max_registers_per_read,
            max_gap=connection.max_register_gap,
        )
        self._client: AsyncModbusTcpClient | None = None

    @property
    def endpoint(self) -> str:
        c = self._connection
        return f"modbus_tcp://{c.host}:{c.port}/{c.unit_id}"

    @property
    def requests(self) -> Sequence[ReadRequest]:
        """The read plan, for logging at start (one entry per request on each poll)."""
        return self._requests

    def tags(self) -> Sequence[Tag]:
        return self._tags

    async def __aenter__(self) -> Self:
        if self._client is not None:
            raise RuntimeError(f"driver for `{self._device_id}` entered twice")
        c = self._connection
        self._client = AsyncModbusTcpClient(
            c.host,
            port=c.port,
            name=f"modbus[{self._device_id}]",
            reconnect_delay=0,  # no library reconnect: the source task owns retries
            # Longer than ours, so that our asyncio.wait_for always decides first.
            timeout=2 * self._timeout,
            retries=0,
        )
        try:
            connected = await asyncio.wait_for(self._client.connect(), self._timeout)
            if not connected:
                raise DeviceUnreachable(await self._why_connect_failed())
        except TimeoutError:
            self._close()
            raise DeviceTimeout(f"no connection within {self._timeout:g} s") from None
        except BaseException:
            self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # Closing the transport only schedules the socket close; nothing here can fail
            # except the OS refusing to close a socket, which leaves nothing to do either.
            try:
                client.close()
            except OSError as exc:
                log.debug("Closing `%s` failed: %s", self.endpoint, exc)

    async def _why_connect_failed(self) -> str:
        """pymodbus reports a failed connect as False; one plain connect recovers the reason."""
        c = self._connection
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(c.host, c.port), self._timeout
            )
        except TimeoutError:
            return f"no connection within {self._timeout:g} s"
        except OSError as exc:
            return describe_os_error(exc)
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()
        return "connection failed"  # the device came up between the two attempts

    async def read(self) -> list[Record]:
        """One poll: every planned request, one sample per point, in point order.

        A request answered with an exception or a malformed response makes BAD samples for its
        points only; the device is still there. Losing the connection or a timeout raises.
        """
        out: list[Record | None] = [None] * len(self._points)
        for request in self._requests:
            table = RegisterTable(request.table)
            try:
                registers = await self.read_registers(table, request.address, request.count)
            except BadResponse as exc:
                ts = self._clock.now()
                for piece in request.slices:
                    out[piece.point] = Sample.bad(self._tags[piece.point].id, ts, str(exc))
                continue
            ts = self._clock.now()
            for piece in request.slices:
                point = self._points[piece.point]
                tag_id = self._tags[piece.point].id
                words = registers[piece.offset : piece.offset + piece.count]
                try:
                    value = decode(words, point.type, point.word_order, point.scale, point.offset)
                except DecodeError as exc:
                    out[piece.point] = Sample.bad(tag_id, ts, str(exc))
                else:
                    out[piece.point] = Sample(tag=tag_id, ts=ts, value=value)
        return [record for record in out if record is not None]

    async def read_registers(self, table: RegisterTable, address: int, count: int) -> list[int]:
        """Read `count` registers; raises DeviceUnreachable, DeviceTimeout or BadResponse."""
        client = self._client
        if client is None or not client.connected:
            raise DeviceUnreachable("not connected" if client is None else "connection lost")
        function_code = FUNCTION_CODES[table]
        unit = self._connection.unit_id
        call = (
            client.read_holding_registers
            if table is RegisterTable.HOLDING
            else client.read_input_registers
        )
        try:
            response = await asyncio.wait_for(
                call(address, count=count, device_id=unit), self._timeout
            )
        except TimeoutError:
            if not client.connected:
                raise DeviceUnreachable("connection lost") from None
            raise DeviceTimeout(
                f"no answer within {self._timeout:g} s to function {function_code}"
                f" at {table} register {address}"
            ) from None
        except ConnectionException as exc:
            raise DeviceUnreachable(f"connection lost ({exc})") from exc
        except ModbusIOException as exc:
            # Wrong unit or transaction id, undecodable frame: an answer we cannot trust.
            raise BadResponse(f"malformed answer to function {function_code}: {exc}") from exc
        except ModbusException as exc:
            raise BadResponse(f"function {function_code} failed: {exc}") from exc
        return _checked_registers(response, function_code, table, address, count)


def _checked_registers(
    response: ModbusPDU, function_code: int, table: RegisterTable, address: int, count: int
) -> list[int]:
    """pymodbus accepts any well-formed answer; check that it answers what we asked."""
    where = f"{table} register {address}"
    if response.function_code == function_code | 0x80:
        code = int(getattr(response, "exception_code", 0))
        name = EXCEPTION_NAMES.get(code, "unknown exception")
        raise BadResponse(f"exception {code} ({name}) reading {count} at {where}")
    if response.function_code != function_code:
        raise BadResponse(
            f"answer has function code {response.function_code}, expected {function_code},"
            f" reading {where}"
        )
    registers = list(response.registers)
    if len(registers) != count:
        raise BadResponse(
            f"answer holds {len(registers)} registers, expected {count}, reading {where}"
        )
    return registers


def describe_os_error(exc: OSError) -> str:
    """A short reason for a log line: "connection refused", not "[Errno 111] Connect call..."."""
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if exc.errno == errno.EHOSTUNREACH:
        return "host unreachable"
    if exc.errno == errno.ENETUNREACH:
        return "network unreachable"
    if exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
