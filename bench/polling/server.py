"""The benchmark's plant: Modbus TCP servers on loopback, in a process of their own so that
their CPU is never counted as the gateway's.

    python -m bench.polling.server PORT_FILE --devices 500 --registers 30
    python -m bench.polling.server PORT_FILE --devices 500 --registers 30 --layout units

Layouts: `endpoints` (the default) gives every device its own listening port, as
500 PLCs are 500 endpoints, each with its own connection; `units` answers up to 247 devices
as unit ids on one port (which hides what a connection costs).
Holding register i holds i. With `--fault-period S` each device's register 1 reads 9000
(900.0 once scaled) for a tenth of every S seconds, the devices' phases spread over S, and
100 (10.0) otherwise: the generated site's `r1_limit` rule raises and clears on it, so
tickets flow.

This is a deliberately small Modbus TCP responder (function codes 3 and 4, exception 1 for
anything else) written on asyncio, not pymodbus's server: 2000 pymodbus servers in one
process take more CPU than the gateway measured beside them on a shared 2-core machine. The
gateway's side (what is measured) is the product's, pymodbus framing included. The chosen
ports are written, space-separated, one per device (`endpoints`) or per 247 devices
(`units`), to PORT_FILE once every server listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import struct
import time

UNITS_PER_PORT = 247
FAULT_REGISTER = 1
FAULT_HIGH, FAULT_LOW = 9000, 100
_MBAP = struct.Struct(">HHHBBHH")  # transaction, protocol, length, unit, function, start, count
_REQUEST_SIZE = _MBAP.size


class Plant:
    """Register values of every device; the fault register follows the clock."""

    def __init__(self, devices: int, registers: int, fault_period_s: float) -> None:
        self.devices = devices
        self.registers = registers
        self.fault_period_s = fault_period_s
        self._words = [i % 65536 for i in range(registers)]

    def read(self, device: int, start: int, count: int) -> bytes | None:
        if start < 0 or count < 1 or start + count > self.registers or device >= self.devices:
            return None
        words = self._words[start : start + count]
        if self.fault_period_s > 0 and start <= FAULT_REGISTER < start + count:
            phase = (time.time() + device * self.fault_period_s / self.devices) % (
                self.fault_period_s
            )
            words = list(words)
            high = phase < self.fault_period_s / 10
            words[FAULT_REGISTER - start] = FAULT_HIGH if high else FAULT_LOW
        return struct.pack(f">{count}H", *words)


class ModbusResponder(asyncio.Protocol):
    """One connection: answers every complete request in the buffer, in order."""

    def __init__(self, plant: Plant, device_of_unit: dict[int, int] | int) -> None:
        self._plant = plant
        self._device_of_unit = device_of_unit
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        answers = []
        while len(buffer) >= 6:
            length = int.from_bytes(buffer[4:6], "big")
            if len(buffer) < 6 + length:
                break
            frame, buffer = buffer[: 6 + length], buffer[6 + length :]
            answers.append(self._answer(frame))
        self._buffer = buffer
        if answers and self._transport is not None:
            self._transport.write(b"".join(answers))

    def _answer(self, frame: bytes) -> bytes:
        if len(frame) < _REQUEST_SIZE:
            return b""
        tid, _, _, unit, function, start, count = _MBAP.unpack_from(frame)
        mapping = self._device_of_unit
        device = mapping if isinstance(mapping, int) else mapping.get(unit, self._plant.devices)
        data = self._plant.read(device, start, count) if function in (3, 4) else None
        if data is None:
            code = 1 if function not in (3, 4) else 2
            return struct.pack(">HHHBBB", tid, 0, 3, unit, function | 0x80, code)
        return struct.pack(">HHHBBB", tid, 0, 3 + len(data), unit, function, len(data)) + data


async def serve(port_file: str, devices: int, registers: int, layout: str, fault: float) -> None:
    plant = Plant(devices, registers, fault)
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    if layout == "endpoints":
        mappings: list[dict[int, int] | int] = list(range(devices))
    else:
        mappings = [
            {n % UNITS_PER_PORT + 1: n for n in range(first, min(first + UNITS_PER_PORT, devices))}
            for first in range(0, devices, UNITS_PER_PORT)
        ]
    for mapping in mappings:
        server = await loop.create_server(
            lambda m=mapping: ModbusResponder(plant, m), "127.0.0.1", 0, backlog=64
        )
        servers.append(server)
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    # Written once before serving; a blocking write of a few kB is fine here.
    with open(port_file + ".tmp", "w") as f:  # noqa: ASYNC230
        f.write(" ".join(str(port) for port in ports))
    os.replace(port_file + ".tmp", port_file)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port_file")
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--registers", type=int, required=True)
    parser.add_argument("--layout", choices=("endpoints", "units"), default="endpoints")
    parser.add_argument("--fault-period", type=float, default=0.0, help="0: no faults")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(args.port_file, args.devices, args.registers, args.layout, args.fault_period)
        )


if __name__ == "__main__":
    main()
