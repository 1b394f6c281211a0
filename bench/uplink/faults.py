"""Full-length uplink faults: the uncompressed versions of tests/faults.

    .venv/bin/python -m bench.uplink.faults --outage-s 180 --kills 20 --kill-period-s 2

1. The broker is down for `--outage-s` while a ticket opens every `--ticket-period-s`;
   recovery = time from the broker's return until the central system has every ticket.
2. The broker is SIGKILLed `--kills` times, every `--kill-period-s`, restarted at once.

Real mosquitto, real state.db, the real uplink and the simulated central system (which
deduplicates by CloudEvents id). Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

from tests.faults.support import (
    TicketProducer,
    delivered_ids,
    make_uplink,
    open_state,
    running_central,
)
from tests.support.broker import MosquittoBroker
from tests.uplink.helpers import running


async def wait_delivered(producer: TicketProducer, central: object, limit_s: float) -> float:
    started = time.monotonic()
    while not set(producer.committed) <= set(delivered_ids(central)):  # type: ignore[arg-type]
        if time.monotonic() - started > limit_s:
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def outage(outage_s: float, ticket_period_s: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder, MosquittoBroker() as broker:
        state = await open_state(Path(folder))
        producer = TicketProducer(state)
        uplink = make_uplink(state, broker.port, resend_interval_s=5.0)
        try:
            async with running_central(broker.port) as central, running(
                uplink.run_uplink(), "uplink"
            ):
                done = asyncio.Event()
                async with running(producer.run_opening(ticket_period_s, done), "producer"):
                    broker.kill()
                    await asyncio.sleep(outage_s)
                    broker.start()
                    done.set()
                recovery = await wait_delivered(producer, central, 120)
                received = delivered_ids(central)
                stats = central.statistics()
        finally:
            await state.close()
    return {
        "scenario": f"broker down {outage_s:.0f} s, a ticket every {ticket_period_s:g} s",
        "committed": len(producer.committed),
        "lost": len(set(producer.committed) - set(received)),
        "duplicates": len(received) - len(set(received)),
        "dropped_by_consumer": stats.duplicates_dropped,
        "recovery_s": recovery,
    }


async def kills(count: int, period_s: float, ticket_period_s: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder, MosquittoBroker() as broker:
        state = await open_state(Path(folder))
        producer = TicketProducer(state)
        uplink = make_uplink(state, broker.port, resend_interval_s=5.0)
        try:
            async with running_central(broker.port) as central, running(
                uplink.run_uplink(), "uplink"
            ):
                done = asyncio.Event()
                async with running(producer.run_opening(ticket_period_s, done), "producer"):
                    for _ in range(count):
                        await asyncio.sleep(period_s)
                        broker.kill()
                        broker.start()
                    done.set()
                recovery = await wait_delivered(producer, central, 120)
                received = delivered_ids(central)
                stats = central.statistics()
        finally:
            await state.close()
    return {
        "scenario": f"broker SIGKILLed {count} times every {period_s:g} s",
        "committed": len(producer.committed),
        "lost": len(set(producer.committed) - set(received)),
        "duplicates": len(received) - len(set(received)),
        "dropped_by_consumer": stats.duplicates_dropped,
        "recovery_s": recovery,
    }


async def run(args: argparse.Namespace) -> list[dict[str, object]]:
    return [
        await outage(args.outage_s, args.ticket_period_s),
        await kills(args.kills, args.kill_period_s, args.ticket_period_s / 10),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--outage-s", type=float, default=180.0)
    parser.add_argument("--ticket-period-s", type=float, default=1.0)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--kill-period-s", type=float, default=2.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows = asyncio.run(run(args))
    print("| scenario | committed | lost | duplicates after dedup | resends dropped by "
          "consumer | all delivered after |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['scenario']} | {row['committed']} | {row['lost']} | {row['duplicates']} "
              f"| {row['dropped_by_consumer']} | {row['recovery_s']:.1f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
