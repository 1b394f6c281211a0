"""The uplink end to end against a real mosquitto, with the in-memory outbox and a manual clock.

The clock decides when a ticket message is due for resending; the loop's own timers (polling,
reconnect backoff) run in real time but are short.
"""

import asyncio
import dataclasses
import io
import itertools
import json
import logging
import threading

import pytest

from gateway.core.clock import ManualClock
from gateway.core.interfaces import NewMessage
from gateway.core.records import OutboxKind
from simulator.central import CentralSystem
from tests.support.broker import MosquittoBroker
from tests.support.memory_outbox import MemoryOutbox
from tests.uplink.helpers import (
    GATEWAY,
    SITE,
    TOPICS,
    StandInHandler,
    TcpProxy,
    eventually,
    make_event,
    make_ticket,
    running,
    uplink_settings,
)
from uplink.commands import decode_reply
from uplink.events import make_ticket_encoder, source_urn
from uplink.mqtt import LinkSettings, MessageProperties, MqttLink, OutgoingMessage
from uplink.service import Uplink

pytestmark = pytest.mark.broker

_sequence = itertools.count(1)
ENCODE = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), lambda: next(_sequence))


def observer(port: int, *topics: str) -> MqttLink:
    return MqttLink(LinkSettings("127.0.0.1", port, "observer", subscriptions=topics))


async def receive(link: MqttLink):
    async with asyncio.timeout(10):
        return await link.receive()


async def connected(link):
    async with asyncio.timeout(10):
        await link.wait_connected()


def central(port: int, *, ack: bool = True, output=None) -> CentralSystem:
    return CentralSystem("127.0.0.1", port, "factory", SITE, GATEWAY, ack=ack, output=output)


async def test_ticket_is_published_as_cloudevent_and_only_marked_sent_on_puback(mosquitto):
    outbox, clock = MemoryOutbox(), ManualClock()
    message = ENCODE(make_ticket(), make_event("opened"))
    seq = await outbox.enqueue(message)
    uplink = Uplink(uplink_settings(mosquitto.port), outbox, StandInHandler(outbox, clock), clock)

    async with observer(mosquitto.port, TOPICS.tickets_filter) as watcher:
        await connected(watcher)
        async with running(uplink.run_uplink(), "uplink"):
            got = await receive(watcher)
            await eventually(lambda: outbox.get(seq).attempts == 1)

    assert got.topic == "factory/plant-a/gw-1/tickets/opened"
    assert not got.retain  # tickets are never retained
    assert got.payload == message.payload
    assert json.loads(got.payload)["id"] == message.event_id
    assert got.properties.content_type == "application/cloudevents+json"
    document = json.loads(got.payload)
    assert dict(got.properties.user_properties) == {
        name: document[name]
        for name in ("specversion", "id", "source", "type", "time", "subject", "sequence")
    } | {"revision": "1"}
    assert document["type"] == "com.edge-gateway.ticket.opened"
    assert got.properties.utf8_payload  # Payload Format Indicator 1
    assert got.properties.message_expiry_s is None  # a ticket message never expires
    item = outbox.get(seq)
    assert item.settled_at is None and item.last_sent_at == clock.now()  # PUBACK is not enough
    assert uplink.statistics().published == 1


async def test_non_ticket_messages_are_settled_by_puback(mosquitto):
    clock = ManualClock()
    outbox = MemoryOutbox(clock)
    health = b'{"site":"plant-a","gateway":"gw-1","time":"2023-11-14T22:13:20.000Z"}'
    seq = await outbox.enqueue(NewMessage("h1", TOPICS.health, health, OutboxKind.HEALTH))
    uplink = Uplink(uplink_settings(mosquitto.port), outbox, StandInHandler(outbox, clock), clock)
    async with running(uplink.run_uplink(), "uplink"):
        await eventually(lambda: outbox.get(seq).settled_at is not None)
    assert await outbox.depth() == 0


