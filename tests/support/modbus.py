"""Modbus test helpers: an in-process pymodbus server on a free loopback port, and drivers
pointed at it. The server is the simulator's, so tests and the demo exercise the same code."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from gateway.core.clock import Clock, SystemClock
from gateway.core.records import Tag
from protocols.modbus.config import ModbusPoint, ModbusRtuConnection, ModbusTcpConnection
from protocols.modbus.driver import ModbusTcpDriver
from simulator.modbus_server import ModbusSimServer, RegisterMap

__all__ = [
    "ModbusSimServer",
    "RegisterMap",
    "connection",
    "make_driver",
    "point",
    "pty_pair",
    "rtu_connection",
    "tags_for",
    "unused_port",
    "wait_until",
]


def point(**fields: object) -> ModbusPoint:
    """A validated point, written like its YAML: point(name="t", address=0, type="float32")."""
    return ModbusPoint.model_validate(fields)


def connection(port: int, **overrides: object) -> ModbusTcpConnection:
    fields: dict[str, object] = {
        "protocol": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "unit_id": 1,
        "timeout_s": 0.5,
    }
    fields.update(overrides)
    return ModbusTcpConnection.model_validate(fields)


def tags_for(device_id: str, points: Sequence[ModbusPoint]) -> list[Tag]:
    return [Tag(id=f"{device_id}.{p.name}", asset=device_id, unit=p.unit) for p in points]


def make_driver(
    port: int,
    points: Sequence[ModbusPoint],
    *,
    device_id: str = "dev",
    clock: Clock | None = None,
    **connection_overrides: object,
) -> ModbusTcpDriver:
    return ModbusTcpDriver(
        device_id,
        connection(port, **connection_overrides),
        points,
        tags_for(device_id, points),
        clock or SystemClock(),
    )


async def unused_port() -> int:
    """A loopback port nobody listens on: bind a server to port 0, note it, close it."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    return port


async def wait_until(
    condition: Callable[[], object], within_s: float = 5.0, step_s: float = 0.01
) -> None:
    """Poll `condition()` every `step_s` seconds; fail the test after `within_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within_s} s")
        await asyncio.sleep(step_s)


@contextlib.asynccontextmanager
async def pty_pair(directory: Path) -> AsyncIterator[tuple[str, str]]:
    """Two linked pseudo-terminals (a null-modem cable in software) made by socat: the
    gateway opens one end, the simulated RTU units the other."""
    gateway_end, device_end = str(directory / "gateway-tty"), str(directory / "device-tty")
    process = await asyncio.create_subprocess_exec(
        "socat",
        f"pty,raw,echo=0,link={gateway_end}",
        f"pty,raw,echo=0,link={device_end}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_until(lambda: os.path.exists(gateway_end) and os.path.exists(device_end))
        yield gateway_end, device_end
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


def rtu_connection(port: str, unit_id: int, **overrides: object) -> ModbusRtuConnection:
    fields: dict[str, object] = {
        "protocol": "modbus_rtu",
        "port": port,
        "unit_id": unit_id,
        "baudrate": 115200,
        "parity": "N",  # ptys refuse parity settings (termios EINVAL)
        "timeout_s": 0.2,
        "inter_request_pause_ms": 2,
    }
    fields.update(overrides)
    return ModbusRtuConnection.model_validate(fields)
