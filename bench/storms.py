"""Cost of a storm per finding: the real ticket service on a real state.db
(WAL, synchronous=FULL), the CloudEvents encoder and the outbox, no broker (the uplink's cost is
`bench.uplink`). Time is a `ManualClock`; the timer tick runs once per simulated second, as the
daemon runs it, and is timed apart.

Three storms, each of new conditions that never clear:

- `burst-flood`: 5000 conditions in one area within 500 s, each of its own signature (asset
  class): the ISA-18.2 area flood folds them (members rewritten whole with every new one
  would cost 2.8 ms per finding at the start, about 50 ms at the end);
- `burst-group`: 5000 conditions of one signature within 500 s: one storm of its group;
- `slow-group`: 2173 of one signature over 48 h of simulated time (about 45 an hour).

For each: milliseconds of wall-clock time per `on_finding` over the first and the last 200
findings (median of those), and of the timer tick over the first and last 50 ticks; the median
over `--runs` runs.

    .venv/bin/python -m bench.storms --runs 3

Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.assembly.ticketing import lifecycle_policy
from gateway.config.models import TicketingConfig
from gateway.core.clock import ManualClock
from gateway.core.records import FaultCode, Finding, Priority
from gateway.store import StateDatabase
from gateway.ticketing.policy import AssetProfile
from gateway.ticketing.service import TicketService
from uplink.events import make_ticket_encoder, source_urn
from uplink.topics import Topics

T0 = 1_714_521_600.0
EDGE = 200  # findings timed at each end
TICKS = 50


@dataclass(frozen=True)
class Storm:
    name: str
    count: int
    span_s: float
    one_signature: bool


STORMS = (
    Storm("burst-flood", 5000, 500.0, one_signature=False),
    Storm("burst-group", 5000, 500.0, one_signature=True),
    Storm("slow-group", 2173, 48 * 3600.0, one_signature=True),
)


@dataclass(frozen=True)
class Result:
    start_ms: float
    end_ms: float
    tick_start_ms: float
    tick_end_ms: float
    tickets: int
    incidents: int


async def run(storm: Storm, folder: Path) -> Result:
    clock = ManualClock(T0)
    store = await StateDatabase.open(folder / "state.db", clock=clock)
    topics = Topics("factory", "plant-a", "edge-01")
    encoder = make_ticket_encoder(
        topics, source_urn("plant-a", "edge-01"), store.outbox.next_sequence
    )
    assets = {
        f"m-{n}": AssetProfile(
            f"m-{n}", "press" if storm.one_signature else f"make-{n}", area="hall"
        )
        for n in range(storm.count)
    }
    service = TicketService(
        "plant-a",
        "edge-01",
        store,
        encoder,
        clock,
        policy=lifecycle_policy(TicketingConfig()),
        assets=assets,
    )
    await service.start()
    per_finding: list[float] = []
    per_tick: list[float] = []
    spacing = storm.span_s / storm.count
    next_tick = T0 + 1.0
    try:
        for n in range(storm.count):
            ts = T0 + n * spacing
            while next_tick <= ts:  # the daemon's timer task, once a simulated second
                clock.advance(next_tick - clock.now())
                begun = time.perf_counter()
                await service.advance_timers()
                per_tick.append(time.perf_counter() - begun)
                next_tick += 1.0 if storm.span_s < 10_000 else 60.0
            if ts > clock.now():
                clock.advance(ts - clock.now())
            finding = Finding(
                asset=f"m-{n}",
                fault_code=FaultCode.THRESHOLD_HIGH,
                severity=Priority.P2,
                score=1.0,
                detector="threshold:oil",
                message="oil hot",
                ts=ts,
                value=91.0,
            )
            begun = time.perf_counter()
            await service.on_finding(finding)
            per_finding.append(time.perf_counter() - begun)
        opened = service.open_tickets()
        incidents = sum(1 for t in opened if t.fault_code == FaultCode.ALARM_FLOOD)
        return Result(
            start_ms=statistics.median(per_finding[:EDGE]) * 1000,
            end_ms=statistics.median(per_finding[-EDGE:]) * 1000,
            tick_start_ms=statistics.median(per_tick[:TICKS]) * 1000,
            tick_end_ms=statistics.median(per_tick[-TICKS:]) * 1000,
            tickets=len(opened) - incidents,
            incidents=incidents,
        )
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=[s.name for s in STORMS], default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(
        "| storm | conditions | ms per finding, first / last 200 | ms per timer tick,"
        " first / last 50 | tickets + incidents |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for storm in STORMS:
        if args.only and storm.name != args.only:
            continue
        results = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as folder:
                results.append(asyncio.run(run(storm, Path(folder))))

        def med(field: str, rs: list[Result] = results) -> float:
            return statistics.median(getattr(r, field) for r in rs)

        last = results[-1]
        print(
            f"| {storm.name} | {storm.count} | {med('start_ms'):.2f} / {med('end_ms'):.2f}"
            f" | {med('tick_start_ms'):.2f} / {med('tick_end_ms'):.2f}"
            f" | {last.tickets} + {last.incidents} |"
        )


if __name__ == "__main__":
    main()
