"""The shipped demo site run by hand, as a newcomer runs `edge-gateway run configs/gateway.yaml`:
its state goes to the XDG state home, never into the site folder (a checkout), and
`edge-gateway status` on that site, whose health endpoints are off, reads the files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.examples import DEMO_SITE, copy_site, example_site
from tests.support.broker import free_loopback_port
from tests.systemd.service import NotifySocket, Service

pytestmark = pytest.mark.slow


def _hermetic(site: Path) -> None:
    """Only the addresses change: every device and the broker on free loopback ports."""
    gateway_yaml = site / "gateway.yaml"
    gw: dict[str, Any] = yaml.safe_load(gateway_yaml.read_text())
    gw["uplink"]["port"] = free_loopback_port()
    gateway_yaml.write_text(yaml.safe_dump(gw, sort_keys=False))
    for device_file in (site / "devices").glob("*.yaml"):
        device: dict[str, Any] = yaml.safe_load(device_file.read_text())
        conn = device["connection"]
        if conn["protocol"] == "modbus_tcp":
            conn["port"] = free_loopback_port()
        elif conn["protocol"] == "opcua":
            conn["endpoint"] = f"opc.tcp://127.0.0.1:{free_loopback_port()}/edge-gateway/pump"
        elif conn["protocol"] == "can":
            conn["channel"] = str(site / "no-such-adapter")
        device_file.write_text(yaml.safe_dump(device, sort_keys=False))


def _status(site: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--config", str(site), *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def ran_by_hand(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    workdir = tmp_path_factory.mktemp("by-hand")
    site = workdir / "checkout-configs"
    copy_site(example_site(DEMO_SITE), site)
    _hermetic(site)
    before = sorted(p.relative_to(site) for p in site.rglob("*"))
    xdg = workdir / "xdg-state"
    env = {"XDG_STATE_HOME": str(xdg)}
    notify = NotifySocket(workdir / "notify")
    service = Service(
        site / "gateway.yaml", workdir, env={**env, "NOTIFY_SOCKET": str(notify.path)}
    )
    try:
        assert notify.next(60).startswith("READY=1"), service.log()[-3000:]
        service.signal(signal.SIGTERM)
        assert service.stop() == 0, service.log()[-3000:]
    finally:
        service.stop()
        notify.close()
    assert sorted(p.relative_to(site) for p in site.rglob("*")) == before, "wrote into the site"
    status_env = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"}
    return site, xdg, {**status_env, **env}


def test_state_of_a_run_by_hand_goes_to_the_xdg_state_home(ran_by_hand) -> None:
    _, xdg, _ = ran_by_hand
    state = xdg / "edge-gateway" / "plant-a-edge-01"
    assert (state / "state.db").is_file() and (state / "telemetry.db").is_file()


def test_status_without_health_endpoint_reports_from_the_files(ran_by_hand) -> None:
    site, xdg, env = ran_by_hand
    result = _status(site, env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "health endpoints off; read from the files in" in out
    assert str(xdg / "edge-gateway" / "plant-a-edge-01") in out
    assert re.search(r"open tickets +\d+ \(.*\), \d+ waiting for the central ack", out)
    assert re.search(r"data +telemetry.db last written \d+ s ago", out), out
    assert "`health: {port: 9108}`" in out  # how to get the live figures
    report = json.loads(_status(site, env, "--json").stdout)
    assert report["source"] == "files"
    # The same state.db read by `tickets`: the counts agree. Devices down may have opened
    # comm.lost tickets; with no broker, none was acknowledged, so each one's message is
    # still in the outbox.
    listed = subprocess.run(
        [sys.executable, "-m", "gateway", "tickets", "--config", str(site), "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    tickets = json.loads(listed.stdout)
    assert report["tickets"]["open"] == len(tickets)
    assert report["tickets"]["waiting_for_central_ack"] == len(tickets)
    assert all(t["state"] == "OPENED" for t in tickets)
    assert report["outbox"]["by_kind"].get("ticket", 0) >= len(tickets)


def test_status_without_endpoint_or_state_says_where_it_looked_and_exits_66(
    ran_by_hand, tmp_path: Path
) -> None:
    site, _, env = ran_by_hand
    result = _status(site, {**env, "XDG_STATE_HOME": str(tmp_path)})
    assert result.returncode == 66
    assert f"no state.db in `{tmp_path / 'edge-gateway' / 'plant-a-edge-01'}`" in result.stderr
    assert "STATE_DIRECTORY" in result.stderr and "storage.directory" in result.stderr
