"""Modbus TCP and RTU drivers: the only module that imports pymodbus (DESIGN.md section 1).

It talks to endpoints and nothing else: the source task (gateway.pipeline.source) owns the
schedule, retries and backoff, so pymodbus's own reconnect (RTU) is switched off and every
library failure is turned into our DriverError family here, at the boundary.

Modbus TCP goes through a connection of our own (protocols/modbus/tcp.py, with the frames of
protocols/modbus/mbap.py): pymodbus's client cost about four times the CPU of the exchange
itself per request, and a plant of 500 devices polled every second makes 500 requests a
second. RTU keeps pymodbus's serial client and framer (CRC, inter-frame timing), a line at a
time.

Read-only by design: the only requests this module can build are function codes 1-4 (read
coils, discrete inputs, holding and input registers); DESIGN.md section 9.

Every answer is checked before it is trusted: an exception answer, a wrong function
code, a foreign unit id and a short payload each become a BadResponse for the points of that
request. On RTU, pymodbus matches answers to requests itself and raises ModbusIOException on
a mismatch (pymodbus 3.16 transaction.py), which we turn into BadResponse like the rest; on
TCP, tcp.py skips answers with a foreign transaction or unit id as pymodbus did.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from gateway.core.clock import Clock
from gateway.core.errors import BadResponse, DeviceTimeout, DeviceUnreachable
from gateway.core.interfaces import Record
from gateway.core.records import Tag
from protocols.modbus.config import (
    ModbusLimits,
    ModbusPoint,
    ModbusRtuConnection,
    ModbusTcpConnection,
    RegisterTable,
)
from protocols.modbus.mbap import (
    FUNCTION_CODES,
    ExceptionAnswer,
    exception_answer,
)
from protocols.modbus.plan import ReadRequest
from protocols.modbus.points import Answer, PointDecoder, plan_for, plan_lines, raw_texts
from protocols.modbus.tcp import ModbusTcpLink, describe_os_error

__all__ = [
    "FUNCTION_CODES",
    "ExceptionAnswer",
    "ModbusRtuLine",
    "ModbusTcpDriver",
    "RtuUnitDriver",
    "checked_answer",
    "describe_os_error",
]

log = logging.getLogger(__name__)


class _UndecodableFrames(logging.Filter):
    """A frame pymodbus cannot decode (RTU) makes it raise inside asyncio's `data_received`; asyncio
    logs that at ERROR with a traceback and drops the connection. The gateway handles it (the
    poll fails, the device is retried, the source logs one line), so the record is dropped here
    and its reason kept for the error the driver raises: one line, in our words."""

    _MESSAGE = "Fatal error: protocol.data_received() call failed."
    _PROTOCOL = re.compile(r"^protocol: <[^>\n]* at (0x[0-9a-fA-F]+)>", re.MULTILINE)
    _KEPT = 256  # reasons of connections no driver asked about yet (bounded)

    def __init__(self) -> None:
        super().__init__()
        self.reasons: dict[int, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, ModbusException) or not str(record.msg).startswith(self._MESSAGE):
            return True
        found = self._PROTOCOL.search(record.getMessage())
        if found is not None:
            if len(self.reasons) >= self._KEPT:
                self.reasons.pop(next(iter(self.reasons)))
            self.reasons[int(found[1], 16)] = str(exc)
        return False

    def reason_for(self, client: Any) -> str | None:
        return self.reasons.pop(id(getattr(client, "ctx", None)), None)


_UNDECODABLE = _UndecodableFrames()
logging.getLogger("asyncio").addFilter(_UNDECODABLE)


def _lost(client: Any) -> DeviceUnreachable:
    reason = _UNDECODABLE.reason_for(client)
    return DeviceUnreachable("connection lost") if reason is None else _lost_with(reason)


def _lost_with(reason: str) -> DeviceUnreachable:
    return DeviceUnreachable(f"answer does not decode ({reason}); connection dropped")


FetchFn = Callable[[RegisterTable, int, int], Awaitable[list[int]]]


class _UnitReader:
    """Reads one unit's points through a connected client: plan, fetch, validate, decode."""

    def __init__(
        self,
        device_id: str,
        unit_id: int,
        limits: ModbusLimits,
        points: Sequence[ModbusPoint],
        tags: Sequence[Tag],
        clock: Clock,
        timeout_s: float,
    ) -> None:
        if len(points) != len(tags):
            raise ValueError(f"{len(points)} points but {len(tags)} tags for `{device_id}`")
        self.device_id = device_id
        self.unit_id = unit_id
        self.timeout_s = timeout_s
        self.points = tuple(points)
        self.tag_ids = tuple(tag.id for tag in tags)
        self.plan = plan_for(points, limits)
        self.decoder = PointDecoder(points, tags, self.plan, clock)
        # The answers of the latest poll, for `raw_values` (a reference, nothing copied).
        self._last: tuple[Sequence[Answer], Sequence[Sequence[Answer]]] = ((), ())

    async def read(self, fetch: FetchFn) -> Sequence[Record]:
        """One poll: every planned request, one record per tag. A request answered badly
        makes BAD samples for its points only; losing the line or a timeout raises."""
        scalar: list[Answer] = []
        for request in self.plan.scalar_requests:
            scalar.append(await self._answer(fetch, request))
        blocks: list[list[Answer]] = []
        for _, reads in self.plan.waveform_requests:
            blocks.append([await self._answer(fetch, request) for request in reads])
        self._last = (scalar, blocks)
        return self.decoder.records(scalar, blocks)

    def describe_plan(self) -> list[str]:
        return plan_lines(self.plan, self.points)

    def raw_values(self) -> dict[str, str]:
        return raw_texts(self.plan, self.points, self.tag_ids, *self._last)

    async def _answer(self, fetch: FetchFn, request: ReadRequest) -> Answer:
        try:
            return await fetch(RegisterTable(request.table), request.address, request.count)
        except BadResponse as exc:
            return str(exc)


