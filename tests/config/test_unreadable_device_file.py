"""A device file check-config cannot read is a problem named with its file, not a crash and not
a device quietly left out (issue 15, item 4: "files it names must exist and be readable";
systemd's pre-start check runs check-config as the service user, who may not be the user that
wrote the file).

Root reads a file whatever its mode, through the capabilities CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH. Run as root, the check therefore runs in a child process without them
(util-linux `setpriv`), where a file of mode 000 refuses to be read as it does for any other
user; run as another user, it runs in this process."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config.check import check_config
from gateway.core.exit_codes import EX_CONFIG
from tests.support.site import REPO

SITE = "site: plant-a\ngateway_id: edge-01\ndevices:\n  - devices/*.yaml\n"
DEVICE = """\
id: {id}
connection: {{protocol: modbus_tcp, host: 10.0.0.5, port: 502}}
points:
  - {{name: temp, address: 0}}
"""
NO_DAC = "-dac_override,-dac_read_search"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A site of two device files, `devices/locked.yaml` of mode 000."""
    (tmp_path / "devices").mkdir()
    (tmp_path / "gateway.yaml").write_text(SITE)
    (tmp_path / "devices" / "pump-1.yaml").write_text(DEVICE.format(id="pump-1"))
    locked = tmp_path / "devices" / "locked.yaml"
    locked.write_text(DEVICE.format(id="pump-2"))
    locked.chmod(0)
    try:
        yield tmp_path
    finally:
        locked.chmod(0o644)  # so that the temporary folder can be removed


def check_without_read_rights(site: Path) -> tuple[int, list[str]]:
    """Exit status and stderr lines of `check-config gateway.yaml` run in `site` by a user
    the mode 000 applies to."""
    if os.geteuid() != 0:
        err = io.StringIO()
        cwd = os.getcwd()
        os.chdir(site)
        try:
            status = check_config("gateway.yaml", io.StringIO(), err)
        finally:
            os.chdir(cwd)
        return status, err.getvalue().splitlines()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without util-linux `setpriv`: no user to whom mode 000 "
                    "applies")  # fmt: skip
    done = subprocess.run(
        [setpriv, f"--inh-caps={NO_DAC}", f"--bounding-set={NO_DAC}",
         sys.executable, "-m", "gateway", "check-config", "gateway.yaml"],
        cwd=site, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    return done.returncode, done.stderr.splitlines()


def test_a_device_file_that_cannot_be_read_is_reported_with_its_name(site: Path) -> None:
    status, lines = check_without_read_rights(site)
    assert status == EX_CONFIG, lines
    assert len(lines) == 1, lines
    [line] = lines
    assert line.startswith("devices/locked.yaml:"), line
    assert "cannot read" in line and "Permission denied" in line, line
