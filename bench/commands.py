"""Commands at rate: a burst of commands from one actor through a real
mosquitto on loopback into the real uplink and ticket command table (state.db, WAL,
synchronous=FULL), while tickets open and the simulated central system acknowledges them.

Two runs: with the default per-actor rate limits (most of the burst is refused at once, as
rate limited), and with the limits lifted, which measures how fast the command table itself
answers (every `snapshot` accepted and remembered in the command log). For each: commands
answered per second over the burst, and the ack latency of ticket messages committed during
it (commit -> central ack -> settled in state.db).

    .venv/bin/python -m bench.commands --commands 10000 --tickets 20

Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

from tests.support.broker import MosquittoBroker
from tests.support.command_burst import BROKER_CONFIG, BurstResult, measure_burst


async def run(commands: int, tickets: int, limits: bool) -> BurstResult:
    with tempfile.TemporaryDirectory() as folder, MosquittoBroker(
        extra_config=BROKER_CONFIG
    ) as broker:
        return await measure_burst(
            Path(folder), broker.port, commands=commands, tickets=tickets, limits=limits,
            timeout_s=600.0,
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=10_000)
    parser.add_argument("--tickets", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print("| rate limits | commands | answered/s | accepted | rate limited | busy "
          "| tickets acked during the burst | ack latency p50 / p95 / max |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for limits in (True, False):
        r = asyncio.run(run(args.commands, args.tickets, limits))
        latency = " / ".join(
            f"{value * 1000:.0f} ms"
            for value in (r.latency(0.5), r.latency(0.95), max(r.ack_latencies_s))
        )
        print(f"| {'default' if limits else 'lifted'} | {r.commands} | {r.commands_per_s:.0f} "
              f"| {r.accepted} | {r.rate_limited} | {r.busy} "
              f"| {r.opened_during_burst} of {len(r.ack_latencies_s)} | {latency} |")  # fmt: skip


if __name__ == "__main__":
    main()
