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


PAGE = 4


class FirstRecordHeld:
    """An uplink over a real state.db whose first page's record (`mark_sent_many`) is held
    until the central system has seen a message of the second page: only a publisher that
    overlaps pages gets there. Three pages of ticket messages, one ticket each."""

    def __init__(self, store: StateDatabase, clock: ManualClock, port: int) -> None:
        sequence = itertools.count(1)
        encode = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), lambda: next(sequence))
        self.store = store
        self.changes = []
        for number in range(3 * PAGE):
            ticket = make_ticket(
                f"T-{number:03d}", key=dedup_key(SITE, f"pump-{number}", "threshold.high", "t")
            )
            event = make_event("opened", ticket.id)
            self.changes.append((ticket, event, encode(ticket, event)))
        self.event_ids = [message.event_id for _, _, message in self.changes]
        self.central = CentralSystem(
            "127.0.0.1", port, "factory", SITE, GATEWAY, ack=False, output=io.StringIO()
        )
        self.held: list[int] = []
        self._second_page_seen = asyncio.Event()
        self._mark_sent_many = store.outbox.mark_sent_many
        store.outbox.mark_sent_many = self._record_after_the_second_page  # type: ignore[method-assign]
        self.uplink = Uplink(
            uplink_settings(port, batch_size=PAGE, resend_interval_s=30.0),
            store.outbox, StandInHandler(store.outbox, clock), clock,
        )  # fmt: skip

    async def commit(self) -> None:
        await asyncio.gather(
            *(self.store.tickets.commit_ticket_change(t, [e], [m]) for t, e, m in self.changes)
        )

    async def _record_after_the_second_page(self, seqs, now):  # type: ignore[no-untyped-def]
        if not self.held:
            self.held.extend(seqs)
            await asyncio.wait_for(self._second_page_seen.wait(), 10)
        await self._mark_sent_many(seqs, now)

    def _seen_all(self, central: CentralSystem) -> bool:
        if len(central.received) > PAGE:
            self._second_page_seen.set()
        return len(central.received) >= 3 * PAGE

    async def all_seen(self) -> None:
        await asyncio.wait_for(self.central.wait_until(self._seen_all), 15)
        await eventually(lambda: self.uplink.statistics().published == 3 * PAGE)

    async def assert_each_recorded_as_sent_once(self) -> None:
        assert len(self.held) == PAGE, "the first page's record was never held"
        for event_id in self.event_ids:
            item = await self.store.outbox.get_message(event_id)
            assert item is not None and item.attempts == 1, item


async def test_a_backlog_drains_with_the_next_page_published_while_the_last_is_recorded(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """After a connect the backlog goes out page by page. Recording a page's sends in state.db
    must not hold up the next page: here the first page's record is held until the central
    system has seen a message of the second page, which only an overlapping publisher reaches.
    Every message still arrives once, in outbox order, and is recorded as sent once."""
    store = await StateDatabase.open(tmp_path / "state.db", clock=(clock := ManualClock()))
    try:
        plant = FirstRecordHeld(store, clock, mosquitto.port)
        for ticket, event, message in plant.changes:  # one by one: outbox order is this order
            await store.tickets.commit_ticket_change(ticket, [event], [message])
        async with (
            running(plant.central.run_central(), "central"),
            running(plant.uplink.run_uplink(), "uplink"),
        ):
            await plant.all_seen()
        assert [event.event_id for event in plant.central.received] == plant.event_ids
        await plant.assert_each_recorded_as_sent_once()
    finally:
        await store.close()


async def test_messages_committed_while_connected_go_out_in_overlapping_pages_once_each(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """The same for what is committed while the link is up (the due pages): page 1's record is
    held until page 2 is seen, and the read of what is due leaves page 1 out meanwhile, so no
    message goes out twice."""
    store = await StateDatabase.open(tmp_path / "state.db", clock=(clock := ManualClock()))
    try:
        plant = FirstRecordHeld(store, clock, mosquitto.port)
        async with (
            running(plant.central.run_central(), "central"),
            running(plant.uplink.run_uplink(), "uplink"),
        ):
            await eventually(lambda: plant.uplink.statistics().connected)
            await plant.commit()
            await plant.all_seen()
        assert sorted(event.event_id for event in plant.central.received) == sorted(plant.event_ids)
        await plant.assert_each_recorded_as_sent_once()
    finally:
        await store.close()
