"""A command burst through a real mosquitto (issue 11, item 3), shared by the test that asserts
acks settle promptly during one and by `bench/commands.py`, which measures it.

The gateway side is the real ticketing and uplink: state.db, the ticket service, the command
table and the `Uplink`. A simulated central system acknowledges every ticket message (actor
`cmms`), while a flooding sender (actor `flood`) publishes a burst of commands as fast as the
broker takes them. Tickets opened during the burst measure the ack latency: from the commit of
a ticket's message to its settlement by the central system's ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core.clock import SystemClock
from gateway.core.records import FaultCode, Finding, Priority
from gateway.store import StateDatabase
from gateway.ticketing.commands import TicketCommands
from gateway.ticketing.policy import AssetProfile
from gateway.ticketing.service import TicketService
from simulator.central import CentralSystem
from tests.uplink.helpers import GATEWAY, SITE, TOPICS, uplink_settings
from uplink.admission import RateLimit
from uplink.events import make_ticket_encoder, source_urn
from uplink.mqtt import LinkSettings, MessageProperties, MqttLink, OutgoingMessage
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
        encode = make_ticket_encoder(
            TOPICS, source_urn(SITE, GATEWAY), self.store.outbox.next_sequence
        )
        assets = {f"pump-{n}": AssetProfile(f"pump-{n}", "pump", area=f"a{n}") for n in range(100)}
        self.service = TicketService(SITE, GATEWAY, self.store, encode, self.clock, assets=assets)
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
        """Open a ticket (one message, committed now); returns its event id."""
        before = {i.event_id for i in await self.store.outbox.unsettled(100_000)}
        await self.service.on_finding(
            Finding(
                asset=f"pump-{n}", fault_code=FaultCode.THRESHOLD_HIGH, severity=Priority.P2,
                score=1.0, detector="threshold:hot", message="hot", ts=self.clock.now(),
                active=True, value=85.0,
            )
        )  # fmt: skip
        new = [i.event_id for i in await self.store.outbox.unsettled(100_000)
               if i.event_id not in before]  # fmt: skip
        return new[0]

    async def wait_settled(self, event_id: str, timeout_s: float) -> float:
        """Seconds until the message is settled (polled every 5 ms)."""
        started = time.perf_counter()
        async with asyncio.timeout(timeout_s):
            while True:
                item = await self.store.outbox.get_message(event_id)
                if item is not None and item.settled_at is not None:
                    return time.perf_counter() - started
                await asyncio.sleep(0.005)


class Flooder:
    """Publishes `count` commands from one actor and counts the replies."""

    def __init__(self, port: int, count: int, verb: str = "snapshot") -> None:
        self.count, self.verb = count, verb
        self.reply_topic = "flood/replies"
        self.replies = 0
        self.accepted = 0
        self.rate_limited = 0
        self.busy = 0
        self.first_sent = 0.0
        self.last_reply = 0.0
        self.sent_all = asyncio.Event()
        self.done = asyncio.Event()
        self.link = MqttLink(
            LinkSettings("127.0.0.1", port, "flooder", subscriptions=(self.reply_topic,),
                         clean_start=True, inbound_queue_size=65_535)
        )  # fmt: skip

    async def run_replies(self) -> None:
        while True:
            message = await self.link.receive()
            document = json.loads(message.payload)
            self.replies += 1
            self.accepted += bool(document["accepted"])
            self.rate_limited += document["reason"].startswith("rate limited")
            self.busy += document["reason"].startswith("busy")
            self.last_reply = time.perf_counter()
            self.link.acknowledge(message)
            if self.replies >= self.count:
                self.done.set()

    async def run_flood(self) -> None:
        self.first_sent = time.perf_counter()
        pending: list[asyncio.Future[int]] = []
        for n in range(self.count):
            body = {"command_id": f"f-{n}", "actor": FLOOD_ACTOR, "asset": "pump-0"}
            props = MessageProperties(response_topic=self.reply_topic, correlation_data=b"%d" % n)
            message = OutgoingMessage(TOPICS.cmd(self.verb), json.dumps(body).encode(),
                                      properties=props)  # fmt: skip
            pending.append(self.link.send(message))
            if len(pending) >= 500:  # paho queues without bound; keep it in step
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        self.sent_all.set()


@contextlib.asynccontextmanager
async def running(
    gateway: Gateway, central: CentralSystem, flooder: Flooder
) -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(gateway.uplink.run_uplink(), name="uplink"),
        asyncio.create_task(central.run_central(), name="central"),
    ]
    try:
        async with flooder.link:
            async with asyncio.timeout(10):
                await central.wait_connected()
                await flooder.link.wait_connected()
                while not gateway.uplink.statistics().connected:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            tasks.append(asyncio.create_task(flooder.run_replies(), name="flood.replies"))
            yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def measure_burst(
    folder: Path, port: int, *, commands: int, tickets: int, limits: bool = True,
    timeout_s: float = 120.0,
) -> BurstResult:
    """Flood `commands` and open `tickets` tickets while it lasts, one after the other."""
    gateway = Gateway(folder / "state.db", port, limits=limits)
    await gateway.start()
    central = CentralSystem("127.0.0.1", port, "factory", SITE, GATEWAY, output=io.StringIO(),
                            actor=ACTOR)  # fmt: skip
    flooder = Flooder(port, commands)
    latencies: list[float] = []
    opened_during = 0
    try:
        async with running(gateway, central, flooder):
            flood = asyncio.create_task(flooder.run_flood(), name="flood")
            try:
                for n in range(1, tickets + 1):
                    during = not flooder.done.is_set()
                    event_id = await gateway.open_ticket(n)
                    latencies.append(await gateway.wait_settled(event_id, timeout_s))
                    opened_during += during and not flooder.done.is_set()
                async with asyncio.timeout(timeout_s):
                    await flood
                    await flooder.done.wait()
            finally:
                flood.cancel()
                await asyncio.gather(flood, return_exceptions=True)
    finally:
        await gateway.close()
    return BurstResult(
        commands=commands,
        burst_s=flooder.last_reply - flooder.first_sent,
        replies=flooder.replies,
        accepted=flooder.accepted,
        rate_limited=flooder.rate_limited,
        busy=flooder.busy,
        ack_latencies_s=latencies,
        opened_during_burst=opened_during,
    )
