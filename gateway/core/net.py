"""Cheap reachability checks that protocol plugins use as probes between backoff steps: they
tell that an endpoint is back without sending it a protocol request."""

from __future__ import annotations

import asyncio
import contextlib
import os


async def tcp_accepts(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether a TCP connection to host:port is accepted within the timeout (then closed)."""
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def path_exists(path: str) -> bool:
    """Whether a device node (a serial port, a USB adapter) is present."""
    return await asyncio.to_thread(os.path.exists, path)


async def file_says(path: str, expected: str) -> bool:
    """Whether a small status file (`/sys/class/net/can0/operstate`) reads `expected`."""

    def read() -> str:
        try:
            with open(path, encoding="ascii") as status:
                return status.read().strip()
        except OSError:
            return ""

    return await asyncio.to_thread(read) == expected
