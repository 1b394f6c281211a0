"""`edge-gateway demo`: Ctrl-C stops every process it started. The run to the signed-off
ticket (`--duration 90`) is tested from an installed wheel, as a user runs it:
tests/packaging/test_wheel.py."""

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


async def test_every_message_of_the_demo_on_the_wire_fits_the_contract():
    """Issue 14, item 2: a `#` subscriber on the demo's broker checks every message of a
    demo run (three protocols, vibration and threshold tickets, the central system's acks, the
    people's commands and the replies, the repair's verification and the sign-off) against the
    shipped AsyncAPI document."""
    import asyncio
    import re

    from tests.support.contract import watching_the_wire

    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "demo", "--duration", "90",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert demo.stdout is not None
    try:
        port = None
        async with asyncio.timeout(60):
            while port is None:
                line = (await demo.stdout.readline()).decode()
                assert line, "the demo ended before naming its broker"
                found = re.search(r"demo: broker on 127\.0\.0\.1:(\d+)", line)
                port = int(found[1]) if found else None
        async with watching_the_wire(port) as wire:
            rest, _ = await asyncio.wait_for(demo.communicate(), 240)
    finally:
        if demo.returncode is None:
            demo.kill()
            await demo.wait()
    assert demo.returncode == 0, rest.decode()[-3000:]
    assert wire.violations() == []
    topics = {m.topic.split("/", 3)[-1] for m in wire.seen}
    assert {"tickets/opened", "tickets/transition", "cmd/ack", "status"} <= topics, topics
    # The whole loop went over the wire: the technician's steps and the requester's sign-off.
    assert {"cmd/accept", "cmd/start", "cmd/close", "cmd/confirm"} <= topics, topics
