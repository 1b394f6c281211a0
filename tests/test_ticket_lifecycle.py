"""The ticket lifecycle of issue 5 through a real mosquitto with the simulated central system.

The gateway side is the real thing minus the protocol drivers: state.db (`StateDatabase`), the
CloudEvents encoder, the ticket service and its command handler, and the `Uplink` on MQTT 5.
Findings and samples are injected as the detector runner would deliver them, and time is a
`ManualClock`, so SLA, verification, flood and recurrence windows of hours and days run in
seconds. The central system (`simulator.central`) acknowledges every ticket message unless told
not to and sends commands with a response topic and correlation data.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.core.clock import ManualClock
from gateway.core.interfaces import CommandReply
from gateway.core.records import FaultCode, Finding, Priority, Sample, TicketState
from gateway.store import StateDatabase
from gateway.ticketing.commands import TicketCommands
from gateway.ticketing.knowledge import KnowledgeBase
from gateway.ticketing.policy import AssetProfile
from gateway.ticketing.service import TicketService
from gateway.ticketing.topology import Link
from simulator.central import CentralSystem, ReceivedTicketEvent
from tests.support.broker import MosquittoBroker
from tests.support.contract import watching_the_wire
from tests.support.site import REPO
from tests.ticketing.policies import default_policy
from tests.uplink.helpers import uplink_settings
from uplink.events import make_ticket_encoder, source_urn
from uplink.mqtt import LinkSettings, MessageProperties, MqttLink, OutgoingMessage
from uplink.service import Uplink
from uplink.topics import Topics

pytestmark = pytest.mark.broker

SITE, GATEWAY = "plant-a", "gw-1"
TOPICS = Topics("factory", SITE, GATEWAY)
T0 = 1_714_521_600.0  # 2024-05-01T00:00:00Z
ACTOR = "cmms-central"
HOT = "pump-1.bearing_temp"
SPEED = "pump-1.motor_speed"
PRESSES = [f"press-{n}" for n in range(1, 31)]
COMPRESSOR = tuple(f"compressor-1.r{n}" for n in range(30))

ASSETS = {
    "pump-1": AssetProfile(
        "pump-1",
        "pump",
        area="utilities",
        line="cooling-loop",
        business_line="stamping",
        region="emea",
        skill="mechanical",
        run_tag=SPEED,
        run_above=100.0,
        tags=(HOT, SPEED),
    ),
    "conveyor-1": AssetProfile(
        "conveyor-1", "conveyor", area="assembly", tags=("conveyor-1.speed",)
    ),
    "conveyor-2": AssetProfile(
        "conveyor-2", "conveyor", area="assembly", tags=("conveyor-2.speed",)
    ),
    "hydraulic-unit-1": AssetProfile("hydraulic-unit-1", "hydraulic_unit", area="press-hall"),
    # More related tags than a ticket shows (`MAX_TAGS_IN_SNAPSHOT`), the one that trips last.
    "compressor-1": AssetProfile("compressor-1", "compressor", area="utilities", tags=COMPRESSOR),
    # The presses are driven by the hall's hydraulic unit (`depends_on` in their device YAML).
    **{
        p: AssetProfile(
            p,
            "press",
            area="press-hall",
            tags=(f"{p}.oil_temp",),
            depends_on=("hydraulic-unit-1",),
        )
        for p in PRESSES
    },
}
CAN_BUS = Link(
    "can-can0",
    "can",
    frozenset({"conveyor-1", "conveyor-2"}),
    frozenset({"conveyor-1.speed", "conveyor-2.speed"}),
)
POLICY = default_policy(
    verification_window_s=600.0,
    safety_detectors=frozenset({"threshold:oil_fire_risk"}),
    cmms_codes={"threshold.high": {"damage": "OVHT", "cause": "LUB"}},
)


def finding(
    ts: float,
    *,
    active: bool = True,
    asset: str = "pump-1",
    fault: str = FaultCode.THRESHOLD_HIGH,
    detector: str = "threshold:bearing_overtemp",
    severity: Priority = Priority.P2,
    value: float = 85.0,
) -> Finding:
    return Finding(
        asset=asset,
        fault_code=fault,
        severity=severity,
        score=1.0,
        detector=detector,
        message=f"{asset}: {fault} at {value}.",
        ts=ts,
        active=active,
        value=value,
        signal=HOT if asset == "pump-1" else None,
    )


@dataclass
class Plant:
    clock: ManualClock
    store: StateDatabase
    service: TicketService
    commands: TicketCommands
    uplink: Uplink
    central: CentralSystem
    broker_port: int

    @property
    def now(self) -> float:
        return self.clock.now()

    async def feed(self, *findings: Finding) -> None:
        for f in findings:
            await self.service.on_finding(f)

    async def samples(self, tag: str, values: list[float], *, step: float = 10.0) -> None:
        """Samples of one tag, `step` seconds apart, ending now."""
        start = self.now - step * (len(values) - 1)
        batch = [Sample(tag, start + i * step, v) for i, v in enumerate(values)]
        await self.service.observe_samples(batch)

    async def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.service.advance_timers()

    async def command(self, verb: str, **body: Any) -> CommandReply:
        return await self.central.send_command(verb, body)

    async def until(self, predicate: Callable[[CentralSystem], bool]) -> None:
        async with asyncio.timeout(15):
            await self.central.wait_until(predicate)

    def kinds(self, ticket_id: str) -> list[str]:
        return [r.kind for r in self.central.events_of(ticket_id)]

    def opened(self) -> list[ReceivedTicketEvent]:
        return [r for r in self.central.received if r.kind == "opened"]

    async def revisions(self, ticket_id: str) -> list[tuple[int, str]]:
        return [(e.revision, e.kind) for e in await self.store.tickets.ticket_events(ticket_id)]


@pytest.fixture
async def plant(tmp_path: Path, mosquitto: MosquittoBroker) -> AsyncIterator[Plant]:
    clock = ManualClock(T0)
    store = await StateDatabase.open(tmp_path / "state.db", clock=clock)
    encoder = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), store.outbox.next_sequence)
    service = TicketService(
        SITE,
        GATEWAY,
        store,
        encoder,
        clock,
        policy=POLICY,
        assets=ASSETS,
        links=[CAN_BUS],
        knowledge=KnowledgeBase.load(REPO / "configs" / "knowledge.yaml"),
    )
    await service.start()
    commands = TicketCommands(
        service, store.outbox, store.commands, clock, actors=frozenset({ACTOR})
    )
    uplink = Uplink(uplink_settings(mosquitto.port), store.outbox, commands.handle, clock)
    central = CentralSystem(
        "127.0.0.1", mosquitto.port, "factory", SITE, GATEWAY, output=io.StringIO(), actor=ACTOR
    )
    async with watching_the_wire(mosquitto.port) as wire:
        tasks = [
            asyncio.create_task(uplink.run_uplink(), name="uplink"),
            asyncio.create_task(central.run_central(), name="central"),
        ]
        try:
            async with asyncio.timeout(10):
                await central.wait_connected()
                await asyncio.sleep(0.05)  # the subscriptions are sent right after CONNACK
            yield Plant(clock, store, service, commands, uplink, central, mosquitto.port)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await store.close()
    # Every message of every scenario, on the wire, as the shipped contract says (issue 14).
    assert wire.violations() == []


# --- tickets: dedup, enrichment, evidence, knowledge -------------------------------------------


async def test_one_ticket_per_key_enriched_with_evidence_knowledge_sla_and_routing(plant: Plant):
    await plant.samples(SPEED, [1480.0] * 10)
    await plant.samples(HOT, [60.0, 60.5, 61.0, 62.0, 64.0, 67.0, 71.0, 76.0, 81.0, 86.0])
    await plant.feed(finding(plant.now))
    await plant.until(lambda c: len(c.work_orders) == 1)
    await plant.feed(finding(plant.now + 5, active=False, value=70.0))
    await plant.feed(finding(plant.now + 20, value=91.0, severity=Priority.P1))
    await plant.until(lambda c: c.statistics().updates >= 3)

    opened = plant.opened()
    assert len(opened) == 1, "a re-trigger enriches, it never opens a second ticket"
    ticket_id = opened[0].ticket_id
    data = opened[0].data
    assert data["respond_by"] == "2024-05-01T01:00:00.000Z"  # P2: respond within 60 min
    assert data["resolve_by"] == "2024-05-01T08:00:00.000Z"
    assert data["routing"] == {
        "site": SITE,
        "area": "utilities",
        "line": "cooling-loop",
        "business_line": "stamping",
        "region": "emea",
        "skill": "mechanical",
        "asset_class": "pump",
    }
    assert data["failure_coding"] == {
        "iso14224_failure_mode": "HIO",
        "cmms": {"damage": "OVHT", "cause": "LUB"},
    }
    assert data["knowledge"][0]["actions"][0].startswith("Check bearing lubrication")
    summary = data["evidence"]["telemetry"][HOT]
    assert (summary["min"], summary["max"], summary["last"], summary["count"]) == (
        60.0,
        86.0,
        86.0,
        10,
    )
    assert summary["trend"] == "rising"
    assert data["evidence"]["telemetry"][SPEED]["trend"] == "steady"
    assert "telemetry_related_tags" not in data["evidence"]  # both of its 2 tags are shown
    assert not any(isinstance(v, list) and len(v) > 20 for v in _walk(data)), "no raw arrays"

    latest = plant.central.latest(ticket_id)
    assert latest is not None
    assert (latest["occurrences"], latest["priority"], latest["peak_value"]) == (2, "P1", 91.0)
    await plant.until(lambda c: "acknowledged" in c.kinds_of(ticket_id))
    topics = {r.kind: r.topic.split("/", 3)[-1] for r in plant.central.events_of(ticket_id)}
    assert topics == {
        "opened": "tickets/opened",
        "acknowledged": "tickets/transition",
        "condition_cleared": "tickets/updated",
        "updated": "tickets/updated",
    }
    # Issue 13: a re-trigger of an open ticket is no re-report; nothing resolved yet, no rate.
    assert plant.service.kpis()["repeat_report_rate"] is None


async def test_the_tag_that_tripped_is_in_the_ticket_evidence_of_an_asset_with_many_tags(
    plant: Plant,
):
    # A compressor with 30 scalar tags, its discharge temperature (`r29`, the last point of
    # its YAML) trips. A ticket summarises at most 16 tags; the planner must see the one the
    # finding names, whichever 15 others come with it.
    for n, tag in enumerate(COMPRESSOR):
        await plant.samples(tag, [float(n)] * 5 + [900.0 if n == 29 else float(n)])
    tripped = COMPRESSOR[-1]

    def tripping(ts: float, value: float, *, active: bool = True) -> Finding:
        return Finding(
            asset="compressor-1", fault_code=FaultCode.THRESHOLD_HIGH, severity=Priority.P2,
            score=1.0, detector="threshold:discharge_temp", message="compressor-1 hot",
            ts=ts, active=active, value=value, signal=tripped,
        )  # fmt: skip

    await plant.feed(tripping(plant.now, 900.0))
    await plant.until(lambda c: any(r.data["asset"] == "compressor-1" for r in c.received))
    (opened,) = [r for r in plant.opened() if r.data["asset"] == "compressor-1"]
    telemetry = opened.data["evidence"]["telemetry"]
    assert len(telemetry) == 16
    assert telemetry[tripped]["max"] == 900.0 and telemetry[tripped]["last"] == 900.0
    assert opened.data["evidence"]["signal"] == tripped
    assert opened.data["evidence"]["telemetry_related_tags"] == 30  # the list is cut: says so

    # Cleared, raised again (the open ticket enriched), asked for by the central system:
    # still there each time.
    ticket_id = opened.ticket_id
    await plant.feed(tripping(plant.now + 5, 60.0, active=False), tripping(plant.now + 20, 950.0))
    await plant.until(lambda c: "updated" in c.kinds_of(ticket_id))
    latest = plant.central.latest(ticket_id)
    assert latest is not None and tripped in latest["evidence"]["telemetry"]
    snapshot = await plant.command("snapshot", ticket_id=ticket_id)
    assert snapshot.accepted and tripped in snapshot.detail["telemetry"]
    assert len(snapshot.detail["telemetry"]) == 16


def _walk(value: Any) -> list[Any]:
    found = [value]
    if isinstance(value, dict):
        for item in value.values():
            found += _walk(item)
    elif isinstance(value, list):
        for item in value:
            found += _walk(item)
    return found


# --- noise control --------------------------------------------------------------------------


async def test_chattering_keeps_one_ticket_withholds_clears_and_raises_an_advisory(plant: Plant):
    t = plant.now
    for cycle in range(6):  # 6 active/clear cycles in 60 s
        await plant.feed(finding(t + cycle * 10), finding(t + cycle * 10 + 5, active=False))
    await plant.until(lambda c: len(c.work_orders) == 1)
    await asyncio.sleep(0.2)
    ticket_id = plant.opened()[0].ticket_id
    # Cycles 1 and 2 are reported; from the third raise on the condition chatters: the
    # re-raises are counted quietly and the clears withheld.
    assert plant.kinds(ticket_id).count("condition_cleared") == 2
    assert plant.kinds(ticket_id).count("updated") == 1
    kpis = plant.service.kpis()
    assert kpis["chattering"] == 1
    assert kpis["advisories"][0]["kind"] == "chattering"
    assert "deadband" in kpis["advisories"][0]["message"]

    await plant.tick(120)  # quiet for two minutes: the chatter is over, the withheld clear goes
    await plant.until(lambda c: c.kinds_of(ticket_id).count("condition_cleared") == 3)
    assert plant.service.kpis()["chattering"] == 0


async def test_nothing_opens_while_the_asset_is_stopped_or_in_maintenance(plant: Plant):
    await plant.samples(SPEED, [0.0] * 3)  # stopped
    await plant.feed(finding(plant.now))
    assert plant.service.kpis()["suppressed"] == 1
    reply = await plant.command("maintenance", asset="pump-1", until=plant.now + 3600)
    assert reply.accepted
    await plant.samples(SPEED, [1480.0] * 3)  # running, but in maintenance
    await plant.feed(finding(plant.now + 1))
    assert plant.service.kpis()["out_of_service"] == 1
    await asyncio.sleep(0.3)
    assert plant.central.work_orders == {}

    await plant.tick(3601)  # maintenance over
    await plant.feed(finding(plant.now))
    await plant.until(lambda c: len(c.work_orders) == 1)
    assert plant.service.kpis()["suppressed"] == 0


async def test_a_lost_can_bus_raises_one_comm_lost_and_inhibits_the_devices_behind_it(plant: Plant):
    t = plant.now
    await plant.service.observe_samples(
        [Sample("conveyor-1.speed", t, 1.2), Sample("conveyor-2.speed", t, 1.1)]
    )
    bad = [Sample.bad(tag, t + 1, "bus-off") for tag in sorted(CAN_BUS.tags)]
    await plant.service.observe_samples(bad)
    for asset in ("conveyor-1", "conveyor-2"):  # their own detectors see stale / bad data
        await plant.feed(
            finding(t + 2, asset=asset, fault=FaultCode.SENSOR_BAD_QUALITY, detector="quality")
        )
    await plant.until(lambda c: len(c.work_orders) == 1)
    await asyncio.sleep(0.2)
    (opened,) = plant.opened()
    assert (opened.data["asset"], opened.data["fault_code"]) == ("can-can0", "comm.lost")
    assert "120 ohm termination" in opened.data["knowledge"][0]["actions"][0]
    assert opened.data["evidence"]["assets_behind"] == ["conveyor-1", "conveyor-2"]
    assert plant.service.kpis()["suppressed"] == 2

    await plant.service.observe_samples([Sample("conveyor-1.speed", t + 30, 1.2)])
    await plant.until(lambda c: "condition_cleared" in [r.kind for r in c.received])


# --- storms ---------------------------------------------------------------------------------


async def test_storm_of_one_root_cause_becomes_one_incident_and_a_handful_of_tickets(plant: Plant):
    """The real case compressed: a hydraulic unit loses pressure, then every press in the hall
    overheats and chatters for two hours (hundreds of triggers). Issue 13: the presses' burst
    is one signature (site, threshold.high, press), so it is a storm of its group: held for
    group_wait, one incident whose root cause is named by the presses' `depends_on`."""
    t = plant.now
    await plant.feed(
        finding(t, asset="hydraulic-unit-1", fault=FaultCode.THRESHOLD_LOW, detector="threshold:p")
    )
    triggers = 1
    for minute in range(120):
        ts = t + 30 + minute * 60
        plant.clock.advance(ts - plant.now)
        for index, press in enumerate(PRESSES):
            if (minute + index) % 6:  # each press raises on 5 of 6 minutes, then clears
                await plant.service.on_finding(
                    finding(ts + index, asset=press, detector="threshold:oil")
                )
                triggers += 1
            else:
                await plant.service.on_finding(
                    finding(ts + index, asset=press, detector="threshold:oil", active=False)
                )
        if minute == 40:  # a safety rule fires in the middle of the storm
            await plant.feed(
                finding(
                    ts,
                    asset="press-7",
                    fault="threshold.high",
                    detector="threshold:oil_fire_risk",
                    severity=Priority.P1,
                )
            )
        await plant.service.advance_timers()
    await plant.tick(700)
    await plant.until(lambda c: len([r for r in c.received if r.kind == "opened"]) >= 3)
    await asyncio.sleep(0.5)  # the incident's last update on its way

    incidents = [r for r in plant.opened() if r.data["fault_code"] == "alarm.flood"]
    tickets = [r for r in plant.opened() if r.data["fault_code"] != "alarm.flood"]
    assert triggers > 500
    assert len(incidents) == 1
    assert len(tickets) <= 12, [r.data["asset"] for r in tickets]
    incident_id = incidents[0].ticket_id
    assert incidents[0].topic.endswith("/incidents/opened")
    final = plant.central.latest(incident_id)
    assert final is not None
    info = final["incident"]
    root = info["suspected_root_cause"]
    assert (root["asset"], root["named_by"]) == ("hydraulic-unit-1", "depends_on")
    assert info["member_count"] >= 20
    assert len(info["top_members"]) == 5
    # 29 new conditions in the hour (a press re-raising is not a new condition): P1; more
    # than 50 new conditions within an hour make it P0 (tests/test_storm_grouping.py).
    assert final["priority"] == "P1"
    safety = [r for r in tickets if r.data["detector"] == "threshold:oil_fire_risk"]
    assert len(safety) == 1 and safety[0].data["incident_id"] == incident_id
    kpis = plant.service.kpis()
    assert kpis["incidents"] == 1
    print(
        f"storm: {triggers} triggers -> {len(incidents)} incident, {len(tickets)} tickets,"
        f" {len(plant.central.received)} distinct messages"
    )


