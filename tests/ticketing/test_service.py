"""The ticket service against the real StateDatabase on a temporary state.db."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from gateway.core.clock import ManualClock
from gateway.core.errors import StoreError
from gateway.core.interfaces import NewMessage, TicketEvent
from gateway.core.records import (
    ConditionState,
    FaultCode,
    Finding,
    OutboxKind,
    Priority,
    Ticket,
    TicketState,
)
from gateway.store import StateDatabase
from gateway.ticketing import ConditionPolicy, TicketService
from tests.ticketing.policies import default_policy

T0 = 1_714_521_600.0  # 2024-05-01T00:00:00Z
SITE, GATEWAY = "plant1", "edge1"
KEY = "plant1/pump-1/threshold.high/threshold:hot"


class Encoder:
    """A simple encoder: JSON of what changed, sequential event ids."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.fixed_id: str | None = None

    def __call__(self, ticket: Ticket, event: TicketEvent) -> NewMessage:
        payload = {"ticket": ticket.id, "kind": event.kind, "revision": event.revision}
        return NewMessage(
            event_id=self.fixed_id or f"ev-{next(self._ids)}",
            topic=f"f/{SITE}/{GATEWAY}/tickets/{event.kind}",
            payload=json.dumps(payload).encode(),
            kind=OutboxKind.TICKET,
            ticket_id=ticket.id,
        )


