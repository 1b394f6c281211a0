"""The uplink over the real SQLite outbox (state.db), a real mosquitto and a broker restart:
a ticket message is resent with the same id until the central ack, then never again."""

from __future__ import annotations

import asyncio
import io
import itertools
from pathlib import Path

import pytest

from gateway.core.clock import ManualClock
from gateway.core.records import dedup_key
from gateway.store import StateDatabase
from simulator.central import CentralSystem
from tests.support.broker import MosquittoBroker
from tests.uplink.helpers import (
    GATEWAY,
    SITE,
    TOPICS,
    StandInHandler,
    eventually,
    make_event,
    make_ticket,
    running,
    uplink_settings,
)
from uplink.events import make_ticket_encoder, source_urn
from uplink.service import Uplink

pytestmark = pytest.mark.broker


async def test_resent_with_the_same_id_after_broker_restart_until_acked_then_never_again(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    sequence = itertools.count(1)
    encode = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), lambda: next(sequence))
    clock = ManualClock()
    store = await StateDatabase.open(tmp_path / "state.db", clock=clock)
    ticket = make_ticket()
    message = encode(ticket, make_event("opened"))
    await store.tickets.commit_ticket_change(ticket, [make_event("opened")], [message])
    uplink = Uplink(
        uplink_settings(mosquitto.port, resend_interval_s=0.2),
        store.outbox,
        StandInHandler(store.outbox, clock),
        clock,
    )
    cmms = CentralSystem(
        "127.0.0.1", mosquitto.port, "factory", SITE, GATEWAY, ack=False, output=io.StringIO()
    )

    async def attempts() -> int:
        item = await store.outbox.get_message(message.event_id)
        assert item is not None
        return item.attempts

    try:
        async with running(cmms.run_central(), "central"), running(uplink.run_uplink(), "uplink"):
            await asyncio.wait_for(cmms.wait_until(lambda c: len(c.received) == 1), 10)
            mosquitto.restart()
            await eventually(lambda: uplink.statistics().resent >= 1)
            assert await attempts() >= 2
            await eventually(lambda: cmms.statistics().connects == 2)
            cmms.ack = True
            for _ in range(100):
                clock.advance(0.2)  # the resend interval passes: sent again, same id
                item = await store.outbox.get_message(message.event_id)
                assert item is not None
                if item.settled_at is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(
                    f"the central ack never settled the durable outbox item: "
                    f"{uplink.statistics()} {cmms.statistics()} {cmms.replies}"
                )
            sent = await attempts()
            clock.advance(30)
            await asyncio.sleep(0.2)
            assert await attempts() == sent, "a settled message must never be sent again"
    finally:
        await store.close()
    assert {r.event_id for r in cmms.received} == {message.event_id}


async def test_a_backlog_drains_with_the_next_page_published_while_the_last_is_recorded(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """After a connect the backlog goes out page by page. Recording a page's sends in state.db
    must not hold up the next page: here the first page's record is held until the central
    system has seen a message of the second page, which only an overlapping publisher reaches.
    Every message still arrives once, in outbox order, and is recorded as sent once."""
    sequence = itertools.count(1)
    encode = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), lambda: next(sequence))
    clock = ManualClock()
    store = await StateDatabase.open(tmp_path / "state.db", clock=clock)
    page = 4
    committed = []
    for number in range(3 * page):
        ticket = make_ticket(
            f"T-{number:03d}", key=dedup_key(SITE, f"pump-{number}", "threshold.high", "t")
        )
        event = make_event("opened", ticket.id)
        message = encode(ticket, event)
        await store.tickets.commit_ticket_change(ticket, [event], [message])
        committed.append(message.event_id)
    cmms = CentralSystem(
        "127.0.0.1", mosquitto.port, "factory", SITE, GATEWAY, ack=False, output=io.StringIO()
    )
    second_page_seen = asyncio.Event()
    mark_sent_many = store.outbox.mark_sent_many
    held: list[int] = []

    async def record_after_the_second_page(seqs, now):  # type: ignore[no-untyped-def]
        if not held:
            held.extend(seqs)
            await asyncio.wait_for(second_page_seen.wait(), 10)
        await mark_sent_many(seqs, now)

    store.outbox.mark_sent_many = record_after_the_second_page  # type: ignore[method-assign]
    uplink = Uplink(
        uplink_settings(mosquitto.port, batch_size=page, resend_interval_s=30.0),
        store.outbox, StandInHandler(store.outbox, clock), clock,
    )  # fmt: skip

    def seen_the_second_page(central: CentralSystem) -> bool:
        if len(central.received) > page:
            second_page_seen.set()
        return len(central.received) >= 3 * page

    try:
        async with running(cmms.run_central(), "central"), running(uplink.run_uplink(), "uplink"):
            await asyncio.wait_for(cmms.wait_until(seen_the_second_page), 15)
            await eventually(lambda: uplink.statistics().published == 3 * page)
        assert len(held) == page
        assert [event.event_id for event in cmms.received] == committed
        for event_id in committed:
            item = await store.outbox.get_message(event_id)
            assert item is not None and item.attempts == 1, item
    finally:
        await store.close()


async def test_messages_committed_while_connected_go_out_in_overlapping_pages_once_each(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """The same for what is committed while the link is up (the due pages): page 1's record is
    held until page 2 is seen, and the read of what is due leaves page 1 out meanwhile, so no
    message goes out twice."""
    sequence = itertools.count(1)
    encode = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), lambda: next(sequence))
    clock = ManualClock()
    store = await StateDatabase.open(tmp_path / "state.db", clock=clock)
    page = 4
    cmms = CentralSystem(
        "127.0.0.1", mosquitto.port, "factory", SITE, GATEWAY, ack=False, output=io.StringIO()
    )
    second_page_seen = asyncio.Event()
    mark_sent_many = store.outbox.mark_sent_many
    held: list[int] = []

    async def record_after_the_second_page(seqs, now):  # type: ignore[no-untyped-def]
        if not held:
            held.extend(seqs)
            await asyncio.wait_for(second_page_seen.wait(), 10)
        await mark_sent_many(seqs, now)

    store.outbox.mark_sent_many = record_after_the_second_page  # type: ignore[method-assign]
    uplink = Uplink(
        uplink_settings(mosquitto.port, batch_size=page, resend_interval_s=30.0),
        store.outbox, StandInHandler(store.outbox, clock), clock,
    )  # fmt: skip

    def seen_the_second_page(central: CentralSystem) -> bool:
        if len(central.received) > page:
            second_page_seen.set()
        return len(central.received) >= 3 * page

    try:
        async with running(cmms.run_central(), "central"), running(uplink.run_uplink(), "uplink"):
            await eventually(lambda: uplink.statistics().connected)
            changes = []
            for number in range(3 * page):
                ticket = make_ticket(
                    f"T-{number:03d}", key=dedup_key(SITE, f"pump-{number}", "threshold.high", "t")
                )
                event = make_event("opened", ticket.id)
                message = encode(ticket, event)
                changes.append((ticket, event, message))
            await asyncio.gather(
                *(store.tickets.commit_ticket_change(t, [e], [m]) for t, e, m in changes)
            )
            await asyncio.wait_for(cmms.wait_until(seen_the_second_page), 15)
            await eventually(lambda: uplink.statistics().published == 3 * page)
        assert held, "the first page's record was never held"
        assert sorted(event.event_id for event in cmms.received) == sorted(
            m.event_id for _, _, m in changes
        )
        for _, _, message in changes:
            item = await store.outbox.get_message(message.event_id)
            assert item is not None and item.attempts == 1, item
    finally:
        await store.close()