async def test_best_effort_messages_expire_and_one_out_of_date_is_not_sent(mosquitto):
    """Issue 14: health and summaries carry a Message Expiry Interval, counted from their
    commit (uplink/messages.py: health 600 s); one older than that is dropped unsent."""
    clock = ManualClock()
    outbox = MemoryOutbox(clock)
    health = b'{"site":"plant-a","gateway":"gw-1","time":"2023-11-14T22:13:20.000Z"}'
    stale = await outbox.enqueue(NewMessage("h-old", TOPICS.health, health, OutboxKind.HEALTH))
    clock.advance(601)
    fresh = await outbox.enqueue(NewMessage("h-new", TOPICS.health, health, OutboxKind.HEALTH))
    clock.advance(100)
    uplink = Uplink(uplink_settings(mosquitto.port), outbox, StandInHandler(outbox, clock), clock)
    async with observer(mosquitto.port, TOPICS.health) as watcher:
        await connected(watcher)
        async with running(uplink.run_uplink(), "uplink"):
            got = await receive(watcher)
            await eventually(lambda: outbox.get(stale).settled_at is not None)
    assert outbox.get(fresh).settled_at is not None
    assert got.properties.message_expiry_s == 500  # 600 s less the 100 s it waited
    assert got.properties.utf8_payload and got.properties.content_type == "application/json"
    assert uplink.statistics().drops == {"expired:health": 1}
    assert uplink.statistics().messages_sent.get("health") == 1


async def test_a_message_stored_with_the_old_property_names_leaves_with_the_binding_names(
    mosquitto,
):
    clock = ManualClock()
    outbox = MemoryOutbox(clock)
    built = ENCODE(make_ticket(), make_event("opened"))
    legacy = (("ce_id", built.event_id), ("ce_type", "x"), ("ticket", "T-1"))
    await outbox.enqueue(dataclasses.replace(built, user_properties=legacy))
    uplink = Uplink(uplink_settings(mosquitto.port), outbox, StandInHandler(outbox, clock), clock)
    async with observer(mosquitto.port, TOPICS.tickets_filter) as watcher:
        await connected(watcher)
        async with running(uplink.run_uplink(), "uplink"):
            got = await receive(watcher)
    properties = dict(got.properties.user_properties)
    assert properties["id"] == built.event_id and "ce_id" not in properties


async def test_status_is_retained_online_and_the_will_says_offline_on_a_crash(mosquitto):
    outbox, clock = MemoryOutbox(), ManualClock()
    async with TcpProxy(mosquitto.port) as proxy:
        uplink = Uplink(uplink_settings(proxy.port), outbox, StandInHandler(outbox, clock), clock)
        async with running(uplink.run_uplink(), "uplink"):
            await eventually(lambda: uplink.statistics().connected)
            # A late subscriber gets the retained status.
            async with observer(mosquitto.port, TOPICS.status) as watcher:
                online = await receive(watcher)
                proxy.sever()  # the gateway vanishes without DISCONNECT
                will = await receive(watcher)
                again = await receive(watcher)  # it reconnects by itself

    assert online.retain and json.loads(online.payload) == {
        "state": "online", "site": SITE, "gateway": GATEWAY,
        "client_id": "edge-plant-a-gw-1", "since": "2023-11-14T22:13:20.000Z",
    }  # fmt: skip
    assert json.loads(will.payload)["state"] == "offline"
    assert json.loads(will.payload)["reason"] == "connection lost"
    assert json.loads(again.payload)["state"] == "online"


async def test_clean_stop_publishes_offline_and_leaves_nothing_running(mosquitto):
    outbox, clock = MemoryOutbox(), ManualClock()
    uplink = Uplink(uplink_settings(mosquitto.port), outbox, StandInHandler(outbox, clock), clock)
    async with running(uplink.run_uplink(), "uplink") as task:
        await eventually(lambda: uplink.statistics().connected)
    assert task.cancelled()
    async with observer(mosquitto.port, TOPICS.status) as watcher:
        status = json.loads((await receive(watcher)).payload)
    assert status["state"] == "offline" and status["reason"] == "stopped"
    assert not uplink.statistics().connected
    await eventually(
        lambda: not any(t.name.startswith("paho-mqtt-client-edge") for t in threading.enumerate())
    )


