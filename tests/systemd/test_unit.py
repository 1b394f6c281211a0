"""The systemd unit: offline security score and the contract with the daemon."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "edge-gateway.service"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_scores_at_most_2_0_in_offline_security_analysis():
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def test_unit_checks_config_first_and_never_restarts_on_a_bad_config():
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert any("check-config" in cmd for cmd in s["ExecStartPre"])
    assert "78" in s["RestartPreventExitStatus"][0].split()
    assert s["WatchdogSec"], "the daemon sends WATCHDOG=1, so the unit must ask for it"


def test_unit_keeps_serial_and_can_access():
    s = unit_settings()
    assert "AF_CAN" in s["RestrictAddressFamilies"][0]
    assert any("ttyS" in rule for rule in s["DeviceAllow"])
    assert "dialout" in s["SupplementaryGroups"][0]
    assert "PrivateUsers" not in s, "PrivateUsers would unmap the dialout group"


def test_reload_validates_before_sending_sighup():
    reload = unit_settings()["ExecReload"]
    assert len(reload) == 2
    assert "check-config" in reload[0]
    assert reload[1] == "/bin/kill -HUP $MAINPID"


def test_secrets_folder_is_not_world_readable():
    tmpfiles = UNIT.with_name("edge-gateway.tmpfiles.conf").read_text()
    assert "d /etc/edge-gateway/secrets 0750 root edge-gateway -" in tmpfiles