# --- SLA ------------------------------------------------------------------------------------


async def test_past_respond_by_escalates_to_the_level_target_and_keeps_the_priority(
    plant: Plant,
):
    """Issue 13: a breach is reported with the level's target for the central system to route;
    the priority stays the fault's, and a delivery `ack` is not a response."""
    await plant.feed(finding(plant.now))
    await plant.until(lambda c: "acknowledged" in [r.kind for r in c.received])
    ticket_id = plant.opened()[0].ticket_id
    await plant.tick(49 * 60)  # P2: respond within 60 min, warned at 80 % (48 min)
    await plant.until(lambda c: "sla_warning" in c.kinds_of(ticket_id))
    await plant.tick(12 * 60)  # past the respond-by although the ticket is ACKNOWLEDGED
    await plant.until(lambda c: "sla_breached" in c.kinds_of(ticket_id))
    breach = next(r for r in plant.central.events_of(ticket_id) if r.kind == "sla_breached")
    assert breach.topic.endswith("tickets/updated")
    assert breach.data["priority"] == "P2" and breach.data["state"] == "ACKNOWLEDGED"
    assert breach.data["change"]["clock"] == "response"
    assert breach.data["change"]["level"] == 1
    assert breach.data["change"]["target"] == "maintenance-planner"
    assert breach.data["change"]["actor"] == "edge"

    reply = await plant.command("accept", ticket_id=ticket_id)
    assert reply.accepted and reply.detail["state"] == "ASSIGNED"
    kpis = plant.service.kpis()
    assert (kpis["responses"], kpis["mean_time_to_respond_s"]) == (1, 61 * 60)
    accepted = await plant.store.tickets.get_ticket(ticket_id)
    assert accepted is not None and accepted.attributes["response"]["within"] is False
    assert accepted.attributes["response"]["by"] == ACTOR