async def test_central_ack_settles_the_ticket_message(mosquitto):
    outbox, clock = MemoryOutbox(), ManualClock()
    seq = await outbox.enqueue(ENCODE(make_ticket(), make_event("opened")))
    handler = StandInHandler(outbox, clock)
    uplink = Uplink(uplink_settings(mosquitto.port), outbox, handler, clock)
    printed = io.StringIO()
    cmms = central(mosquitto.port, output=printed)

    async with running(cmms.run_central(), "central"):
        await cmms.wait_connected()
        async with running(uplink.run_uplink(), "uplink"):
            await eventually(lambda: outbox.get(seq).settled_at is not None)
            await eventually(lambda: cmms.statistics().replies_received == 1)

    stats = uplink.statistics()
    assert (stats.acks, stats.rejected_commands, stats.replies) == (1, 0, 1)
    assert cmms.statistics().tickets_seen == 1 and cmms.statistics().acks_sent == 1
    reply = next(iter(cmms.replies.values()))
    assert reply.accepted and reply.detail["settled"] == [outbox.get(seq).event_id]
    (ack,) = handler.seen
    assert ack.body["central_id"] == "WO-1001" and ack.response_topic == cmms.reply_topic
    assert "WO-1001" in printed.getvalue() and "pump-1" in printed.getvalue()


async def test_ticket_is_resent_with_the_same_id_until_acked_then_never_again(mosquitto):
    outbox, clock = MemoryOutbox(), ManualClock()
    message = ENCODE(make_ticket(), make_event("opened"))
    seq = await outbox.enqueue(message)
    settings = uplink_settings(mosquitto.port, resend_interval_s=0.2)
    uplink = Uplink(settings, outbox, StandInHandler(outbox, clock), clock)
    cmms = central(mosquitto.port, ack=False)

    def stats():
        return cmms.statistics()

    async with running(cmms.run_central(), "central"):
        await cmms.wait_connected()
        async with running(uplink.run_uplink(), "uplink"):
            await cmms.wait_until(lambda c: len(c.received) == 1)
            await eventually(lambda: outbox.get(seq).attempts == 1)

            # Nothing is resent before the interval ...
            await asyncio.sleep(0.1)
            assert uplink.statistics().resent == 0
            # ... but a broker restart makes the uplink send it again at once. The broker kept
            # nothing and the central system may not be back yet: the PUBACK of that copy may
            # come from a broker with nobody to deliver to. Only the central ack settles.
            mosquitto.restart()
            await eventually(lambda: uplink.statistics().resent == 1)
            await eventually(lambda: stats().connects == 2)
            assert uplink.statistics().connects == 2
            seen_after_restart = stats().duplicates_dropped  # 0 or 1, depending on who won

            # The resend interval passes (on the injected clock): sent again, same id.
            clock.advance(0.2)
            await eventually(lambda: stats().duplicates_dropped == seen_after_restart + 1)

            # Now the central system acknowledges the next copy it sees.
            cmms.ack = True
            clock.advance(0.2)
            await eventually(lambda: outbox.get(seq).settled_at is not None)
            resent = uplink.statistics().resent

            # Settled: never again, whatever the clock says.
            clock.advance(10)
            await asyncio.sleep(0.1)

    assert uplink.statistics().resent == resent == 3
    assert stats().duplicates_dropped == seen_after_restart + 2
    assert [e.event_id for e in cmms.received] == [message.event_id]
    assert outbox.get(seq).attempts == 4


async def test_a_bad_envelope_is_answered_and_never_reaches_the_handler(mosquitto, caplog):
    caplog.set_level(logging.WARNING, logger="uplink.service")
    outbox, clock = MemoryOutbox(), ManualClock()
    await outbox.enqueue(ENCODE(make_ticket(), make_event("opened")))
    handler = StandInHandler(outbox, clock)
    uplink = Uplink(uplink_settings(mosquitto.port), outbox, handler, clock)

    async with (
        running(uplink.run_uplink(), "uplink"),
        observer(mosquitto.port, "central/replies") as central_link,
    ):
        await connected(central_link)
        await eventually(lambda: outbox.get(1).attempts == 1)
        before = outbox.snapshot()
        with_reply = MessageProperties(response_topic="central/replies", correlation_data=b"k1")
        await central_link.publish(
            OutgoingMessage(TOPICS.cmd("ack"), b"{broken", properties=with_reply)
        )
        await central_link.publish(OutgoingMessage(TOPICS.cmd("ack"), b'{"event_id":"x"}'))
        nested = b'{"command_id":"c7","event_id":' + b"[" * 5000 + b"]" * 5000 + b"}"
        await central_link.publish(
            OutgoingMessage(TOPICS.cmd("ack"), nested, properties=with_reply)
        )
        first, second = await receive(central_link), await receive(central_link)
        await eventually(lambda: uplink.statistics().rejected_commands == 3)

    assert outbox.snapshot() == before
    assert handler.seen == []
    assert first.properties.correlation_data == b"k1"
    first_reply, second_reply = decode_reply(first.payload), decode_reply(second.payload)
    assert first_reply is not None and not first_reply.accepted
    assert "payload is not JSON" in first_reply.reason
    assert second_reply is not None and not second_reply.accepted
    assert "nests deeper than 8 levels" in second_reply.reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("Rejected command on `factory/plant-a/gw-1/cmd/ack`" in w for w in warnings) == 3
    assert uplink.statistics().acks == 0


