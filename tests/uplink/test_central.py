"""The simulated central ticket system: what the planner reads, dedup, bad input."""

import asyncio
import io
import json

import pytest

from gateway.core.records import Priority
from simulator.central import CentralSystem, ReceivedTicketEvent, format_work_order
from tests.uplink.helpers import GATEWAY, SITE, TOPICS, eventually, make_event, make_ticket, running
from uplink.events import make_ticket_encoder, source_urn
from uplink.mqtt import LinkSettings, MqttLink, OutgoingMessage


def test_work_order_block_reads_like_a_planners_view():
    encode = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), lambda: 1, lambda: "e-1")
    ticket = make_ticket(occurrences=4, priority=Priority.P1)
    data = json.loads(encode(ticket, make_event()).payload)["data"]
    block = format_work_order(
        ReceivedTicketEvent("e-1", "opened", "1", TOPICS.tickets_opened, "T-1", "WO-1001", data)
    )
    assert block.splitlines() == [
        "=== WO-1001  P1  NEW WORK ORDER ===",
        "  Asset:       pump-1  (site plant-a, gateway gw-1)",
        "  Fault:       threshold.high  [ISO 14224 HIO]  detected by bearing_temp_hi",
        "  Message:     Bearing temperature 92.5 °C is above the hi limit of 85 °C.",
        "  Seen:        4 time(s), first 2023-11-14T22:13:15.000Z, last 2023-11-14T22:13:20.000Z,"
        " peak 92.5; condition active",
        "  Evidence:    limit=85, value=92.5, unit=°C",
        "  Edge ticket: T-1 rev 1 (event e-1)",
    ]


@pytest.mark.broker
async def test_central_dedups_by_id_keeps_one_work_order_per_ticket_and_skips_garbage(mosquitto):
    printed = io.StringIO()
    central = CentralSystem(
        "127.0.0.1", mosquitto.port, "factory", SITE, GATEWAY, ack=False, output=printed
    )
    encode = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), iter(range(1, 99)).__next__)
    opened = encode(make_ticket("T-1"), make_event("opened"))
    updated = encode(make_ticket("T-1", revision=2), make_event("updated", revision=2))
    other = encode(make_ticket("T-2"), make_event("opened", "T-2"))
    sender = MqttLink(LinkSettings("127.0.0.1", mosquitto.port, "fake-gateway"))

    async with running(central.run_central(), "central"), sender:
        async with asyncio.timeout(10):
            await central.wait_connected()
            await sender.wait_connected()
        for message in (opened, opened, updated, other):
            await sender.publish(OutgoingMessage(message.topic, message.payload))
        await sender.publish(OutgoingMessage(TOPICS.tickets_updated, b"not an event"))
        await eventually(lambda: central.statistics().malformed == 1)

    stats = central.statistics()
    assert (stats.tickets_seen, stats.updates, stats.duplicates_dropped) == (2, 1, 1)
    assert stats.acks_sent == 0  # ack=False
    assert central.work_orders == {"T-1": "WO-1001", "T-2": "WO-1002"}
    assert [e.kind for e in central.received] == ["opened", "updated", "opened"]
    assert printed.getvalue().count("=== WO-") == 3


def test_work_order_shows_deadlines_routing_and_recommended_actions():
    data = {
        "priority": "P2", "asset": "pump-1", "site": "plant-a", "gateway": "edge-01",
        "fault_code": "bearing.outer_race", "iso14224_failure_mode": "VIB",
        "detector": "pump-1-vib.de_bearing", "message": "Outer-race defect.", "occurrences": 1,
        "first_seen": "t0", "last_seen": "t1", "peak_value": 0.5, "condition_active": True,
        "evidence": {}, "revision": 1, "respond_by": "2026-11-22T03:15:00Z",
        "resolve_by": "2026-11-22T05:00:00Z", "routing": {"area": "utilities", "skill": ""},
        "knowledge": [{"actions": ["Check lubrication.", "Plan a bearing replacement."]}],
    }  # fmt: skip
    text = format_work_order(
        ReceivedTicketEvent("e1", "opened", "1", "t", "T-1", "WO-1001", data)
    )
    assert "Respond by:  2026-11-22T03:15:00Z; resolve by 2026-11-22T05:00:00Z" in text
    assert "Route to:    area utilities" in text
    assert "Action:      Check lubrication." in text and "Plan a bearing replacement." in text
