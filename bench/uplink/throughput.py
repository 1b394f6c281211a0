"""Outbox throughput: ticket messages committed to state.db per second
(one `BEGIN IMMEDIATE ... COMMIT` each, WAL, synchronous=FULL, as the ticket service does),
then drained: published over MQTT 5 to a real mosquitto on loopback, received by the
simulated central system, acknowledged by `cmd/ack` and settled in state.db.

    .venv/bin/python -m bench.uplink.throughput --messages 2000

Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

from tests.faults.support import TicketProducer, make_uplink, open_state, running_central
from tests.support.broker import MosquittoBroker
from tests.uplink.helpers import running


async def measure(messages: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder, MosquittoBroker() as broker:
        state = await open_state(Path(folder))
        producer = TicketProducer(state)
        try:
            started = time.perf_counter()
            for _ in range(messages):
                await producer.open_one()
            commit_s = time.perf_counter() - started
            uplink = make_uplink(state, broker.port, resend_interval_s=30.0, batch_size=200)
            async with running_central(broker.port) as central:
                started = time.perf_counter()
                async with running(uplink.run_uplink(), "uplink"):
                    while await state.outbox.depth() > 0:  # noqa: ASYNC110 (polls state.db)
                        await asyncio.sleep(0.05)
                drain_s = time.perf_counter() - started
                delivered = len({event.event_id for event in central.received})
        finally:
            await state.close()
    return {
        "messages": messages,
        "commit_per_s": messages / commit_s,
        "drain_per_s": messages / drain_s,
        "delivered": delivered,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(measure(args.messages))
    print("| messages | committed/s (fsync each) | drained/s (publish + central ack + settle) "
          "| delivered |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: |")
    print(f"| {result['messages']:.0f} | {result['commit_per_s']:.0f} | "
          f"{result['drain_per_s']:.0f} | {result['delivered']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
