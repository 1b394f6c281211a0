"""Helpers for the uplink tests: ticket records, settings, running tasks, a TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from gateway.core.clock import Clock
from gateway.core.interfaces import Command, CommandReply, Outbox, TicketEvent
from gateway.core.records import Priority, Ticket, TicketState, dedup_key
from uplink.service import UplinkSettings
from uplink.topics import Topics

SITE = "plant-a"
GATEWAY = "gw-1"
TOPICS = Topics("factory", SITE, GATEWAY)
T0 = 1_700_000_000.0


def make_ticket(ticket_id: str = "T-1", **changes: Any) -> Ticket:
    fields: dict[str, Any] = {
        "id": ticket_id,
        "key": dedup_key(SITE, "pump-1", "threshold.high", "bearing_temp_hi"),
        "site": SITE,
        "asset": "pump-1",
        "fault_code": "threshold.high",
        "detector": "bearing_temp_hi",
        "priority": Priority.P2,
        "state": TicketState.OPENED,
        "revision": 1,
        "opened_at": T0,
        "first_seen": T0 - 5,
        "last_seen": T0,
        "occurrences": 1,
        "peak_value": 92.5,
        "message": "Bearing temperature 92.5 °C is above the hi limit of 85 °C.",
        "evidence": {"limit": 85.0, "value": 92.5, "unit": "°C"},
    }
    fields.update(changes)
    return Ticket(**fields)


def make_event(kind: str = "opened", ticket_id: str = "T-1", revision: int = 1) -> TicketEvent:
    return TicketEvent(ticket_id=ticket_id, revision=revision, kind=kind, ts=T0)


def uplink_settings(port: int, **changes: Any) -> UplinkSettings:
    fields: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "topics": TOPICS,
        "client_id": f"edge-{SITE}-{GATEWAY}",
        "keepalive_s": 10,
        "resend_interval_s": 0.2,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "poll_interval_s": 0.02,
        "ack_timeout_s": 5.0,
    }
    fields.update(changes)
    return UplinkSettings(**fields)


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, None], name: str) -> AsyncIterator[asyncio.Task[None]]:
    """Run `coro` as a named task for the block; cancel it and wait for it at the end."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Poll until `condition()` holds; fail after `timeout` seconds (generous: 2 shared cores)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (a plain predicate over several objects)
            await asyncio.sleep(0.01)


class TcpProxy:
    """A loopback TCP proxy to put between a client and the broker.

    `sever()` aborts every connection at once, as a crashed process or a pulled cable would
    look to both ends: no MQTT DISCONNECT, so the broker publishes the client's Will.

    While `drop_pubacks` is set, each new connection carries everything from the broker except
    its PUBACKs, for as long as that connection lasts: the session comes up (CONNACK, SUBACK)
    and then no publish is ever confirmed, as on a link that died right after connecting.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.drop_pubacks = False
        self._server: asyncio.Server | None = None
        self._transports: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.sever()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._transports += [writer, up_writer]
        downstream = (
            self._pump_without_pubacks(up_reader, writer)
            if self.drop_pubacks
            else self._pump(up_reader, writer)
        )
        for pump in (self._pump(reader, up_writer), downstream):
            task = asyncio.create_task(pump, name="test.proxy.pump")
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    @staticmethod
    async def _pump_without_pubacks(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        """Forward the broker's MQTT packets whole (fixed header, variable-length remaining
        length, body), leaving out every PUBACK (packet type 4)."""
        try:
            while True:
                header = await source.readexactly(1)
                length, shift = 0, 0
                while True:
                    byte = await source.readexactly(1)
                    header += byte
                    length |= (byte[0] & 0x7F) << shift
                    shift += 7
                    if not byte[0] & 0x80:
                        break
                packet = header + await source.readexactly(length)
                if packet[0] >> 4 != 4:
                    sink.write(packet)
                    await sink.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the other side went away: the pump ends
        finally:
            sink.transport.abort()

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass  # the other side went away: the pump ends, which is the point
        finally:
            sink.transport.abort()

    def sever(self) -> None:
        for writer in self._transports:
            writer.transport.abort()
        self._transports.clear()


class StandInHandler:
    """Stands in for the ticketing command table in uplink tests: the uplink only carries
    commands, so its tests need a handler that records what arrived and settles what an `ack`
    names by `event_id` (the part of an ack the delivery tests observe). What an ack means for
    a ticket is tested against the real `TicketCommands`."""

    def __init__(self, outbox: Outbox, clock: Clock) -> None:
        self.outbox = outbox
        self.clock = clock
        self.seen: list[Command] = []

    async def __call__(self, command: Command) -> CommandReply:
        self.seen.append(command)
        if command.verb != "ack":
            return CommandReply(command.command_id, True, "stand-in", {"verb": command.verb})
        event_id = command.body.get("event_id")
        settled = (
            await self.outbox.settle_event(event_id, self.clock.now())
            if isinstance(event_id, str)
            else None
        )
        detail = {"settled": [settled.event_id] if settled else []}
        return CommandReply(command.command_id, True, "", detail)
