"""The reply pacer: command replies go to the MQTT client a few at a time, so a ticket message
published during a command burst has at most that many replies ahead of it (the burst through a
real broker is `tests/test_command_burst.py`)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.errors import UplinkError
from uplink.mqtt import OutgoingMessage
from uplink.replies import PacedReply, ReplyPacer


class Client:
    """What the pacer sees of a link: `send` returns a future completed by the PUBACK."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, asyncio.Future[int]]] = []
        self.connected = True

    def send(self, message: OutgoingMessage) -> asyncio.Future[int]:
        if not self.connected:
            raise UplinkError("not connected")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.sent.append((message.topic, future))
        return future

    def puback_all(self) -> None:
        for _, future in self.sent:
            if not future.done():
                future.set_result(0)


def reply(n: int, outcome: list[str]) -> PacedReply:
    return PacedReply(
        OutgoingMessage(topic=f"r/{n}", payload=b"{}", qos=1),
        on_sent=lambda: outcome.append(f"sent {n}"),
        on_lost=lambda error: outcome.append(f"lost {n}"),
    )


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_at_most_in_flight_replies_are_with_the_client_and_the_rest_follow_in_order() -> None:
    client, outcome = Client(), list[str]()
    pacer = ReplyPacer(client.send, in_flight=3)
    for n in range(10):
        pacer.submit(reply(n, outcome))
    assert [topic for topic, _ in client.sent] == ["r/0", "r/1", "r/2"]
    assert (pacer.in_flight, pacer.waiting) == (3, 7)
    client.sent[0][1].set_result(0)
    await settle()
    assert [topic for topic, _ in client.sent] == ["r/0", "r/1", "r/2", "r/3"]
    while pacer.in_flight:
        client.puback_all()
        await settle()
    assert [topic for topic, _ in client.sent] == [f"r/{n}" for n in range(10)]
    assert outcome == [f"sent {n}" for n in range(10)]


async def test_when_the_queue_is_full_the_oldest_waiting_reply_is_dropped() -> None:
    client, outcome = Client(), list[str]()
    pacer = ReplyPacer(client.send, in_flight=1, waiting=2)
    for n in range(5):
        pacer.submit(reply(n, outcome))
    # r/0 is with the client; r/1 and r/2 were pushed out by r/3 and r/4.
    assert outcome == ["lost 1", "lost 2"]
    assert pacer.dropped == 2
    while pacer.in_flight:
        client.puback_all()
        await settle()
    assert [topic for topic, _ in client.sent] == ["r/0", "r/3", "r/4"]


async def test_a_lost_connection_loses_the_waiting_replies_and_the_pacer_goes_on() -> None:
    client, outcome = Client(), list[str]()
    pacer = ReplyPacer(client.send, in_flight=1)
    for n in range(4):
        pacer.submit(reply(n, outcome))
    client.connected = False
    client.sent[0][1].set_exception(UplinkError("connection lost"))
    await settle()
    assert outcome == ["lost 0", "lost 1", "lost 2", "lost 3"]
    assert (pacer.in_flight, pacer.waiting) == (0, 0)
    client.connected = True
    pacer.submit(reply(4, outcome))
    client.puback_all()
    await settle()
    assert outcome[-1] == "sent 4"


def test_a_pacer_needs_room_for_one_reply() -> None:
    with pytest.raises(ValueError):
        ReplyPacer(Client().send, in_flight=0)