async def test_unacknowledged_puback_means_half_open_link_reconnect_and_resend(mosquitto):
    outbox, clock = MemoryOutbox(), ManualClock()
    settings = uplink_settings(mosquitto.port, ack_timeout_s=0.3)
    uplink = Uplink(settings, outbox, StandInHandler(outbox, clock), clock)
    cmms = central(mosquitto.port)

    async with running(cmms.run_central(), "central"):
        await cmms.wait_connected()
        async with running(uplink.run_uplink(), "uplink"):
            await eventually(lambda: uplink.statistics().connected)
            mosquitto.pause()  # TCP stays up, nothing is answered
            seq = await outbox.enqueue(ENCODE(make_ticket(), make_event("opened")))
            await eventually(lambda: uplink.statistics().half_open_aborts == 1)
            mosquitto.resume()
            await eventually(lambda: outbox.get(seq).settled_at is not None)

    assert cmms.statistics().tickets_seen == 1


async def test_link_that_never_confirms_a_publish_is_aborted_at_the_status_publish(mosquitto):
    # The first QoS 1 publish on every connection is the retained `online` status. A link
    # that dies between the session coming up and that PUBACK must be judged half-open there
    # too, or the publisher waits on it and no ticket leaves until keepalive notices, if ever.
    outbox, clock = MemoryOutbox(), ManualClock()
    seq = await outbox.enqueue(ENCODE(make_ticket(), make_event("opened")))
    cmms = central(mosquitto.port)
    async with running(cmms.run_central(), "central"), TcpProxy(mosquitto.port) as proxy:
        await cmms.wait_connected()
        proxy.drop_pubacks = True
        settings = uplink_settings(proxy.port, ack_timeout_s=0.3)
        uplink = Uplink(settings, outbox, StandInHandler(outbox, clock), clock)
        async with running(uplink.run_uplink(), "uplink"):
            await eventually(lambda: uplink.statistics().half_open_aborts >= 1)
            assert outbox.get(seq).settled_at is None
            proxy.drop_pubacks = False
            await eventually(lambda: outbox.get(seq).settled_at is not None)
            status_sent = uplink.statistics().messages_sent.get("status", 0)

    assert cmms.statistics().tickets_seen == 1
    assert status_sent >= 1


async def test_items_leave_in_outbox_order(mosquitto):
    outbox, clock = MemoryOutbox(), ManualClock()
    tickets = [dataclasses.replace(make_ticket(f"T-{n}")) for n in range(30)]
    for ticket in tickets:
        await outbox.enqueue(ENCODE(ticket, make_event("opened", ticket.id)))
    uplink = Uplink(
        uplink_settings(mosquitto.port, batch_size=7),
        outbox,
        StandInHandler(outbox, clock),
        clock,
    )
    cmms = central(mosquitto.port)
    async with running(cmms.run_central(), "central"):
        await cmms.wait_connected()
        async with running(uplink.run_uplink(), "uplink"):
            await eventually(lambda: all(i.settled_at for i in outbox.snapshot()))
    assert [e.ticket_id for e in cmms.received] == [t.id for t in tickets]


async def test_acl_denial_is_a_failure_and_the_ticket_stays_in_the_outbox(caplog):
    caplog.set_level(logging.ERROR, logger="uplink.service")
    # Everything but the ticket topics: MQTT 5 makes the denial visible as PUBACK 0x87.
    acl = f"topic readwrite {TOPICS.status}\ntopic readwrite {TOPICS.base}/cmd/#\n"
    outbox, clock = MemoryOutbox(), ManualClock()
    seq = await outbox.enqueue(ENCODE(make_ticket(), make_event("opened")))
    with MosquittoBroker(acl=acl) as broker:
        handler = StandInHandler(outbox, clock)
        uplink = Uplink(uplink_settings(broker.port), outbox, handler, clock)
        async with running(uplink.run_uplink(), "uplink"):
            await eventually(lambda: uplink.statistics().publish_failures == 1)
            clock.advance(0.1)  # less than the resend interval: no hot retry loop
            await asyncio.sleep(0.1)

    item = outbox.get(seq)
    assert item.settled_at is None and item.attempts == 1
    stats = uplink.statistics()
    assert (stats.published, stats.publish_failures) == (0, 1)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("Not authorized (0x87)" in e and item.event_id in e for e in errors), errors


