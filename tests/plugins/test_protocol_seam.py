"""The protocol seam: a protocol defined in the tests alone (`tests/plugins/ramp.py`) and
entered in an extended copy of the protocol table is validated, checked, polled, stored and
ticketed like the shipped ones, with no change to gateway/."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from pathlib import Path

import pytest
import yaml

from gateway.app import Gateway
from gateway.config.check import check_config
from gateway.config.loader import load_config
from gateway.config.schema import json_schema
from gateway.core.clock import SystemClock
from gateway.core.errors import ConfigError
from protocols import PROTOCOLS
from simulator.central import CentralSystem
from tests.support.broker import MosquittoBroker

WITH_RAMP = PROTOCOLS.with_entries({"ramp": "tests.plugins.ramp:RAMP"})


def write_site(folder: Path, broker_port: int, *, step: float = 10.0) -> Path:
    (folder / "devices").mkdir(parents=True)
    gateway = {
        "site": "plant-a",
        "gateway_id": "edge-01",
        "storage": {"directory": str(folder / "var")},
        "uplink": {"port": broker_port, "resend_interval_s": 1.0, "health_period_s": None},
    }
    device = {
        "id": "oven-1",
        "asset": {"class": "oven", "area": "hall-1"},
        "connection": {"protocol": "ramp", "name": "r1"},
        "poll_period_s": 0.1,
        "ramps": [{"name": "temp", "start": 20.0, "step": step, "unit": "degC"}],
        "rules": [{"name": "too_hot", "signal": "temp", "hi": 60.0}],
    }
    (folder / "gateway.yaml").write_text(yaml.safe_dump(gateway))
    (folder / "devices" / "oven-1.yaml").write_text(yaml.safe_dump(device))
    return folder / "gateway.yaml"


def test_the_shipped_table_does_not_know_the_ramp_and_names_the_known_protocols(tmp_path):
    site = write_site(tmp_path, 1883)
    with pytest.raises(ConfigError) as caught:
        load_config(site)
    [problem] = [p for p in caught.value.problems if p.path == "connection.protocol"]
    assert ", ".join(PROTOCOLS.names) in problem.message and "'ramp'" in problem.message


def test_the_extended_table_validates_the_ramp_with_its_own_values_field_and_check(tmp_path):
    loaded = load_config(write_site(tmp_path / "good", 1883), protocols=WITH_RAMP)
    [(_, device)] = loaded.devices
    assert device.values_field == "ramps" and device.value_names == ["temp"]
    # The plugin's own check runs, located at file and line like every problem.
    with pytest.raises(ConfigError) as caught:
        load_config(write_site(tmp_path / "flat", 1883, step=0.0), protocols=WITH_RAMP)
    [problem] = caught.value.problems
    assert (problem.path, problem.message) == ("ramps.0.step", "a ramp with step 0 is flat")
    assert problem.file.endswith("oven-1.yaml") and problem.line is not None
    # Its keys are in the JSON Schema an editor completes from, and only with the extension.
    assert "RampConnection" not in json_schema()["$defs"]


@pytest.mark.broker
async def test_a_ramp_device_is_polled_stored_and_ticketed_end_to_end(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    loaded = load_config(write_site(tmp_path, mosquitto.port), protocols=WITH_RAMP)
    central = CentralSystem(
        "127.0.0.1", mosquitto.port, "factory", "plant-a", "edge-01", output=io.StringIO()
    )
    central_task = asyncio.create_task(central.run_central(), name="central")
    stop = asyncio.Event()
    gateway = asyncio.create_task(Gateway(loaded, SystemClock()).run(stop), name="gateway")
    try:
        await asyncio.wait_for(central.wait_connected(), 10)
        # 20, 30, ... degC: past the 60 degC limit at the fifth poll.
        await asyncio.wait_for(central.wait_until(lambda c: bool(c.work_orders)), 20)
    finally:
        stop.set()
        await asyncio.wait_for(gateway, 15)
        central_task.cancel()
        await asyncio.gather(central_task, return_exceptions=True)
    [opened] = [r for r in central.received if r.kind == "opened"]
    assert (opened.data["asset"], opened.data["fault_code"]) == ("oven-1", "threshold.high")
    assert opened.data["peak_value"] > 60
    with sqlite3.connect(tmp_path / "var" / "telemetry.db") as db:
        (polls,) = db.execute("SELECT count(*) FROM sample_groups").fetchone()
    assert polls >= 5  # one row per device and poll


def test_check_config_accepts_the_ramp_site_only_with_the_extended_table(tmp_path):
    site = write_site(tmp_path, 1883)
    assert check_config(str(site), io.StringIO(), io.StringIO()) == 78
