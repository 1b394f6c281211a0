"""OPC UA test helpers: the simulator's asyncua server running in its own thread and event loop
(like a real server in another process, so one server can serve a whole test module while each
test keeps its own loop and its leftover-task check), certificates, and drivers pointed at it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.core.clock import Clock, SystemClock
from gateway.core.records import Tag, TagKind
from protocols.opcua.config import OpcUaConnection, OpcUaNode
from protocols.opcua.driver import OpcUaDriver
from simulator.opcua_server import (
    CertificatePair,
    OpcUaMachineServer,
    ServerSecurity,
    make_certificate,
)

T = TypeVar("T")

__all__ = [
    "Pki",
    "ThreadedServer",
    "connection",
    "make_driver",
    "make_pki",
    "next_matching",
    "node",
    "tags_for",
]


class ThreadedServer:
    """An `OpcUaMachineServer` served from a background thread with its own event loop."""

    def __init__(self, **server_options: Any) -> None:
        self._options = server_options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="opcua-simulator", daemon=True
        )
        self.server: OpcUaMachineServer | None = None

    def start(self) -> ThreadedServer:
        self._thread.start()
        self.server = self.run(self._start())
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.run(self.server.stop())
        self.run(self._cancel_leftovers())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def run(self, coro: Awaitable[T], timeout: float = 15.0) -> T:
        """Run a coroutine in the server's loop and wait for it (from sync code)."""
        return self._submit(coro).result(timeout)

    async def call(self, coro: Awaitable[T], within_s: float = 15.0) -> T:
        """Run a coroutine in the server's loop and await it (from a test's loop)."""
        async with asyncio.timeout(within_s):
            return await asyncio.wrap_future(self._submit(coro))

    @property
    def sim(self) -> OpcUaMachineServer:
        assert self.server is not None, "server not started"
        return self.server

    async def _start(self) -> OpcUaMachineServer:
        server = OpcUaMachineServer(**self._options)
        await server.start()
        await server.refresh_waveform()
        return server

    @staticmethod
    async def _cancel_leftovers() -> None:
        """Cancel what asyncua's server may leave in its loop, so the loop closes cleanly."""
        current = asyncio.current_task()
        leftovers = [t for t in asyncio.all_tasks() if t is not current]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    def _submit(self, coro: Awaitable[T]) -> Future[T]:
        async def wrapper() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop)


@dataclass(frozen=True)
class Pki:
    """Certificates for a secured test: the server's, the gateway's, and trust lists."""

    server: CertificatePair
    client: CertificatePair
    trusting: Path  # a trust list holding the server certificate
    empty_trust: Path  # a trust list that trusts nothing (but holds an unrelated certificate)

    def server_security(self) -> ServerSecurity:
        return ServerSecurity(self.server.certificate, self.server.private_key)


def make_pki(directory: Path, machine: str = "Pump") -> Pki:
    server = make_certificate(
        directory / "server",
        f"{machine.lower()}-server",
        f"urn:edge-gateway:simulator:{machine.lower()}",
        server=True,
    )
    client = make_certificate(
        directory / "client", "gateway", "urn:edge-gateway:test-gateway", server=False
    )
    trusting = directory / "trusted"
    trusting.mkdir()
    (trusting / "server.der").write_bytes(server.certificate.read_bytes())
    empty = directory / "untrusted"
    empty.mkdir()
    # An unrelated certificate, so that the list is not merely empty.
    other = make_certificate(directory / "other", "other", "urn:other", server=True)
    (empty / "other.der").write_bytes(other.certificate.read_bytes())
    return Pki(server=server, client=client, trusting=trusting, empty_trust=empty)


def node(**fields: object) -> OpcUaNode:
    """A validated node, written like its YAML: node(name="t", node_id="ns=2;s=Pump.T")."""
    return OpcUaNode.model_validate(fields)


def connection(endpoint: str, **overrides: object) -> OpcUaConnection:
    fields: dict[str, object] = {
        "protocol": "opcua",
        "endpoint": endpoint,
        "timeout_s": 2.0,
        "publishing_interval_ms": 50.0,
        "watchdog_interval_s": 0.2,
    }
    fields.update(overrides)
    return OpcUaConnection.model_validate(fields)


def tags_for(device_id: str, nodes: Sequence[OpcUaNode]) -> list[Tag]:
    return [
        Tag(
            id=f"{device_id}.{n.name}",
            asset=device_id,
            unit=n.unit,
            kind=TagKind(n.kind.value),
        )
        for n in nodes
    ]


def make_driver(
    endpoint: str,
    nodes: Sequence[OpcUaNode],
    *,
    device_id: str = "pump",
    clock: Clock | None = None,
    poll_period_s: float = 0.05,
    **connection_overrides: object,
) -> OpcUaDriver:
    return OpcUaDriver(
        device_id,
        connection(endpoint, **connection_overrides),
        nodes,
        tags_for(device_id, nodes),
        clock or SystemClock(),
        poll_period_s=poll_period_s,
    )


async def next_matching(
    stream: Any, predicate: Callable[[Any], bool], *, within_s: float = 5.0
) -> Any:
    """The next record of an async iterator that satisfies `predicate`."""
    async with asyncio.timeout(within_s):
        async for record in stream:
            if predicate(record):
                return record
    raise AssertionError("stream ended before a matching record arrived")
