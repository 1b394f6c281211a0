"""An example site for end-to-end tests: the shipped `configs/` copied and pointed at the
servers a test started, with short periods so a scenario runs in seconds."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def make_site(
    workdir: Path,
    *,
    broker_port: int,
    modbus_port: int,
    poll_period_s: float = 0.2,
    on_delay_s: float = 0.6,
    resend_interval_s: float = 1.0,
) -> Path:
    """Returns the path of the copied gateway.yaml."""
    config_dir = workdir / "config"
    shutil.copytree(REPO / "configs", config_dir, ignore=shutil.ignore_patterns("var", "schema"))
    gateway_yaml = config_dir / "gateway.yaml"
    gw: dict[str, Any] = yaml.safe_load(gateway_yaml.read_text())
    gw["uplink"].update(port=broker_port, resend_interval_s=resend_interval_s)
    gw["storage"]["directory"] = str(workdir / "var")
    gateway_yaml.write_text(yaml.safe_dump(gw, sort_keys=False))
    for device_file in (config_dir / "devices").glob("*.yaml"):
        device: dict[str, Any] = yaml.safe_load(device_file.read_text())
        if device["connection"]["protocol"] != "modbus_tcp":
            device_file.unlink()  # this site exercises the Modbus pump only
            continue
        # The assets it depends on are not on this site (their files were left out).
        device.get("asset", {}).pop("depends_on", None)
        device["connection"]["port"] = modbus_port
        device["connection"]["timeout_s"] = poll_period_s / 2
        device["poll_period_s"] = poll_period_s
        for rule in device.get("rules", []):
            rule["on_delay_s"] = on_delay_s
        device_file.write_text(yaml.safe_dump(device, sort_keys=False))
    return gateway_yaml