def finding(ts, active=True, value=85.0, severity=Priority.P2, asset="pump-1", **kw) -> Finding:
    return Finding(
        asset=asset,
        fault_code=kw.pop("fault", FaultCode.THRESHOLD_HIGH),
        severity=severity,
        score=1.0,
        detector=kw.pop("detector", "threshold:hot"),
        message=f"pump-1.bearing_temp is {value} °C.",
        ts=ts,
        active=active,
        value=value,
        signal="pump-1.bearing_temp",
        features={"value": value},
        **kw,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def encoder() -> Encoder:
    return Encoder()


@pytest.fixture
async def store(tmp_path, clock):
    s = await StateDatabase.open(tmp_path / "state.db", clock=clock)
    yield s
    await s.close()


@pytest.fixture
async def service(store, encoder, clock) -> TicketService:
    svc = TicketService(SITE, GATEWAY, store, encoder, clock, policy=default_policy())
    await svc.start()
    return svc


async def kinds(store: StateDatabase, ticket_id: str) -> list[tuple[int, str]]:
    return [(e.revision, e.kind) for e in await store.tickets.ticket_events(ticket_id)]


async def outbox_kinds(store: StateDatabase) -> list[str]:
    return [json.loads(i.payload)["kind"] for i in await store.outbox.unsettled(100)]


async def test_first_active_finding_opens_a_ticket(service, store):
    await service.on_finding(finding(T0 + 1))
    (ticket,) = await store.tickets.list_tickets()
    assert ticket.id == "T-plant1-edge1-20240501-0001" and ticket.key == KEY
    assert (ticket.state, ticket.revision, ticket.occurrences) == (TicketState.OPENED, 1, 1)
    assert (ticket.priority, ticket.peak_value, ticket.first_seen) == (Priority.P2, 85.0, T0 + 1)
    assert ticket.opened_at == T0 and ticket.message == "pump-1.bearing_temp is 85.0 °C."
    assert ticket.evidence["features"] == {"value": 85.0}
    assert await kinds(store, ticket.id) == [(1, "opened")]
    (item,) = await store.outbox.unsettled(10)
    assert (item.ticket_id, item.topic) == (ticket.id, "f/plant1/edge1/tickets/opened")
    assert service.ticket_for(KEY) == ticket
    assert service.condition(KEY).state is ConditionState.ACTIVE


async def test_enriches_open_ticket_instead_of_opening_a_second(service, store):
    await service.on_finding(finding(T0 + 1, value=85.0))
    await service.on_finding(finding(T0 + 20, active=False, value=70.0))
    await service.on_finding(finding(T0 + 60, value=91.0))
    (ticket,) = await store.tickets.list_tickets()
    assert (ticket.occurrences, ticket.revision, ticket.condition_active) == (2, 3, True)
    assert (ticket.first_seen, ticket.last_seen, ticket.peak_value) == (T0 + 1, T0 + 60, 91.0)
    assert ticket.evidence["value"] == 91.0
    assert await kinds(store, ticket.id) == [
        (1, "opened"), (2, "condition_cleared"), (3, "updated"),
    ]
    assert await outbox_kinds(store) == ["opened", "condition_cleared", "updated"]
    stats = service.statistics()
    assert (stats.opened, stats.enriched, stats.conditions_cleared, stats.open_tickets) == (
        1, 1, 1, 1,
    )


async def test_condition_cleared_is_reported_and_the_ticket_stays_open(service, store):
    await service.on_finding(finding(T0 + 1))
    await service.on_finding(finding(T0 + 30, active=False, value=72.0))
    (ticket,) = await store.tickets.load_open_tickets()
    assert ticket.state is TicketState.OPENED and not ticket.condition_active
    (_, cleared) = await store.tickets.ticket_events(ticket.id)
    assert cleared.kind == "condition_cleared" and cleared.ts == T0 + 30
    assert cleared.detail["value"] == 72.0 and cleared.detail["peak_value"] == 85.0
    assert service.condition(KEY).state is ConditionState.NORMAL
    # A second clear (no new episode) reports nothing more.
    await service.on_finding(finding(T0 + 31, active=False, value=71.0))
    assert len(await store.tickets.ticket_events(ticket.id)) == 2


async def test_escalates_priority_within_an_episode_and_keeps_the_most_urgent(service, store):
    await service.on_finding(finding(T0 + 1, value=85.0, severity=Priority.P2))
    await service.on_finding(finding(T0 + 2, value=95.0, severity=Priority.P1))
    (ticket,) = await store.tickets.list_tickets()
    assert (ticket.priority, ticket.occurrences, ticket.revision) == (Priority.P1, 1, 2)
    (_, escalated) = await store.tickets.ticket_events(ticket.id)
    assert escalated.detail["reason"] == "escalated"
    assert escalated.detail["previous_priority"] == "P2"
    # A later, milder episode does not lower the priority.
    await service.on_finding(finding(T0 + 10, active=False, value=70.0))
    await service.on_finding(finding(T0 + 20, value=82.0, severity=Priority.P3))
    (ticket,) = await store.tickets.list_tickets()
    assert (ticket.priority, ticket.occurrences, ticket.peak_value) == (Priority.P1, 2, 95.0)
    assert service.statistics().escalated == 1


async def test_a_quiet_repeat_travels_with_the_next_reported_change(service, store):
    await service.on_finding(finding(T0 + 1, value=85.0))
    await service.on_finding(finding(T0 + 5, value=88.0))  # same episode, same priority
    assert [k for _, k in await kinds(store, service.ticket_for(KEY).id)] == ["opened"]
    assert service.ticket_for(KEY).peak_value == 88.0
    await service.on_finding(finding(T0 + 9, active=False, value=70.0))
    (ticket,) = await store.tickets.list_tickets()
    assert (ticket.peak_value, ticket.last_seen, ticket.revision) == (88.0, T0 + 5, 2)


async def test_one_open_ticket_per_key_across_a_restart(tmp_path, store, encoder, clock):
    first = TicketService(SITE, GATEWAY, store, encoder, clock, policy=default_policy())
    await first.start()
    await first.on_finding(finding(T0 + 1))
    await first.on_finding(finding(T0 + 2, active=False))  # this episode ends before the stop
    await store.close()

    clock.advance(600)
    reopened = await StateDatabase.open(tmp_path / "state.db", clock=clock)
    try:
        second = TicketService(SITE, GATEWAY, reopened, encoder, clock, policy=default_policy())
        await second.start()
        assert second.statistics().open_tickets == 1
        await second.on_finding(finding(T0 + 601, value=87.0))  # a new episode: enriches
        (ticket,) = await reopened.tickets.list_tickets()
        assert (ticket.occurrences, ticket.revision, ticket.peak_value) == (2, 3, 87.0)
        assert await kinds(reopened, ticket.id) == [
            (1, "opened"), (2, "condition_cleared"), (3, "updated")
        ]  # fmt: skip
        # A different key opens its own ticket, and the id counter does not reuse -0001.
        await second.on_finding(finding(T0 + 602, asset="pump-2"))
        ids = [t.id for t in await reopened.tickets.list_tickets()]
        assert ids == ["T-plant1-edge1-20240501-0001", "T-plant1-edge1-20240501-0002"]
    finally:
        await reopened.close()


async def test_ids_stay_unique_when_the_clock_steps_back_a_day_inside_a_burst(
    service, store, clock
):
    # The wall clock stepped back across midnight (an NTP correction) while a burst's writes
    # were still queued: the day's counter starts again at 0001, which state.db does not hold
    # yet but the burst has already given away.
    commit = store.tickets.commit_ticket_change
    steps = iter([86_400.0, -86_400.0, 0.0])

    def commit_later(*args, **kwargs):
        clock.advance(next(steps))  # the next opening happens on the next (or previous) day

        async def write():
            await asyncio.sleep(0.05)  # still queued while the burst opens the next tickets
            await commit(*args, **kwargs)

        return write()

    store.tickets.commit_ticket_change = commit_later
    # Findings a minute apart: three of one signature within a second would be a storm.
    await service.on_findings([finding(T0 + 60 * n, asset=f"pump-{n}") for n in (1, 2, 3)])
    ids = sorted(t.id for t in await store.tickets.list_tickets())
    assert ids == [
        "T-plant1-edge1-20240501-0001",
        "T-plant1-edge1-20240501-0002",
        "T-plant1-edge1-20240502-0001",
    ]


async def test_keys_differ_by_asset_fault_and_detector(service, store, clock):
    await service.on_finding(finding(T0 + 1))
    await service.on_finding(finding(T0 + 1, asset="pump-2"))
    await service.on_finding(finding(T0 + 1, fault=FaultCode.THRESHOLD_LOW, value=2.0))
    await service.on_finding(finding(T0 + 1, detector="threshold:other"))
    # Issue 13: three of one signature (site, fault code, asset class) in a second are a burst,
    # held for group_wait before their tickets open.
    clock.advance(service.policy.group_wait_s + 1)  # the findings are 1 s ahead of the clock
    await service.advance_timers()
    assert len(await store.tickets.load_open_tickets()) == 4


async def test_acknowledge_moves_opened_to_acknowledged_once(service, store):
    await service.on_finding(finding(T0 + 1))
    ticket_id = service.ticket_for(KEY).id
    acked = await service.acknowledge(ticket_id, "WO-1234", T0 + 5)
    assert acked is not None and acked.state is TicketState.ACKNOWLEDGED
    assert (acked.central_id, acked.acknowledged_at, acked.revision) == ("WO-1234", T0 + 5, 2)
    assert await store.tickets.get_ticket(ticket_id) == acked
    again = await service.acknowledge(ticket_id, "WO-1234", T0 + 6)
    assert again == acked
    assert await kinds(store, ticket_id) == [(1, "opened"), (2, "acknowledged")]
    assert await service.acknowledge("T-unknown", None, T0 + 7) is None
    # Enrichment keeps the acknowledged state.
    await service.on_finding(finding(T0 + 8, active=False))
    await service.on_finding(finding(T0 + 9))
    assert (await store.tickets.get_ticket(ticket_id)).state is TicketState.ACKNOWLEDGED
    assert service.statistics().acknowledged == 1


async def test_a_refused_commit_changes_nothing_and_can_be_retried(service, store, encoder):
    await service.on_finding(finding(T0 + 1))
    before = service.ticket_for(KEY)
    encoder.fixed_id = "ev-1"  # collides with the `opened` message: state.db refuses
    with pytest.raises(StoreError):
        await service.on_finding(finding(T0 + 2, active=False, value=70.0))
    assert service.ticket_for(KEY) == before
    assert service.condition(KEY).state is ConditionState.ACTIVE
    assert await store.tickets.get_ticket(before.id) == before
    assert service.statistics().commit_failures == 1
    encoder.fixed_id = None
    await service.on_finding(finding(T0 + 3, active=False, value=70.0))
    assert await kinds(store, before.id) == [(1, "opened"), (2, "condition_cleared")]


async def test_condition_delays_of_the_service_with_timers(store, encoder, clock):
    policy = ConditionPolicy(on_delay_s=10.0, off_delay_s=5.0)
    svc = TicketService(
        SITE, GATEWAY, store, encoder, clock, policy=default_policy(), condition_policy=policy
    )
    await svc.start()
    await svc.on_finding(finding(T0))
    assert svc.condition(KEY).state is ConditionState.PENDING
    clock.advance(9)
    await svc.advance_timers()
    assert await store.tickets.list_tickets() == []
    clock.advance(1)
    await svc.advance_timers()
    (ticket,) = await store.tickets.list_tickets()
    assert ticket.first_seen == T0 and ticket.opened_at == T0 + 10
    await svc.on_finding(finding(T0 + 11, active=False, value=70.0))
    assert svc.condition(KEY).state is ConditionState.CLEARING
    clock.advance(5)  # T0 + 15: clearing for 4 s of its 5
    await svc.advance_timers()
    assert svc.condition(KEY).state is ConditionState.CLEARING
    clock.advance(1)
    await svc.advance_timers()
    assert svc.condition(KEY).state is ConditionState.NORMAL
    assert await kinds(store, ticket.id) == [(1, "opened"), (2, "condition_cleared")]


async def test_findings_before_start_are_a_programming_error(store, encoder, clock):
    svc = TicketService(SITE, GATEWAY, store, encoder, clock, policy=default_policy())
    with pytest.raises(RuntimeError, match="start"):
        await svc.on_finding(finding(T0))