class _Fetch:
    """Reads one request for one unit through a pymodbus client (RTU), with our checks."""

    __slots__ = ("_client", "_endpoint", "_timeout", "_unit")

    def __init__(self, client: Any, unit: int, timeout_s: float, endpoint: str) -> None:
        self._client = client
        self._unit = unit
        self._timeout = timeout_s
        self._endpoint = endpoint

    async def __call__(self, table: RegisterTable, address: int, count: int) -> list[int]:
        """Raises DeviceUnreachable, DeviceTimeout or BadResponse."""
        client = self._client
        if client is None:
            raise DeviceUnreachable("not connected")
        if not client.connected:
            raise _lost(client)
        function_code = FUNCTION_CODES[table]
        call = _CALLS[table](client)
        try:
            # `timeout`, not `wait_for`: no extra task per request on Python 3.11.
            async with asyncio.timeout(self._timeout):
                response = await call(address, count=count, device_id=self._unit)
        except TimeoutError:
            if not client.connected:
                raise _lost(client) from None
            raise DeviceTimeout(
                f"no answer within {self._timeout:g} s to function {function_code}"
                f" at {table} {address}"
            ) from None
        except ConnectionException as exc:
            reason = _UNDECODABLE.reason_for(client)
            if reason is not None:
                raise _lost_with(reason) from exc
            raise DeviceUnreachable(f"connection lost ({exc})") from exc
        except ModbusIOException as exc:
            # Wrong unit or transaction id, undecodable frame: an answer we cannot trust.
            raise BadResponse(f"malformed answer to function {function_code}: {exc}") from exc
        except ModbusException as exc:
            raise BadResponse(f"function {function_code} failed: {exc}") from exc
        return checked_answer(response, function_code, table, address, count, self._unit)


