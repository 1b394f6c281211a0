"""Recovery in seconds, not a backoff step (issue 11, item 6; DESIGN.md section 9): a device
whose server goes away long enough for the backoff to grow (20 s: retries after 1, 3, 7, 15 and
31 s) is read again within the target after it returns, because its source probes it (a TCP
connect, the adapter's tty present) between backoff steps. Without the probe the same runs
take 9-12 s. Scenarios in `tests/faults/recovery.py`; the figures over several runs come from
`bench/recovery.py`.

Targets: a Modbus device <= 5 s after its server returns, an OPC UA server and a USB-CAN
adapter (slcan) <= 10 s."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.recovery import can_recovery_s, modbus_recovery_s, opcua_plant, opcua_recovery_s

pytestmark = pytest.mark.slow


async def test_a_modbus_device_is_polled_again_within_5_s_of_its_return(tmp_path: Path):
    assert await modbus_recovery_s(tmp_path) <= 5.0


async def test_an_opcua_server_is_streaming_again_within_10_s_of_its_return(tmp_path: Path):
    with opcua_plant() as server:
        assert await opcua_recovery_s(tmp_path, server) <= 10.0


async def test_a_usb_can_adapter_plugged_back_streams_again_within_10_s(tmp_path: Path):
    assert await can_recovery_s(tmp_path) <= 10.0
