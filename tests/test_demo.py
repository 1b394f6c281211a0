"""`edge-gateway demo`: Ctrl-C stops every process it started. The run to the signed-off
ticket (`--duration 90`), with every message on its broker checked against the contract, is
tested from an installed wheel, as a user runs it: tests/packaging/test_wheel.py."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.site import REPO

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_ctrl_c_stops_every_process_of_the_demo():
    demo = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert demo.stdout is not None
        children: list[str] = []
        for line in demo.stdout:
            if line.startswith("demo: running"):
                break
        children = subprocess.run(
            ["pgrep", "-P", str(demo.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) == 4, "broker, plant, central system and gateway"
        demo.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert "Demo summary" in rest
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
            f"/proc/{pid}/status"
        ).read_text().lower(), f"demo child {pid} still running after Ctrl-C"