_CALLS: Mapping[RegisterTable, Any] = {
    RegisterTable.COILS: lambda c: c.read_coils,
    RegisterTable.DISCRETE: lambda c: c.read_discrete_inputs,
    RegisterTable.HOLDING: lambda c: c.read_holding_registers,
    RegisterTable.INPUT: lambda c: c.read_input_registers,
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
        self._device_id = device_id
        self._connection = connection
        self._timeout = connection.timeout_s
        self._reader = _UnitReader(
            device_id, connection.unit_id, connection, points, tags, clock, connection.timeout_s
        )
        self._link: ModbusTcpLink | None = None
        self._fetch: FetchFn = _not_connected

    @property
    def endpoint(self) -> str:
        c = self._connection
        return f"modbus_tcp://{c.host}:{c.port}/{c.unit_id}"

    @property
    def requests(self) -> Sequence[ReadRequest]:
        """The read plan, for logging at start (one entry per request on each poll)."""
        return self._reader.plan.all_requests

    def tags(self) -> Sequence[Tag]:
        return self._reader.decoder.tags()

    def state_labels(self) -> dict[str, Mapping[int, str]]:
        """Tag id -> labels of enumerated state points."""
        return self._reader.decoder.state_labels()

    def texts(self) -> dict[str, str]:
        """Tag id -> last text read from each string point (device metadata)."""
        return dict(self._reader.decoder.texts)

    def describe_plan(self) -> list[str]:
        """`gateway.core.interfaces.Inspectable`: the requests of one poll."""
        return [f"unit {self._connection.unit_id} at {self.endpoint}",
                *self._reader.describe_plan()]  # fmt: skip

    def raw_values(self) -> dict[str, str]:
        """Registers of each point in the latest poll; string points as their text."""
        return {**self._reader.raw_values(), **self.texts()}

    async def __aenter__(self) -> Self:
        if self._link is not None:
            raise RuntimeError(f"driver for `{self._device_id}` entered twice")
        c = self._connection
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                _, link = await loop.create_connection(
                    lambda: ModbusTcpLink(c.unit_id, self._timeout), c.host, c.port
                )
        except TimeoutError:
            raise DeviceTimeout(f"no connection within {self._timeout:g} s") from None
        except OSError as exc:
            raise DeviceUnreachable(describe_os_error(exc)) from None
        self._link = link
        self._fetch = link.read
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        link, self._link = self._link, None
        self._fetch = _not_connected
        if link is not None:
            # Closing the transport only schedules the socket close; nothing left to fail.
            link.close()

    async def read(self) -> Sequence[Record]:
        """One poll: every planned request, one sample per point, in point order.

        A request answered with an exception or a malformed response makes BAD samples for its
        points only; the device is still there. Losing the connection or a timeout raises.
        """
        return await self._reader.read(self._fetch)

    async def read_registers(self, table: RegisterTable, address: int, count: int) -> list[int]:
        """Read `count` registers (or bits, as 0/1); raises DeviceUnreachable, DeviceTimeout
        or BadResponse."""
        return await self._fetch(table, address, count)


async def _not_connected(table: RegisterTable, address: int, count: int) -> list[int]:
    raise DeviceUnreachable("not connected")


class ModbusRtuLine:
    """One RS-485 line (a serial port) shared by several units, one request at a time.

    Enter opens the port, exit closes it. `unit(device_id)` gives the PollingDriver-like
    reader of one unit; `gateway.pipeline.source.SharedLineSource` polls them all from one
    task. Between an answer (or a timeout) and the next request the line stays quiet for
    `inter_request_pause_ms`; Modbus RTU's own 3.5-character gap is far shorter.
    """

    def __init__(
        self,
        port: str,
        units: Sequence[tuple[str, ModbusRtuConnection, Sequence[ModbusPoint], Sequence[Tag]]],
        clock: Clock,
    ) -> None:
        if not units:
            raise ValueError(f"RTU line `{port}` has no units")
        first = units[0][1]
        for device_id, conn, _, _ in units:
            if conn.port != port or conn.line_settings() != first.line_settings():
                raise ValueError(f"unit `{device_id}` does not share the settings of `{port}`")
        self._port = port
        self._settings = first
        self._pause = max(conn.inter_request_pause_ms for _, conn, _, _ in units) / 1000.0
        self._client: AsyncModbusSerialClient | None = None
        self._quiet_until = 0.0
        self._lock = asyncio.Lock()
        self._units = {
            device_id: RtuUnitDriver(self, device_id, conn, points, tags, clock)
            for device_id, conn, points, tags in units
        }

    @property
    def endpoint(self) -> str:
        return f"modbus_rtu://{self._port}"

    @property
    def port(self) -> str:
        return self._port

    def units(self) -> list[RtuUnitDriver]:
        return list(self._units.values())

    def unit(self, device_id: str) -> RtuUnitDriver:
        return self._units[device_id]

    def tags(self) -> Sequence[Tag]:
        return [tag for unit in self._units.values() for tag in unit.tags()]

    async def __aenter__(self) -> Self:
        if self._client is not None:
            raise RuntimeError(f"line `{self._port}` entered twice")
        c = self._settings
        self._client = AsyncModbusSerialClient(
            self._port,
            framer=FramerType.RTU,
            baudrate=c.baudrate,
            parity=c.parity,
            stopbits=c.stopbits,
            bytesize=c.bytesize,
            name=f"modbus[{self._port}]",
            reconnect_delay=0,
            timeout=2 * max(u.timeout_s for u in self._units.values()),
            retries=0,
        )
        try:
            connected = await asyncio.wait_for(self._client.connect(), c.timeout_s)
        except TimeoutError:
            self._close()
            raise DeviceTimeout(f"serial port `{self._port}` did not open") from None
        except BaseException:
            self._close()
            raise
        if not connected:
            self._close()
            raise DeviceUnreachable(f"serial port `{self._port}` cannot be opened")
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
            try:
                client.close()
            except OSError as exc:
                log.debug("Closing `%s` failed: %s", self._port, exc)

    async def request(
        self, unit: int, timeout_s: float, table: RegisterTable, address: int, count: int
    ) -> list[int]:
        """One request on the line, after the quiet pause; raises our DriverError family."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            wait = self._quiet_until - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return await _Fetch(self._client, unit, timeout_s, self.endpoint)(
                    table, address, count
                )
            finally:
                self._quiet_until = loop.time() + self._pause


class RtuUnitDriver:
    """One unit on an RTU line. Its lifecycle is the line's; `read()` polls this unit only."""

    def __init__(
        self,
        line: ModbusRtuLine,
        device_id: str,
        connection: ModbusRtuConnection,
        points: Sequence[ModbusPoint],
        tags: Sequence[Tag],
        clock: Clock,
    ) -> None:
        self._line = line
        self._connection = connection
        self._reader = _UnitReader(
            device_id, connection.unit_id, connection, points, tags, clock, connection.timeout_s
        )

    @property
    def device_id(self) -> str:
        return self._reader.device_id

    @property
    def endpoint(self) -> str:
        return f"{self._line.endpoint}/{self._connection.unit_id}"

    @property
    def timeout_s(self) -> float:
        return self._connection.timeout_s

    @property
    def requests(self) -> Sequence[ReadRequest]:
        return self._reader.plan.all_requests

    def tags(self) -> Sequence[Tag]:
        return self._reader.decoder.tags()

    def state_labels(self) -> dict[str, Mapping[int, str]]:
        return self._reader.decoder.state_labels()

    def describe_plan(self) -> list[str]:
        return [f"unit {self._connection.unit_id} on {self._line.endpoint}",
                *self._reader.describe_plan()]  # fmt: skip

    def raw_values(self) -> dict[str, str]:
        return {**self._reader.raw_values(), **self._reader.decoder.texts}

    async def read(self) -> Sequence[Record]:
        return await self._reader.read(self._fetch)

    async def _fetch(self, table: RegisterTable, address: int, count: int) -> list[int]:
        return await self._line.request(
            self._connection.unit_id, self._connection.timeout_s, table, address, count
        )


def checked_answer(
    response: ModbusPDU,
    function_code: int,
    table: RegisterTable,
    address: int,
    count: int,
    unit: int,
) -> list[int]:
    """pymodbus accepts any well-formed answer; check that it answers what we asked."""
    where = f"{table} {address}"
    if response.function_code == function_code | 0x80:
        raise exception_answer(int(getattr(response, "exception_code", 0)), count, where)
    if response.function_code != function_code:
        raise BadResponse(
            f"answer has function code {response.function_code}, expected {function_code},"
            f" reading {where}"
        )
    if unit and response.dev_id and response.dev_id != unit:
        raise BadResponse(f"answer comes from unit {response.dev_id}, expected {unit}")
    if table.is_bits:
        # Bits travel packed in whole bytes; the padding past `count` is not an answer.
        bits = response.bits
        if len(bits) < count or len(bits) >= count + 8:
            raise BadResponse(f"answer holds {len(bits)} bits, expected {count}, reading {where}")
        return [1 if bit else 0 for bit in bits[:count]]
    registers = list(response.registers)
    if len(registers) != count:
        raise BadResponse(
            f"answer holds {len(registers)} registers, expected {count}, reading {where}"
        )
    return registers