async def test_a_condition_active_for_a_day_is_reported_stale(plant: Plant):
    await plant.feed(finding(plant.now))
    await plant.until(lambda c: len(c.work_orders) == 1)
    ticket_id = plant.opened()[0].ticket_id
    await plant.tick(24 * 3600 + 60)
    await plant.until(lambda c: "condition_stale" in [r.kind for r in c.events_of(ticket_id)])
    assert plant.service.kpis()["stale"] == 1


# --- verification and recurrence ---------------------------------------------------------------


async def _fault_with_baseline(plant: Plant) -> str:
    await plant.samples(SPEED, [1480.0] * 20)
    await plant.samples(HOT, [60.0] * 20)
    await plant.feed(finding(plant.now + 1))
    await plant.until(lambda c: "acknowledged" in [r.kind for r in c.received])
    return plant.opened()[-1].ticket_id


async def _run_for(plant: Plant, seconds: int, temp: float) -> None:
    for _ in range(seconds // 30):
        plant.clock.advance(30)
        await plant.service.observe_samples(
            [Sample(SPEED, plant.now, 1480.0), Sample(HOT, plant.now, temp)]
        )


async def test_repair_is_verified_against_the_pre_fault_baseline_and_closes(plant: Plant):
    ticket_id = await _fault_with_baseline(plant)
    await plant.feed(finding(plant.now + 2, active=False, value=70.0))
    reply = await plant.command(
        "close",
        ticket_id=ticket_id,
        resolution="Bearing regreased",
        cause_code="3.4",
        remedy_code="2",
        cause="LUB",
        repaired=True,
    )
    assert reply.accepted and reply.detail["state"] == "VERIFYING"
    await _run_for(plant, 300, 61.0)
    assert [t.state for t in plant.service.open_tickets()] == [TicketState.VERIFYING]
    await _run_for(plant, 330, 61.0)
    # Issue 13: `verified`, then the edge waits for the sign-off; it never closes by itself.
    await plant.until(lambda c: "verified" in c.kinds_of(ticket_id))
    await _run_for(plant, 600, 61.0)
    assert [t.state for t in plant.service.open_tickets()] == [TicketState.VERIFIED]
    assert (await plant.command("confirm", ticket_id=ticket_id, note="runs fine")).accepted
    await plant.until(lambda c: "closed" in c.kinds_of(ticket_id))
    kinds = plant.kinds(ticket_id)
    assert kinds[-4:] == ["repaired", "verifying", "verified", "closed"]
    verified = next(r for r in plant.central.events_of(ticket_id) if r.kind == "verified")
    change = verified.data["change"]
    assert change["result"] == "pass"
    assert change["figures"][HOT]["before"] == 60.0 and change["figures"][HOT]["after"] == 61.0
    assert verified.topic.endswith("/tickets/transition")


async def test_failed_verification_reopens_the_ticket(plant: Plant):
    ticket_id = await _fault_with_baseline(plant)
    await plant.command(
        "close",
        ticket_id=ticket_id,
        resolution="Regreased",
        cause_code="3.4",
        remedy_code="2",
        repaired=True,
    )
    await _run_for(plant, 660, 75.0)  # still 15 degC above the baseline
    await plant.until(lambda c: "reopened" in c.kinds_of(ticket_id))
    verified = next(r for r in plant.central.events_of(ticket_id) if r.kind == "verified")
    assert verified.data["change"]["result"] == "fail"
    assert verified.data["change"]["figures"][HOT] == {
        "before": 60.0,
        "after": 75.0,
        "within": False,
    }
    latest = plant.central.latest(ticket_id)
    assert latest is not None and latest["state"] in ("REOPENED", "ACKNOWLEDGED")


async def test_same_fault_within_72_h_reopens_and_within_30_days_links_a_new_ticket(plant: Plant):
    first_id = await _fault_with_baseline(plant)
    await plant.feed(finding(plant.now + 2, active=False, value=60.0))
    assert (
        await plant.command(
            "close", ticket_id=first_id, resolution="Adjusted", cause_code="3.4", remedy_code="2"
        )
    ).accepted
    await plant.tick(3600)
    await plant.feed(finding(plant.now))  # back after one hour: the same ticket reopens
    await plant.until(lambda c: "reopened" in c.kinds_of(first_id))
    assert len(plant.central.work_orders) == 1

    await plant.feed(finding(plant.now + 1, active=False, value=60.0))
    assert (
        await plant.command(
            "close",
            ticket_id=first_id,
            resolution="Replaced seal",
            cause_code="3.4",
            remedy_code="2",
        )
    ).accepted
    await plant.tick(4 * 86400)
    await plant.feed(finding(plant.now))  # back after four days: a new ticket, linked
    await plant.until(lambda c: len(c.work_orders) == 2)
    second = plant.opened()[-1]
    assert second.ticket_id != first_id
    assert second.data["recurrence_of"] == first_id
    assert plant.service.statistics().recurrences == 2


# --- commands ---------------------------------------------------------------------------------


async def test_every_command_with_idempotent_repeats_and_stale_revisions(plant: Plant):
    await plant.samples(HOT, [60.0] * 5)
    await plant.feed(finding(plant.now))
    await plant.until(lambda c: "acknowledged" in [r.kind for r in c.received])
    ticket_id = plant.opened()[0].ticket_id
    stored = await plant.store.tickets.get_ticket(ticket_id)
    assert stored is not None
    revision = stored.revision

    assign = {
        "ticket_id": ticket_id,
        "assignee": "j.smith",
        "team": "mech",
        "if_revision": revision,
    }
    first = await plant.central.send_command("assign", assign, command_id="c-assign")
    assert first.accepted and first.detail["state"] == "ASSIGNED"
    events_after_first = await plant.revisions(ticket_id)
    again = await plant.central.send_command("assign", assign, command_id="c-assign")
    assert again.accepted and again.detail["replayed"] is True
    assert again.detail["revision"] == first.detail["revision"]
    assert await plant.revisions(ticket_id) == events_after_first, "a replay has no effect"

    stale = await plant.command("assign", ticket_id=ticket_id, assignee="x", if_revision=revision)
    assert not stale.accepted and stale.reason.startswith("stale")
    assert stale.detail["current_revision"] == first.detail["revision"]

    shelve = await plant.command(
        "shelve", ticket_id=ticket_id, reason="Known; parts on order", duration_s=3600
    )
    assert shelve.accepted
    too_long = await plant.command("shelve", ticket_id=ticket_id, reason="x", duration_s=9 * 3600)
    assert not too_long.accepted and "`duration_s`" in too_long.reason
    assert "28800" in too_long.reason
    await plant.feed(finding(plant.now + 5, active=False), finding(plant.now + 10))
    assert plant.service.statistics().shelved_hits == 1
    assert plant.service.kpis()["shelved"] == 1
    assert (await plant.command("unshelve", ticket_id=ticket_id)).accepted
    assert not (await plant.command("unshelve", ticket_id=ticket_id)).accepted
    one_shot = await plant.command("shelve", ticket_id=ticket_id, reason="once", one_shot=True)
    assert one_shot.accepted and one_shot.detail["until"] is None

    snapshot = await plant.command("snapshot", ticket_id=ticket_id)
    assert snapshot.accepted
    snap = snapshot.detail
    assert snap["ticket"]["id"] == ticket_id and snap["telemetry"][HOT]["mean"] == 60.0
    assert len(json.dumps(snap)) < 8000
    by_asset = await plant.command("snapshot", asset="pump-1")
    assert by_asset.accepted and by_asset.detail["open_tickets"][0]["id"] == ticket_id

    received_before = len(plant.central.received)
    resync = await plant.command("resync")
    assert resync.accepted and resync.detail["republished"] == 1
    await plant.until(lambda c: len(c.received) > received_before)
    assert plant.central.received[-1].kind == "resync"

    maintenance = await plant.command("maintenance", asset="pump-1", until=plant.now + 600)
    assert maintenance.accepted

    close = {
        "ticket_id": ticket_id,
        "resolution": "Cooler cleaned",
        "cause": "fouling",
        "cause_code": "3.4",
        "remedy_code": "7",
        "repaired": False,
    }
    closed = await plant.central.send_command("close", close, command_id="c-close")
    assert closed.accepted and closed.detail["state"] == "CLOSED"
    replay = await plant.central.send_command("close", close, command_id="c-close")
    assert replay.accepted and replay.detail["replayed"] is True
    after_close = await plant.command(
        "close", ticket_id=ticket_id, resolution="again", cause_code="3.4", remedy_code="2"
    )
    assert not after_close.accepted and "CLOSED" in after_close.reason
    kinds = [kind for _, kind in await plant.revisions(ticket_id)]
    assert kinds.count("closed") == 1 and kinds[-1] == "closed"

    cancel_target = finding(plant.now + 700, asset="press-1", detector="threshold:oil")
    plant.clock.advance(700)
    await plant.feed(cancel_target)
    await plant.until(lambda c: len(c.work_orders) == 2)
    other = plant.opened()[-1].ticket_id
    cancelled = await plant.command("close", ticket_id=other, cancel_reason="sensor test")
    assert cancelled.accepted and cancelled.detail["state"] == "CANCELLED"


async def test_bad_commands_are_rejected_with_a_reply_and_change_nothing(plant: Plant):
    await plant.feed(finding(plant.now))
    await plant.until(lambda c: "acknowledged" in [r.kind for r in c.received])
    ticket_id = plant.opened()[0].ticket_id
    before = await plant.revisions(ticket_id)

    unknown_ticket = await plant.command("assign", ticket_id="T-nope", assignee="a")
    assert not unknown_ticket.accepted and "unknown ticket" in unknown_ticket.reason
    intruder = await plant.central.send_command(
        "close", {"ticket_id": ticket_id, "resolution": "x", "actor": "mallory"}
    )
    assert not intruder.accepted and intruder.reason.startswith("unauthorised")
    wrong_topic = await plant.central.send_command(
        "assign", {"verb": "close", "ticket_id": ticket_id, "resolution": "x"}
    )
    assert not wrong_topic.accepted and "topic" in wrong_topic.reason
    unknown_verb = await plant.central.send_command(
        "explode", {"ticket_id": ticket_id}, topic=TOPICS.cmd("explode")
    )
    assert not unknown_verb.accepted and "unknown command verb" in unknown_verb.reason
    bad_revision = await plant.command("assign", ticket_id=ticket_id, assignee="a", if_revision="2")
    assert not bad_revision.accepted and "if_revision" in bad_revision.reason
    missing = await plant.command("close", ticket_id=ticket_id)
    assert not missing.accepted and "resolution" in missing.reason

    # Malformed JSON straight onto the command topic: a reply without a command id.
    sender = MqttLink(LinkSettings("127.0.0.1", plant.broker_port, "rogue"))
    async with sender:
        async with asyncio.timeout(10):
            await sender.wait_connected()
        await sender.publish(
            OutgoingMessage(
                TOPICS.cmd("close"),
                b"{not json",
                properties=MessageProperties(
                    response_topic=plant.central.reply_topic, correlation_data=b"x"
                ),
            )
        )
        await plant.until(lambda c: "" in c.replies)
    assert not plant.central.replies[""].accepted
    assert "not JSON" in plant.central.replies[""].reason
    assert await plant.revisions(ticket_id) == before
    assert plant.uplink.statistics().rejected_commands >= 7


async def test_an_ack_naming_only_the_ticket_settles_its_messages_on_the_wire(plant: Plant):
    """Issue 14: docs/TICKETS.md says an ack with `ticket_id` settles the ticket's messages;
    it replied `settled: []` and the resends went on."""
    plant.central.ack = False
    await plant.feed(finding(plant.now))
    await plant.until(lambda c: len(c.work_orders) == 1)
    ticket_id = plant.opened()[0].ticket_id
    plant.clock.advance(5)
    await plant.feed(finding(plant.now, active=False))
    await plant.until(lambda c: "condition_cleared" in [r.kind for r in c.events_of(ticket_id)])
    for _ in range(100):  # resend intervals pass: both are resent, same ids
        plant.clock.advance(0.5)
        await asyncio.sleep(0.05)
        if plant.central.statistics().duplicates_dropped >= 3:
            break
    assert plant.central.statistics().duplicates_dropped >= 3
    sent = [i for i in await plant.store.outbox.unsettled(100) if i.ticket_id == ticket_id]
    assert len(sent) == 2

    reply = await plant.command("ack", ticket_id=ticket_id, central_id="WO-9")

    assert reply.accepted and reply.detail["settled"] == [i.event_id for i in sent]
    assert reply.detail["state"] == "ACKNOWLEDGED"
    await plant.until(lambda c: "acknowledged" in [r.kind for r in c.events_of(ticket_id)])
    attempts = {i.event_id: (await plant.store.outbox.get_message(i.event_id)) for i in sent}
    for _ in range(5):
        plant.clock.advance(1)
        await asyncio.sleep(0.05)
    for event_id, before in attempts.items():
        after = await plant.store.outbox.get_message(event_id)
        assert before is not None and after is not None
        assert after.settled_at is not None and after.attempts == before.attempts, "resent"
    # Only the `acknowledged` message is still waiting for its own ack.
    (left,) = [i for i in await plant.store.outbox.unsettled(100) if i.ticket_id == ticket_id]
    assert json.loads(left.payload)["type"].endswith(".acknowledged")


# --- redundant consumers (issue 14, item 2; documented in docs/TICKETS.md and the contract) ---


@contextlib.asynccontextmanager
async def centrals(plant: Plant, *systems: CentralSystem) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(s.run_central(), name=s.client_id) for s in systems]
    try:
        async with asyncio.timeout(10):
            for system in systems:
                await system.wait_connected()
            await asyncio.sleep(0.05)  # the subscriptions are sent right after CONNACK
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def central(plant: Plant, client_id: str, **options: Any) -> CentralSystem:
    return CentralSystem(
        "127.0.0.1", plant.broker_port, "factory", SITE, GATEWAY, output=io.StringIO(),
        actor=ACTOR, client_id=client_id, **options,
    )  # fmt: skip


