"""What the fault tests share (issue 6): a proxy that can go silent, a `#` watcher that proves
nothing raw leaves, a ticket producer committing to a real state.db, and the uplink wired to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.clock import SystemClock
from gateway.store import StateDatabase
from simulator.central import CentralSystem
from tests.support.contract import Contract
from tests.uplink.helpers import (
    GATEWAY,
    SITE,
    TOPICS,
    StandInHandler,
    make_event,
    make_ticket,
    uplink_settings,
)
from uplink.events import make_ticket_encoder, source_urn
from uplink.mqtt import InboundMessage, LinkSettings, MqttLink
from uplink.service import Uplink

# Independent of uplink/guard.py on purpose: the broker-side view of what may be seen.
ALLOWED_TOPIC = re.compile(
    rf"^factory/{SITE}/(gw-1|edge-01)/(tickets/(opened|updated|transition)|incidents/.+|status|health"
    r"|summaries/[^/]+|cmd/[a-z]+)$"
    r"|^factory/central/[^/]+/replies$"
)
MAX_NUMBERS_IN_AN_ARRAY = 16
MAX_PAYLOAD_BYTES = 128 * 1024


class StallingProxy:
    """Loopback TCP proxy; `stall()` stops forwarding on the open connections without closing
    them (a NAT mapping that died, a VPN that black-holes): both ends still think they are
    connected. New connections are forwarded normally.

    `blackhole()` stalls the open connections and every new one too (accepted, then nothing
    comes through), until `restore()`: from then on new connections are forwarded again, while
    those that lost bytes stay dead, as a TCP stream that lost data cannot resume."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._dark = False

    async def __aenter__(self) -> StallingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for connection in self._connections:
            for writer in connection["writers"]:
                writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def stall(self) -> None:
        for connection in self._connections:
            connection["stalled"] = True

    def blackhole(self) -> None:
        self._dark = True
        self.stall()

    def restore(self) -> None:
        self._dark = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._dark:
            connection = {"stalled": True, "writers": (writer,)}
            self._connections.append(connection)
            try:
                while await reader.read(65536):
                    pass  # swallowed
            except (ConnectionError, OSError):
                pass
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        connection: dict[str, Any] = {"stalled": False, "writers": (writer, up_writer)}
        self._connections.append(connection)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink, connection), name="proxy.pump")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, connection: dict[str, Any]
    ) -> None:
        try:
            while data := await source.read(65536):
                if connection["stalled"]:
                    continue  # swallowed: the packet is lost, nobody is told
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not connection["stalled"]:
                sink.transport.abort()


def _numeric_runs(value: Any) -> int:
    """The longest array of numbers anywhere in a JSON document."""
    if isinstance(value, list):
        here = sum(1 for v in value if isinstance(v, int | float) and not isinstance(v, bool))
        return max([here, *(_numeric_runs(v) for v in value)])
    if isinstance(value, dict):
        return max([0, *(_numeric_runs(v) for v in value.values())])
    return 0


@dataclass
class EgressWatcher:
    """A subscriber to `#` on the broker: everything anyone published, as the broker saw it."""

    port: int
    seen: list[InboundMessage] = field(default_factory=list)

    def problems(self) -> list[str]:
        found = []
        for message in self.seen:
            if not ALLOWED_TOPIC.match(message.topic):
                found.append(f"topic outside the allow-list: {message.topic}")
                continue
            if len(message.payload) > MAX_PAYLOAD_BYTES:
                found.append(f"{len(message.payload)} bytes on {message.topic}")
            try:
                document = json.loads(message.payload)
            except (UnicodeDecodeError, json.JSONDecodeError):
                found.append(f"non-JSON payload on {message.topic}")
                continue
            if _numeric_runs(document) > MAX_NUMBERS_IN_AN_ARRAY:
                found.append(f"an array of numbers (raw samples?) on {message.topic}")
        # And everything as the shipped AsyncAPI document says (issue 14, item 2).
        return found + Contract().violations(self.seen)

    def on(self, suffix: str) -> list[InboundMessage]:
        return [m for m in self.seen if m.topic.endswith(suffix)]


@contextlib.asynccontextmanager
async def watching_everything(port: int) -> AsyncIterator[EgressWatcher]:
    watcher = EgressWatcher(port)
    settings = LinkSettings(
        "127.0.0.1", port, "egress-watcher", subscriptions=("#",), reconnect_min_s=0.05,
        reconnect_max_s=0.3, clean_start=True,
    )  # fmt: skip

    async def collect(link: MqttLink) -> None:
        while True:
            message = await link.receive()
            watcher.seen.append(message)
            link.acknowledge(message)

    async with MqttLink(settings) as link:
        async with asyncio.timeout(10):
            await link.wait_connected()
        task = asyncio.create_task(collect(link), name="egress-watcher")
        try:
            yield watcher
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class TicketProducer:
    """Opens tickets on a real state.db, one transaction each (the transactional outbox)."""

    def __init__(self, state: StateDatabase) -> None:
        self.state = state
        self.committed: dict[str, str] = {}  # event id -> ticket id
        self._ids = itertools.count(1)
        self._encode = make_ticket_encoder(
            TOPICS, source_urn(SITE, GATEWAY), state.outbox.next_sequence
        )

    async def open_one(self) -> str:
        number = next(self._ids)
        # One dedup key per ticket: state.db allows one open ticket per key.
        ticket = make_ticket(f"T-{number:05d}", key=f"{SITE}/pump-{number}/threshold.high/t")
        message = self._encode(ticket, make_event("opened", ticket.id))
        await self.state.tickets.commit_ticket_change(
            ticket, [make_event("opened", ticket.id)], [message]
        )
        self.committed[message.event_id] = ticket.id
        return message.event_id

    async def run_opening(self, every_s: float, until: asyncio.Event) -> None:
        while not until.is_set():
            await self.open_one()
            await asyncio.sleep(every_s)


def make_uplink(state: StateDatabase, port: int, **changes: Any) -> Uplink:
    settings = uplink_settings(port, **{"resend_interval_s": 0.5, **changes})
    clock = SystemClock()
    return Uplink(settings, state.outbox, StandInHandler(state.outbox, clock), clock)


def central_system(port: int, gateway: str = GATEWAY) -> CentralSystem:
    return CentralSystem("127.0.0.1", port, "factory", SITE, gateway, output=io.StringIO())


@contextlib.asynccontextmanager
async def running_central(port: int, gateway: str = GATEWAY) -> AsyncIterator[CentralSystem]:
    central = central_system(port, gateway)
    task = asyncio.create_task(central.run_central(), name="central")
    try:
        async with asyncio.timeout(10):
            await central.wait_connected()
        yield central
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def open_state(directory: Path) -> StateDatabase:
    return await StateDatabase.open(directory / "state.db")


def delivered_ids(central: CentralSystem) -> list[str]:
    return [event.event_id for event in central.received]
