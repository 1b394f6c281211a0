"""The uplink back within seconds of a half-open link clearing (issue 11, item 6), with the
shipped settings (keep-alive 30 s, ack timeout 15 s, backoff 0.5 s doubling to 30 s): a real
mosquitto behind a proxy that black-holes the link while tickets keep opening. The uplink
probes the broker end to end (an MQTT CONNECT on a fresh connection) while a PUBACK or a
CONNACK is overdue or it backs off; once the broker answers again, a silent connection is
dropped and the backoff cut short. Before, the same scenario took 16 s and more (a connection
attempt lost in the black hole waited out the keep-alive).

Target: <= 5 s after the link clears (the figures over several runs: `bench/recovery.py`), and
no ticket message lost. Scenario in `tests/faults/recovery.py`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.recovery import uplink_recovery_s

pytestmark = [pytest.mark.broker, pytest.mark.slow]


async def test_a_half_open_session_is_replaced_within_5_s_of_the_link_clearing(tmp_path: Path):
    # 8 s: shorter than the ack timeout, the session is still "connected" when the link clears.
    assert await uplink_recovery_s(tmp_path, blackout_s=8.0) <= 5.0


async def test_reconnects_within_5_s_when_the_attempts_vanished_in_the_black_hole(tmp_path: Path):
    # 20 s: past the ack timeout, the uplink has dropped the session and its connection
    # attempts were swallowed; the next one must not wait out a keep-alive or a backoff step.
    assert await uplink_recovery_s(tmp_path, blackout_s=20.0) <= 5.0
