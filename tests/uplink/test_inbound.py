"""Inbound commands through a real mosquitto (issue 11): a failing handler cannot end the
uplink nor make the broker redeliver, acks have a lane of their own, senders are rate limited
per actor, a full lane answers `busy`, and PUBACKs leave in arrival order. The handler is a
stand-in: what commands mean is tested against the ticketing command table."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
from collections.abc import Awaitable, Callable

import pytest

from gateway.core.clock import ManualClock
from gateway.core.interfaces import Command, CommandReply
from tests.support.broker import MosquittoBroker, free_loopback_port
from tests.support.memory_outbox import MemoryOutbox
from tests.uplink.helpers import (
    GATEWAY,
    SITE,
    TOPICS,
    eventually,
    make_event,
    make_ticket,
    running,
    uplink_settings,
)
from uplink.admission import RateLimit
from uplink.commands import decode_reply
from uplink.events import make_ticket_encoder, source_urn
from uplink.mqtt import InboundMessage, LinkSettings, MessageProperties, MqttLink, OutgoingMessage
from uplink.service import Uplink

pytestmark = pytest.mark.broker

REPLIES = "central/replies"
Handler = Callable[[Command], Awaitable[CommandReply]]


class Central:
    """Publishes commands and collects the replies, as a central system would."""

    def __init__(self, link: MqttLink) -> None:
        self.link = link
        self.replies: dict[str, CommandReply] = {}
        self._numbers = itertools.count(1)

    async def run(self) -> None:
        while True:
            message = await self.link.receive()
            reply = decode_reply(message.payload)
            if reply is not None and message.properties.correlation_data is not None:
                self.replies[message.properties.correlation_data.decode()] = reply
            self.link.acknowledge(message)

    async def send(self, verb: str, **body: object) -> str:
        command_id = str(body.setdefault("command_id", f"c-{next(self._numbers)}"))
        properties = MessageProperties(
            response_topic=REPLIES, correlation_data=command_id.encode()
        )
        payload = json.dumps(body).encode()
        await self.link.publish(OutgoingMessage(TOPICS.cmd(verb), payload, properties=properties))
        return command_id


def central_link(port: int) -> MqttLink:
    return MqttLink(LinkSettings("127.0.0.1", port, "central", subscriptions=(REPLIES,)))


async def with_central(port: int, body: Callable[[Central], Awaitable[None]]) -> None:
    async with central_link(port) as link:
        async with asyncio.timeout(10):
            await link.wait_connected()
        central = Central(link)
        async with running(central.run(), "central"):
            await body(central)


def accept(seen: list[Command]) -> Handler:
    async def handle(command: Command) -> CommandReply:
        seen.append(command)
        return CommandReply(command.command_id, True, "", {"verb": command.verb})

    return handle


async def test_a_command_that_breaks_the_handler_is_refused_and_never_redelivered(
    mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.ERROR, logger="uplink.service")
    seen: list[Command] = []

    async def fragile(command: Command) -> CommandReply:
        seen.append(command)
        if command.verb == "boom":
            raise RecursionError("maximum recursion depth exceeded")  # a bug a command reaches
        return CommandReply(command.command_id, True)

    outbox, clock = MemoryOutbox(), ManualClock()
    settings = uplink_settings(mosquitto.port)  # persistent session: clean_start off

    async def scenario(central: Central) -> None:
        uplink = Uplink(settings, outbox, fragile, clock)
        async with running(uplink.run_uplink(), "uplink") as task:
            await eventually(lambda: uplink.statistics().connected)
            poison = await central.send("boom", command_id="p-1")
            await eventually(lambda: poison in central.replies)
            fine = await central.send("assign", command_id="ok-1")
            await eventually(lambda: fine in central.replies)
            assert not task.done(), "the uplink must keep running"
        assert not central.replies[poison].accepted
        assert central.replies[poison].reason == "failed: internal error"
        assert central.replies[fine].accepted
        # A new process on the same persistent session: nothing comes again.
        again = Uplink(settings, outbox, fragile, clock)
        async with running(again.run_uplink(), "uplink"):
            await eventually(lambda: again.statistics().connected)
            await asyncio.sleep(0.3)
        assert [c.command_id for c in seen] == ["p-1", "ok-1"]

    await with_central(mosquitto.port, scenario)
    failures = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None  # logged once, traceback kept


async def test_acks_are_handled_while_the_command_lane_is_stuck(mosquitto: MosquittoBroker):
    release = asyncio.Event()
    seen: list[Command] = []

    async def slow_commands(command: Command) -> CommandReply:
        seen.append(command)
        if command.verb != "ack":
            await release.wait()
        return CommandReply(command.command_id, True)

    outbox, clock = MemoryOutbox(), ManualClock()
    uplink = Uplink(uplink_settings(mosquitto.port, command_queue=2), outbox, slow_commands, clock)

    async def scenario(central: Central) -> None:
        async with running(uplink.run_uplink(), "uplink"):
            await eventually(lambda: uplink.statistics().connected)
            blocked = [await central.send("assign", command_id="a-0")]
            await eventually(lambda: len(seen) == 1)  # being handled (and stuck)
            blocked += [await central.send("assign", command_id=f"a-{n}") for n in range(1, 5)]
            acks = [await central.send("ack", command_id=f"k-{n}", event_id="e") for n in range(3)]
            await eventually(lambda: all(k in central.replies for k in acks))
            # One assign is being handled, two wait in the lane, two were refused as busy.
            await eventually(lambda: sum(c in central.replies for c in blocked) == 2)
            await asyncio.sleep(0.1)
            busy = [c for c in blocked if c in central.replies]
            assert len(busy) == 2
            assert all(central.replies[c].reason.startswith("busy:") for c in busy)
            assert all(central.replies[k].accepted for k in acks)
            release.set()
            await eventually(lambda: all(c in central.replies for c in blocked))
        assert uplink.statistics().busy == 2
        assert [c.command_id for c in seen if c.verb == "assign"] == ["a-0", "a-1", "a-2"]

    await with_central(mosquitto.port, scenario)


async def test_each_actor_is_rate_limited_with_a_clear_rejection(mosquitto: MosquittoBroker):
    seen: list[Command] = []
    outbox, clock = MemoryOutbox(), ManualClock()
    now = [0.0]
    settings = uplink_settings(
        mosquitto.port, command_rate=RateLimit(1.0, 3), ack_rate=RateLimit(1.0, 2)
    )
    uplink = Uplink(settings, outbox, accept(seen), clock, monotonic=lambda: now[0])

    async def scenario(central: Central) -> None:
        async with running(uplink.run_uplink(), "uplink"):
            await eventually(lambda: uplink.statistics().connected)
            flood = [await central.send("snapshot", actor="noisy") for _ in range(6)]
            calm = await central.send("snapshot", actor="calm")
            acks = [await central.send("ack", actor="noisy", event_id="e") for _ in range(3)]
            await eventually(lambda: all(c in central.replies for c in [*flood, calm, *acks]))
            replies = [central.replies[c] for c in flood]
            assert [r.accepted for r in replies] == [True] * 3 + [False] * 3
            assert replies[3].reason == (
                "rate limited: actor `noisy` exceeds 1 commands per second (burst 3);"
                " retry in 1.0 s"
            )
            assert central.replies[calm].accepted  # another actor has its own bucket
            # Acks have buckets of their own, untouched by the flood of other commands.
            assert [central.replies[k].accepted for k in acks] == [True, True, False]
            now[0] += 2.0  # two seconds later: two more tokens
            later = [await central.send("snapshot", actor="noisy") for _ in range(3)]
            await eventually(lambda: all(c in central.replies for c in later))
            assert [central.replies[c].accepted for c in later] == [True, True, False]
        assert uplink.statistics().rate_limited == 5

    await with_central(mosquitto.port, scenario)


async def test_pubacks_leave_in_arrival_order_whatever_order_they_are_handled(
    mosquitto: MosquittoBroker,
):
    """MQTT 5, 4.6.0-2: a receiver acknowledges QoS 1 messages in the order received."""
    settings = LinkSettings("127.0.0.1", mosquitto.port, "receiver", subscriptions=("t/#",))
    sent: list[int] = []
    async with MqttLink(settings) as receiver, MqttLink(
        LinkSettings("127.0.0.1", mosquitto.port, "sender")
    ) as sender:
        async with asyncio.timeout(10):
            await receiver.wait_connected()
            await sender.wait_connected()
        real_ack = receiver._client.ack

        def spy(mid: int, qos: int) -> None:
            sent.append(mid)
            real_ack(mid, qos)

        receiver._client.ack = spy  # type: ignore[method-assign]
        for n in range(3):
            await sender.publish(OutgoingMessage(f"t/{n}", b"{}"))
        got: list[InboundMessage] = []
        async with asyncio.timeout(10):
            while len(got) < 3:
                got.append(await receiver.receive())
        third, first, second = got[2], got[0], got[1]
        receiver.acknowledge(third)
        assert sent == []  # held: the first two are not handled yet
        receiver.acknowledge(first)
        assert sent == [first.message_id]
        receiver.acknowledge(second)
    assert sent == [first.message_id, second.message_id, third.message_id]


async def test_a_message_leaves_with_the_properties_stored_with_it(mosquitto: MosquittoBroker):
    outbox, clock = MemoryOutbox(), ManualClock()
    encode = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), lambda: 1)
    stored = (("decided", "when built"),)
    built = encode(make_ticket(), make_event("opened"))
    await outbox.enqueue(
        dataclasses.replace(built, content_type="application/x-test", user_properties=stored)
    )
    watcher = MqttLink(LinkSettings("127.0.0.1", mosquitto.port, "w", subscriptions=("#",)))
    uplink = Uplink(uplink_settings(mosquitto.port), outbox, accept([]), clock)
    async with watcher:
        async with asyncio.timeout(10):
            await watcher.wait_connected()
        async with running(uplink.run_uplink(), "uplink"):
            async with asyncio.timeout(10):
                while (got := await watcher.receive()).topic != TOPICS.tickets_opened:
                    pass
    # Not derived from the payload again (that would give the CloudEvents attributes).
    assert got.properties.content_type == "application/x-test"
    assert got.properties.user_properties == stored


async def test_acks_are_answered_on_the_main_session_when_the_ack_session_cannot_connect(
    mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
):
    """A broker that refuses the second client id must not cost the acks."""
    import uplink.service as service

    monkeypatch.setattr(service, "ACK_SESSION_GRACE_S", 0.3)
    dead_port = free_loopback_port()

    class NoAckSession(Uplink):
        def _ack_link_settings(self) -> LinkSettings:
            return dataclasses.replace(super()._ack_link_settings(), port=dead_port)

    seen: list[Command] = []
    uplink = NoAckSession(uplink_settings(mosquitto.port), MemoryOutbox(), accept(seen),
                          ManualClock())  # fmt: skip

    async def scenario(central: Central) -> None:
        async with running(uplink.run_uplink(), "uplink"):
            await eventually(lambda: uplink.statistics().connected)
            acks = [await central.send("ack", event_id="e") for _ in range(3)]
            await eventually(lambda: all(k in central.replies for k in acks))
            assert all(central.replies[k].accepted for k in acks)
        assert not uplink.statistics().ack_session_connected
        assert [c.verb for c in seen] == ["ack"] * 3

    await with_central(mosquitto.port, scenario)
