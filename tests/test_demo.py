"""`edge-gateway demo --duration`: the README's main command, run as a user runs it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.site import REPO

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_demo_opens_and_acknowledges_the_pump_ticket_and_leaves_nothing_running():
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--duration", "45"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
    assert "scenario ticket (threshold.high) acknowledged: yes" in out
    assert "tickets opened:        2" in out
    acknowledged = [line.split()[2] for line in out.splitlines() if line.endswith("ACKNOWLEDGED")]
    assert sorted(acknowledged) == ["bearing.outer_race", "threshold.high"], out[-3000:]
    # Every protocol of the demo plant delivered good data: Modbus, OPC UA and CAN (slcan).
    lines = out.splitlines()
    start = lines.index("  good samples kept on site (telemetry.db), per device:")
    counts = dict(line.split() for line in lines[start + 1 : start + 4])
    assert set(counts) == {"pump-1", "pump-1-vib", "motor-1"}
    assert all(int(n) > 0 for n in counts.values()), counts
    assert "[central " in out and "WO-1001" in out, "the planner's view of the ticket is printed"
    assert re.search(r"^demo: site page on http://127\.0\.0\.1:\d+/", out, re.M), "page address"
    leftovers = subprocess.run(
        ["pgrep", "-f", "edge-demo-"], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout.strip() == "", "demo left processes behind"


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
