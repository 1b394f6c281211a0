"""A command burst through a real mosquitto (issue 11, item 3), shared by the test that asserts
acks settle promptly during one and by `bench/commands.py`, which measures it.

The gateway side is the real ticketing and uplink: state.db, the ticket service, the command
table and the `Uplink`. A simulated central system acknowledges every ticket message (actor
`cmms`), while a flooding sender (actor `flood`, a process of its own, as it would be) publishes
a burst of commands as fast as the broker takes them. Tickets opened during the burst measure
the ack latency: from the commit of a ticket's message to its settlement by the central
system's ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core.clock import SystemClock
from gateway.core.interfaces import NewMessage, TicketEvent
from gateway.core.records import FaultCode, Finding, OutboxItem, Priority, Ticket
from gateway.store import StateDatabase
from gateway.ticketing.commands import TicketCommands
from gateway.ticketing.policy import AssetProfile
from gateway.ticketing.service import TicketService
from simulator.central import CentralSystem
from tests.support.site import REPO
from tests.ticketing.policies import default_policy
from tests.uplink.helpers import GATEWAY, SITE, TOPICS, uplink_settings
from uplink.admission import RateLimit
from uplink.events import make_ticket_encoder, source_urn
from uplink.service import DEFAULT_ACK_RATE, DEFAULT_COMMAND_RATE, Uplink

ACTOR = "cmms"
FLOOD_ACTOR = "flood"
# A site broker that takes command bursts needs room to queue them for the gateway (mosquitto
# keeps 1000 per client by default and drops the rest).
BROKER_CONFIG = ("max_queued_messages 100000",)


@dataclass
class BurstResult:
    commands: int
    burst_s: float  # first flood command sent -> last reply received
    replies: int
    accepted: int
    rate_limited: int
    busy: int
    ack_latencies_s: list[float] = field(default_factory=list)
    opened_during_burst: int = 0

    @property
    def commands_per_s(self) -> float:
        return self.replies / self.burst_s if self.burst_s > 0 else 0.0

    def latency(self, quantile: float) -> float:
        ordered = sorted(self.ack_latencies_s)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(quantile * (len(ordered) - 1)))]

    @property
    def mean_latency_s(self) -> float:
        return statistics.fmean(self.ack_latencies_s) if self.ack_latencies_s else float("nan")


class Gateway:
    """The ticketing side and the uplink on one state.db, with the real clock."""

    def __init__(self, state_db: Path, port: int, *, limits: bool = True) -> None:
        self.state_db, self.port, self.limits = state_db, port, limits
        self.clock = SystemClock()

    async def start(self) -> None:
        self.store = await StateDatabase.open(self.state_db, clock=self.clock)
        self._settled: dict[str, asyncio.Event] = {}
        self._watch_settlements()
        inner = make_ticket_encoder(
            TOPICS, source_urn(SITE, GATEWAY), self.store.outbox.next_sequence
        )
        self.opened_by: dict[str, str] = {}  # asset -> event id of its `opened` message

        def encode(ticket: Ticket, event: TicketEvent) -> NewMessage:
            message = inner(ticket, event)
            if event.kind == "opened":
                self.opened_by[ticket.asset] = message.event_id
            return message

        # One asset class and area each: every `open_ticket` opens at once (no storm group's
        # `group_wait` holds a second new condition, no flood folds them into an incident).
        assets = {
            f"pump-{n}": AssetProfile(f"pump-{n}", f"pump-class-{n}", area=f"a{n}")
            for n in range(100)
        }
        self.service = TicketService(
            SITE, GATEWAY, self.store, encode, self.clock, assets=assets, policy=default_policy()
        )
        await self.service.start()
        commands = TicketCommands(
            self.service, self.store.outbox, self.store.commands, self.clock,
            actors=frozenset({ACTOR, FLOOD_ACTOR}),
        )  # fmt: skip
        unlimited = RateLimit(1e9, 10**9)
        settings = uplink_settings(
            self.port,
            resend_interval_s=30.0,
            command_rate=DEFAULT_COMMAND_RATE if self.limits else unlimited,
            ack_rate=DEFAULT_ACK_RATE if self.limits else unlimited,
            command_queue=200 if self.limits else 100_000,
        )
        self.uplink = Uplink(settings, self.store.outbox, commands.handle, self.clock)

    async def close(self) -> None:
        await self.store.close()

    async def open_ticket(self, n: int) -> str:
        """Open a ticket for `pump-<n>` (one message, committed now); returns its event id."""
        await self.service.on_finding(
            Finding(
                asset=f"pump-{n}", fault_code=FaultCode.THRESHOLD_HIGH, severity=Priority.P2,
                score=1.0, detector="threshold:hot", message="hot", ts=self.clock.now(),
                active=True, value=85.0,
            )
        )  # fmt: skip
        return self.opened_by[f"pump-{n}"]

    async def wait_settled(self, event_id: str, timeout_s: float) -> float:
        """Seconds until the message is settled, as the outbox reports it (no polling: reads
        would compete with the gateway for state.db and slow what is measured)."""
        started = time.perf_counter()
        settled = self._settled.setdefault(event_id, asyncio.Event())
        async with asyncio.timeout(timeout_s):
            await settled.wait()
        return time.perf_counter() - started

    def _watch_settlements(self) -> None:
        outbox = self.store.outbox
        settle_event, settle_ticket = outbox.settle_event, outbox.settle_ticket
        settle_events = outbox.settle_events

        def mark(items: list[OutboxItem]) -> None:
            for item in items:
                self._settled.setdefault(item.event_id, asyncio.Event()).set()

        async def by_event(event_id: str, now: float) -> OutboxItem | None:
            item = await settle_event(event_id, now)
            mark([item] if item is not None else [])
            return item

        async def by_events(event_ids: Sequence[str], now: float) -> set[str]:
            settled = await settle_events(event_ids, now)
            for event_id in settled:
                self._settled.setdefault(event_id, asyncio.Event()).set()
            return settled

        async def by_ticket(ticket_id: str, now: float) -> list[OutboxItem]:
            items = await settle_ticket(ticket_id, now)
            mark(items)
            return items

        outbox.settle_event = by_event  # type: ignore[method-assign]
        outbox.settle_ticket = by_ticket  # type: ignore[method-assign]
        outbox.settle_events = by_events  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def running(gateway: Gateway, central: CentralSystem) -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(gateway.uplink.run_uplink(), name="uplink"),
        asyncio.create_task(central.run_central(), name="central"),
    ]
    try:
        async with asyncio.timeout(10):
            await central.wait_connected()
            while not (  # noqa: ASYNC110 (two links to wait for)
                gateway.uplink.statistics().connected
                and gateway.uplink.statistics().ack_session_connected
            ):
                await asyncio.sleep(0.01)
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def measure_burst(
    folder: Path,
    port: int,
    *,
    commands: int,
    tickets: int,
    limits: bool = True,
    ticket_every_s: float = 0.05,
    timeout_s: float = 120.0,
) -> BurstResult:
    """Flood `commands` from another process (`tests/support/flood.py`) and open `tickets`
    tickets meanwhile, one every `ticket_every_s` from the start of the flood, each measured
    from its commit to its settlement."""
    gateway = Gateway(folder / "state.db", port, limits=limits)
    await gateway.start()
    central = CentralSystem("127.0.0.1", port, "factory", SITE, GATEWAY, output=io.StringIO(),
                            actor=ACTOR)  # fmt: skip
    settled_at: list[float] = []
    latencies: list[float] = []

    async def one_ticket(n: int) -> None:
        await asyncio.sleep(n * ticket_every_s)
        event_id = await gateway.open_ticket(n)
        latencies.append(await gateway.wait_settled(event_id, timeout_s))
        settled_at.append(time.time())

    try:
        async with running(gateway, central):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.support.flood", "--port", str(port),
                "--count", str(commands), "--actor", FLOOD_ACTOR,
                cwd=REPO, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                assert process.stdout is not None
                async with asyncio.timeout(timeout_s):
                    assert (await process.stdout.readline()).strip() == b"started"
                    async with asyncio.TaskGroup() as group:
                        for n in range(1, tickets + 1):
                            group.create_task(one_ticket(n), name=f"ticket-{n}")
                    flood = json.loads(await process.stdout.readline())
                    await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    finally:
        await gateway.close()
    return BurstResult(
        commands=commands,
        burst_s=flood["last_reply"] - flood["first_sent"],
        replies=int(flood["replies"]),
        accepted=int(flood["accepted"]),
        rate_limited=int(flood["rate_limited"]),
        busy=int(flood["busy"]),
        ack_latencies_s=latencies,
        opened_during_burst=sum(1 for at in settled_at if at < flood["last_reply"]),
    )
