"""The benchmark's Modbus TCP server process: `ports` pymodbus servers on loopback, each
answering every unit id from one register map (register i holds i). It runs apart from the
gateway so that its CPU is not counted as the gateway's.

    python -m bench.polling.server PORT_FILE --registers 30 --ports 3

The chosen ports are written, space-separated, to PORT_FILE once every server listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from protocols.modbus.config import RegisterTable
from simulator.modbus_server import ModbusSimServer, RegisterMap


async def run_servers(port_file: str, registers: int, ports: int) -> None:
    register_map = RegisterMap(holding=registers, input=1)
    register_map.write(RegisterTable.HOLDING, 0, [i % 65536 for i in range(registers)])
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(ModbusSimServer(register_map, unit_id=0))
            for _ in range(ports)
        ]
        # Written once before serving; a blocking write of a few bytes is fine here.
        with open(port_file + ".tmp", "w") as f:  # noqa: ASYNC230
            f.write(" ".join(str(server.port) for server in servers))
        os.replace(port_file + ".tmp", port_file)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port_file")
    parser.add_argument("--registers", type=int, required=True)
    parser.add_argument("--ports", type=int, default=1)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_servers(args.port_file, args.registers, args.ports))


if __name__ == "__main__":
    main()
