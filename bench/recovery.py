"""Recovery after an outage (issue 11, item 6): seconds from a device's return to its first
good sample, for a Modbus TCP server, an OPC UA server and a USB-CAN adapter (slcan over a pty
pair), each down for 20 s (long enough for the backoff to reach 16 s steps). Real servers, the
sources as the daemon builds them from device files. Prints one table: each run and the median.

    .venv/bin/python -m bench.recovery [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
from pathlib import Path

from tests.faults.recovery import can_recovery_s, modbus_recovery_s, opcua_plant, opcua_recovery_s

TARGETS = {"modbus_tcp": 5.0, "opcua": 10.0, "can (slcan)": 10.0}


async def one_run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder, opcua_plant() as server:
        work = Path(folder)
        for name in ("modbus", "opcua", "can"):
            (work / name).mkdir()
        return {
            "modbus_tcp": await modbus_recovery_s(work / "modbus"),
            "opcua": await opcua_recovery_s(work / "opcua", server),
            "can (slcan)": await can_recovery_s(work / "can"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [asyncio.run(one_run()) for _ in range(args.runs)]
    print(f"machine: {platform.machine()}, {platform.python_version()}; outage 20 s per device")
    print(f"{'endpoint':<14} {'runs (s)':<28} {'median s':>9} {'target s':>9}")
    for name, target in TARGETS.items():
        values = [run[name] for run in runs]
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:<14} {shown:<28} {statistics.median(values):>9.2f} {target:>9.1f}")


if __name__ == "__main__":
    main()