# --- issue 6: outbox size policy, residency counters --------------------------------------


def health_document(n: int) -> dict:
    return {"site": SITE, "gateway": GATEWAY, "time": f"2026-01-01T00:00:{n % 60:02d}.000Z"}


async def test_over_size_sheds_oldest_summaries_and_health_never_tickets(tmp_path):
    from gateway.store import StateDatabase

    state = await StateDatabase.open(tmp_path / "state.db")
    try:
        encode = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), state.outbox.next_sequence)
        uplink = Uplink(uplink_settings(1, outbox_max_messages=10), state.outbox,
                        StandInHandler(state.outbox, ManualClock()), ManualClock())  # fmt: skip
        for n in range(6):
            assert await uplink.enqueue_droppable(OutboxKind.HEALTH, TOPICS.health,
                                                  health_document(n))  # fmt: skip
        for n in range(12):
            ticket = make_ticket(f"T-{n}", key=f"k-{n}")
            await state.tickets.commit_ticket_change(
                ticket, [make_event("opened", ticket.id)],
                [encode(ticket, make_event("opened", ticket.id))],
            )  # fmt: skip
        assert await state.outbox.depth() == 18  # tickets alone never trigger shedding
        assert await uplink.enqueue_droppable(OutboxKind.HEALTH, TOPICS.health,
                                              health_document(7))  # fmt: skip
        by_kind, _ = await state.outbox.backlog()
        # 19 unsettled, 10 allowed: all 7 health messages go (oldest first), tickets stay.
        assert by_kind == {"ticket": 12}
        assert uplink.statistics().drops == {"outbox_full:health": 7}
        refused = await uplink.enqueue_droppable(OutboxKind.HEALTH, TOPICS.health, {"raw": [1]})
        assert not refused and uplink.statistics().drops["egress_refused:health"] == 1
        with pytest.raises(ValueError, match="not droppable"):
            await uplink.enqueue_droppable(OutboxKind.TICKET, TOPICS.tickets_opened, {})
    finally:
        await state.close()


async def test_shedding_keeps_the_newest_when_only_some_must_go(tmp_path):
    from gateway.store import StateDatabase

    state = await StateDatabase.open(tmp_path / "state.db")
    try:
        uplink = Uplink(uplink_settings(1, outbox_max_messages=10), state.outbox,
                        StandInHandler(state.outbox, ManualClock()), ManualClock())  # fmt: skip
        for n in range(15):
            await uplink.enqueue_droppable(OutboxKind.SUMMARY, TOPICS.summary("pump-1"), {
                "site": SITE, "gateway": GATEWAY, "asset": "pump-1", "time": str(n),
                "period_s": 60, "tags": {},
            })  # fmt: skip
        kept = [json.loads(item.payload)["time"] for item in await state.outbox.unsettled(100)]
        assert kept == [str(n) for n in range(5, 15)]
        assert uplink.statistics().drops == {"outbox_full:summary": 5}
    finally:
        await state.close()


async def test_bytes_sent_off_site_are_counted_per_message_type(mosquitto):
    outbox, clock = MemoryOutbox(), ManualClock()
    message = ENCODE(make_ticket(), make_event("opened"))
    await outbox.enqueue(message)
    uplink = Uplink(uplink_settings(mosquitto.port), outbox, StandInHandler(outbox, clock), clock)
    async with running(uplink.run_uplink(), "uplink"):
        await eventually(lambda: uplink.statistics().published == 1)
    stats = uplink.statistics()
    assert stats.bytes_sent["ticket"] == len(message.payload)
    assert stats.messages_sent["ticket"] == 1, stats
    assert stats.messages_sent["status"] == stats.connects, stats  # `online` on each connect
    assert stats.bytes_sent["status"] > 0
    assert uplink.guard.statistics().allowed["ticket"] == 1
