"""Issue 11, item 3: acks are never stuck behind a burst of commands. A flooding sender
publishes 3 000 commands through a real mosquitto while tickets open and the central system
acknowledges them; each ticket message must settle promptly although the burst is still being
answered. (Before: commands were handled one at a time at about 22/s and acks waited behind a
burst, settling up to 31.7 s late.) The figures for a 10 000-command burst are measured by
`bench/commands.py`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.broker import MosquittoBroker
from tests.support.command_burst import BROKER_CONFIG, measure_burst

pytestmark = [pytest.mark.broker, pytest.mark.slow]

BURST = 3_000
TICKETS = 12
# On a quiet machine an ack settles in a few tens of milliseconds during the burst; the
# margin is for a loaded CI machine, and still an order of magnitude below the 31.7 s seen.
SETTLE_LIMIT_S = 2.0


async def test_acks_settle_promptly_while_a_command_burst_is_answered(tmp_path: Path) -> None:
    with MosquittoBroker(extra_config=BROKER_CONFIG) as broker:
        result = await measure_burst(tmp_path, broker.port, commands=BURST, tickets=TICKETS)
    assert result.replies == BURST, "every command of the burst was answered"
    assert result.rate_limited > BURST / 2, "the flooding actor was rate limited"
    assert result.opened_during_burst >= TICKETS // 2, "the tickets were acked during the burst"
    assert max(result.ack_latencies_s) < SETTLE_LIMIT_S, sorted(result.ack_latencies_s)
    print(
        f"\nburst of {BURST}: answered in {result.burst_s:.2f} s ({result.commands_per_s:.0f}/s),"
        f" {result.accepted} accepted, {result.rate_limited} rate limited; ack latency"
        f" p50 {result.latency(0.5) * 1000:.0f} ms, max {max(result.ack_latencies_s) * 1000:.0f} ms"
    )