async def test_two_consumers_on_a_shared_subscription_split_the_load_and_lose_nothing(
    plant: Plant,
):
    plant.central.ack = False  # the members of the group ack what they get
    first = central(plant, "cmms-a", share_group="cmms")
    second = central(plant, "cmms-b", share_group="cmms", first_work_order=5001)
    async with centrals(plant, first, second):
        for press in PRESSES[:6]:
            await plant.feed(finding(plant.now, asset=press))
        # Six presses at once are one group's burst: group_wait holds them, and the group
        # stays below its threshold, so each opens its own ticket when the hold ends.
        await plant.tick(POLICY.group_wait_s + 1)
        await plant.until(lambda c: len(c.work_orders) == 6)
        published = {i.event_id for i in await plant.store.outbox.unsettled(1000)} | {
            r.event_id for r in plant.central.received
        }

        async def all_settled() -> bool:
            return not [i for i in await plant.store.outbox.unsettled(1000) if i.ticket_id]

        async with asyncio.timeout(20):
            while not await all_settled():
                plant.clock.advance(0.5)  # resend anything a member has not acked yet
                await asyncio.sleep(0.05)
    got_a = {r.event_id for r in first.received}
    got_b = {r.event_id for r in second.received}
    # Every message reached the group (the `acknowledged` events the acks caused included)
    # and was settled by a member's ack; each member took a share of the tickets. A resend
    # may go to the other member: the group deduplicates on `id` (docs/TICKETS.md).
    assert {r.event_id for r in plant.central.received} <= got_a | got_b
    assert published <= got_a | got_b
    opened_a = {r.ticket_id for r in first.received if r.kind == "opened"}
    opened_b = {r.ticket_id for r in second.received if r.kind == "opened"}
    assert opened_a | opened_b == set(plant.central.work_orders)
    assert opened_a and opened_b, (opened_a, opened_b)


