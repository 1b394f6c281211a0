"""Recovery after an outage: seconds from a device's return to its first
good sample, for a Modbus TCP server, an OPC UA server and a USB-CAN adapter (slcan over a pty
pair), each down for 20 s (long enough for the backoff to reach 16 s steps); and seconds from a
half-open uplink clearing to the uplink connected again, for a black hole of 8 s (the session
still connected, half-open) and of 20 s (the session dropped, attempts swallowed). Real
servers and a real mosquitto, the sources and the uplink with their shipped settings. Prints
one table: each run and the median.

    .venv/bin/python -m bench.recovery [--runs 3] [--only uplink|devices]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
from pathlib import Path

from tests.faults.recovery import (
    can_recovery_s,
    modbus_recovery_s,
    opcua_plant,
    opcua_recovery_s,
    uplink_recovery_s,
)

DEVICE_TARGETS = {"modbus_tcp": 5.0, "opcua": 10.0, "can (slcan)": 10.0}
UPLINK_TARGETS = {"uplink 8 s": 5.0, "uplink 20 s": 5.0}


async def one_run(only: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name in ("modbus", "opcua", "can", "uplink-8", "uplink-20"):
            (work / name).mkdir()
        found: dict[str, float] = {}
        if only in (None, "devices"):
            with opcua_plant() as server:
                found["modbus_tcp"] = await modbus_recovery_s(work / "modbus")
                found["opcua"] = await opcua_recovery_s(work / "opcua", server)
                found["can (slcan)"] = await can_recovery_s(work / "can")
        if only in (None, "uplink"):
            found["uplink 8 s"] = await uplink_recovery_s(work / "uplink-8", blackout_s=8.0)
            found["uplink 20 s"] = await uplink_recovery_s(work / "uplink-20", blackout_s=20.0)
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("uplink", "devices"), default=None)
    args = parser.parse_args()
    runs = [asyncio.run(one_run(args.only)) for _ in range(args.runs)]
    print(
        f"machine: {platform.machine()}, {platform.python_version()},"
        f" load {os.getloadavg()[0]:.1f};"
        " outage 20 s per device, black hole 8 s / 20 s for the uplink"
    )
    print(f"{'endpoint':<14} {'runs (s)':<28} {'median s':>9} {'target s':>9}")
    targets = {**DEVICE_TARGETS, **UPLINK_TARGETS}
    for name, target in targets.items():
        if name not in runs[0]:
            continue
        values = [run[name] for run in runs]
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:<14} {shown:<28} {statistics.median(values):>9.2f} {target:>9.1f}")


if __name__ == "__main__":
    main()
