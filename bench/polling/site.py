"""A generated site folder for the polling benchmark: gateway.yaml and one file per device,
loaded by the same `load_config` the daemon uses, so what is measured is what a site runs.

Every device is Modbus TCP on the benchmark server: its own port (`ports` has one per device,
the `endpoints` layout) or a unit id 1..247 of a shared port (`units`, one port per 247
devices). It reads `registers` holding registers as scaled uint16 points and has two threshold
rules: `pressure_limits` on r0, whose limits the served values never cross (the detector is
evaluated on every poll and raises nothing), and `r1_limit` on r1, which raises only while the
server plays a fault (`bench.polling.server --fault-period`). Devices are spread over areas of
50, so a fault wave is an area's flood, not the whole site's.

With `broker_port` the uplink goes to that broker; with `health_port` the daemon serves
`/status` there (the bench reads polls and errors from it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

UNITS_PER_PORT = 247  # Modbus unit ids 1..247; a device is one (host, port, unit) claim
WATCHED_POINT = "r0"  # the point each device's threshold rule reads


DEVICES_PER_AREA = 50


def ports_needed(devices: int, layout: str = "endpoints") -> int:
    if layout == "endpoints":
        return devices
    return max(1, -(-devices // UNITS_PER_PORT))


def device_id(n: int) -> str:
    # Zero-padded: the loader sorts device files by name, which fixes the stagger order.
    return f"dev-{n:04d}"


def device_document(
    n: int, registers: int, period_s: float, port: int, unit_id: int
) -> dict[str, object]:
    rules: list[dict[str, object]] = [
        {
            # Served values are 0.0 .. 6553.5 (uint16 x 0.1): neither limit is ever crossed.
            "name": "pressure_limits",
            "kind": "threshold",
            "signal": WATCHED_POINT,
            "hi": 10_000.0,
            "lo": -1.0,
            "deadband": 1.0,
        }
    ]
    if registers > 1:
        # 10.0 normally, 900.0 while the server plays a fault (bench.polling.server).
        rules.append(
            {"name": "r1_limit", "kind": "threshold", "signal": "r1", "hi": 500.0,
             "deadband": 1.0}
        )  # fmt: skip
    return {
        "id": device_id(n),
        "asset": {"class": "pump", "area": f"bench-{n // DEVICES_PER_AREA:03d}"},
        "connection": {
            "protocol": "modbus_tcp",
            "host": "127.0.0.1",
            "port": port,
            "unit_id": unit_id,
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
        "rules": rules,
    }


SITE, GATEWAY_ID = "bench", "bench-gw"


def write_site(
    directory: Path,
    *,
    devices: int,
    registers: int,
    period_s: float,
    ports: Sequence[int],
    layout: str = "units",
    broker_port: int | None = None,
    health_port: int | None = None,
    ticketing: dict[str, object] | None = None,
) -> Path:
    """Write the site into `directory` (telemetry.db goes to `directory/var`); returns it.
    `ticketing` is the `ticketing:` section of gateway.yaml, when given."""
    if registers < 1:
        raise ValueError("each device needs at least one register")
    if len(ports) < ports_needed(devices, layout):
        raise ValueError(f"{devices} devices need {ports_needed(devices, layout)} server ports")
    (directory / "devices").mkdir(parents=True, exist_ok=True)
    gateway: dict[str, object] = {
        "site": SITE,
        "gateway_id": GATEWAY_ID,
        "devices": ["devices/*.yaml"],
        "storage": {"directory": "var"},
    }
    if broker_port is not None:
        gateway["uplink"] = {"port": broker_port}
    if health_port is not None:
        gateway["health"] = {"port": health_port}
    if ticketing is not None:
        gateway["ticketing"] = ticketing
    (directory / "gateway.yaml").write_text(yaml.safe_dump(gateway, sort_keys=False))
    for n in range(devices):
        if layout == "endpoints":
            port, unit_id = ports[n], 1
        else:
            port, unit_id = ports[n // UNITS_PER_PORT], n % UNITS_PER_PORT + 1
        document = device_document(n, registers, period_s, port, unit_id)
        path = directory / "devices" / f"{device_id(n)}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
    return directory
