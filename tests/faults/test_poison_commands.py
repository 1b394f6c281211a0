"""Issue 11, "Proof" of item 1: the commands that kept the gateway down, against the daemon as
systemd runs it (`python -m gateway run`, a subprocess) with a real mosquitto and the persistent
session the gateway uses.

A 10 KB nested JSON array used to raise `RecursionError` and end the process; the broker
redelivered it from the session at every start, so the gateway died again 32-52 ms after each
restart. `maintenance` with `until: Infinity` (or 1e309) was answered `accepted: false` yet put
the asset into maintenance for ever. Here both are queued in the session while the gateway is
down (the crash-loop case) and sent again while it runs: the daemon keeps running, answers each
exactly once, changes nothing, and a restart does not get them again.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.faults.test_gateway_faults import start_gateway
from tests.support.broker import MosquittoBroker, free_loopback_port
from tests.support.site import make_site
from tests.uplink.helpers import eventually
from uplink.commands import decode_reply
from uplink.mqtt import InboundMessage, LinkSettings, MessageProperties, MqttLink, OutgoingMessage
from uplink.topics import Topics

pytestmark = [pytest.mark.broker, pytest.mark.slow]

TOPICS = Topics("factory", "plant-a", "edge-01")
REPLIES = "central/replies"
NESTED = b"[" * 5000 + b"]" * 5000  # 10 KB
POISON = {
    "nested-ack": ("ack", NESTED),
    "nested-maintenance": ("maintenance", b'{"command_id":"n2","until":' + NESTED + b"}"),
    "infinity": (
        "maintenance",
        b'{"command_id":"inf","actor":"cmms","asset":"pump-1","until":Infinity}',
    ),
    "overflow": ("maintenance", b'{"command_id":"big","asset":"pump-1","until":1e309}'),
}


class Observer:
    """The central system's side: publishes commands, collects replies and the status."""

    def __init__(self, link: MqttLink) -> None:
        self.link = link
        self.replies: list[InboundMessage] = []
        self.status: str | None = None

    async def run(self) -> None:
        while True:
            message = await self.link.receive()
            if message.topic == TOPICS.status:
                self.status = json.loads(message.payload)["state"]
            else:
                self.replies.append(message)
            self.link.acknowledge(message)

    def replies_to(self, name: str) -> int:
        return sum(1 for m in self.replies if m.properties.correlation_data == name.encode())

    async def publish_poison(self, suffix: str = "") -> None:
        for name, (verb, payload) in POISON.items():
            props = MessageProperties(
                response_topic=REPLIES, correlation_data=(name + suffix).encode()
            )
            await self.link.publish(OutgoingMessage(TOPICS.cmd(verb), payload, properties=props))


def maintenance_rows(state_db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(state_db, timeout=5) as conn:
        return conn.execute("SELECT * FROM asset_maintenance").fetchall()


async def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(process.wait, 20)


async def test_poison_commands_neither_stop_the_daemon_nor_change_it_nor_come_back(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "gateway.log"
    state_db = tmp_path / "var" / "state.db"
    with MosquittoBroker() as broker:
        # No device server: the pump is unreachable, which opens no ticket a command could hit.
        gateway_yaml = make_site(
            tmp_path, broker_port=broker.port, modbus_port=free_loopback_port()
        )
        settings = LinkSettings(
            "127.0.0.1", broker.port, "central", subscriptions=(REPLIES, TOPICS.status),
            clean_start=True,
        )  # fmt: skip
        async with MqttLink(settings) as link:
            async with asyncio.timeout(10):
                await link.wait_connected()
            observer = Observer(link)
            task = asyncio.create_task(observer.run(), name="observer")
            try:
                # A first run creates the gateway's persistent session (its `cmd/+` subscription).
                process = start_gateway(gateway_yaml, log_file)
                await eventually(lambda: observer.status == "online", 30)
                assert await stop(process) == 0
                await eventually(lambda: observer.status == "offline", 10)

                # Queued in the session while the gateway is down: delivered at its next start.
                await observer.publish_poison()
                process = start_gateway(gateway_yaml, log_file)
                await eventually(lambda: observer.status == "online", 30)
                await eventually(lambda: all(observer.replies_to(n) for n in POISON), 20)
                await observer.publish_poison("-live")  # and once more while it runs
                await eventually(lambda: all(observer.replies_to(n + "-live") for n in POISON), 20)
                await asyncio.sleep(1.0)
                assert process.poll() is None, "the daemon stopped"
                assert await stop(process) == 0

                # The next start does not get them again: each was acknowledged (PUBACK).
                replies_before = len(observer.replies)
                process = start_gateway(gateway_yaml, log_file)
                await eventually(lambda: observer.status == "online", 30)
                await asyncio.sleep(2.0)
                assert process.poll() is None
                assert await stop(process) == 0
                assert len(observer.replies) == replies_before, "a poison command came back"
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    for name in POISON:
        assert observer.replies_to(name) == 1 and observer.replies_to(name + "-live") == 1
    for message in observer.replies:
        reply = decode_reply(message.payload)
        assert reply is not None and not reply.accepted
    reasons = {
        m.properties.correlation_data: decode_reply(m.payload).reason  # type: ignore[union-attr]
        for m in observer.replies
    }
    assert "nests deeper than 8 levels" in reasons[b"nested-ack"]
    assert "Infinity is not a JSON number" in reasons[b"infinity"]
    assert "1e309 is out of range" in reasons[b"overflow"]
    assert maintenance_rows(state_db) == [], "a rejected command put the asset in maintenance"
    text = log_file.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert text.count("Gateway stopped cleanly.") == 3
