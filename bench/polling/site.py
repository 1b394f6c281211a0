"""A generated site folder for the polling benchmark: gateway.yaml and one file per device,
loaded by the same `load_config` the daemon uses, so what is measured is what a site runs.

Every device is Modbus TCP on the benchmark server (units 1..247 per port, several ports when
there are more devices), reads `registers` holding registers as scaled uint16 points, and has
one threshold rule on its first point whose limits the served values never cross: the detector
is evaluated on every poll and raises nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

UNITS_PER_PORT = 247  # Modbus unit ids 1..247; a device is one (host, port, unit) claim
WATCHED_POINT = "r0"  # the point each device's threshold rule reads


def ports_needed(devices: int) -> int:
    return max(1, -(-devices // UNITS_PER_PORT))


def device_id(n: int) -> str:
    # Zero-padded: the loader sorts device files by name, which fixes the stagger order.
    return f"dev-{n:04d}"


def device_document(n: int, registers: int, period_s: float, port: int) -> dict[str, object]:
    return {
        "id": device_id(n),
        "asset": {"class": "pump", "area": "bench"},
        "connection": {
            "protocol": "modbus_tcp",
            "host": "127.0.0.1",
            "port": port,
            "unit_id": n % UNITS_PER_PORT + 1,
            "timeout_s": min(0.5, period_s / 2),
        },
        "poll_period_s": period_s,
        "points": [
            {
                "name": f"r{i}",
                "table": "holding",
                "address": i,
                "type": "uint16",
                "scale": 0.1,
                "unit": "bar",
            }
            for i in range(registers)
        ],
        "rules": [
            {
                # Served values are 0.0 .. 6553.5 (uint16 x 0.1): neither limit is ever crossed.
                "name": "pressure_limits",
                "kind": "threshold",
                "signal": WATCHED_POINT,
                "hi": 10_000.0,
                "lo": -1.0,
                "deadband": 1.0,
            }
        ],
    }


def write_site(
    directory: Path, *, devices: int, registers: int, period_s: float, ports: Sequence[int]
) -> Path:
    """Write the site into `directory` (telemetry.db goes to `directory/var`); returns it."""
    if registers < 1:
        raise ValueError("each device needs at least one register")
    if len(ports) < ports_needed(devices):
        raise ValueError(f"{devices} devices need {ports_needed(devices)} server ports")
    (directory / "devices").mkdir(parents=True, exist_ok=True)
    gateway = {
        "site": "bench",
        "gateway_id": "bench-gw",
        "devices": ["devices/*.yaml"],
        "storage": {"directory": "var"},
    }
    (directory / "gateway.yaml").write_text(yaml.safe_dump(gateway, sort_keys=False))
    for n in range(devices):
        document = device_document(n, registers, period_s, ports[n // UNITS_PER_PORT])
        path = directory / "devices" / f"{device_id(n)}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
    return directory