async def test_when_two_central_systems_ack_the_first_central_id_is_kept(plant: Plant):
    plant.central.ack = False
    north = central(plant, "cmms-north")
    south = central(plant, "cmms-south", first_work_order=5001)
    async with centrals(plant, north, south):
        await plant.feed(finding(plant.now))
        await plant.until(lambda c: len(c.work_orders) == 1)
        ticket_id = plant.opened()[0].ticket_id
        await plant.until(lambda c: "acknowledged" in c.kinds_of(ticket_id))
        acked = [r for r in plant.central.events_of(ticket_id) if r.kind == "acknowledged"]
        assert len(acked) == 1, "the second ack moves nothing"
        winner = acked[0].data["central_id"]
        assert winner in {north.work_orders[ticket_id], south.work_orders[ticket_id]}
        # The other system's later ack is accepted and settles, but keeps the first id.
        reply = await south.send_command(
            "ack", {"ticket_id": ticket_id, "central_id": "WO-LATE", "actor": ACTOR}
        )
        assert reply.accepted and reply.detail["central_id"] == "WO-LATE"
        assert reply.detail["state"] == "ACKNOWLEDGED"
        plant.clock.advance(5)
        await plant.feed(finding(plant.now, active=False))  # a later event of the ticket
        await plant.until(lambda c: "condition_cleared" in c.kinds_of(ticket_id))
    assert (await plant.service.find_ticket(ticket_id)).central_id == winner
    for event in plant.central.events_of(ticket_id)[1:]:
        assert event.data["central_id"] == winner
