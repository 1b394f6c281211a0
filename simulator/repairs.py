"""The plant learns of a repair: the technician's work reaches the machine.

In a real plant the technician repairs the pump, then reports the repair in the central ticket
system, whose `close` with `repaired: true` makes the gateway publish the ticket's `repaired`
transition. The simulated plant has no technician of its own: it reads that transition from
the broker, as one more consumer of the gateway's ticket topics (it never acknowledges, the
central system does), and treats it as the repair having been done on the asset. Nothing is
published: the demo's wire carries only the contract's messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from simulator.ticket_events import parse_ticket_event
from uplink.mqtt import LinkSettings, MqttLink
from uplink.topics import Topics

log = logging.getLogger(__name__)

REPAIRED_KIND = "repaired"  # the ticket transition a `close` with `repaired: true` publishes


@dataclass(frozen=True, slots=True)
class Repair:
    ticket_id: str
    asset: str
    fault_code: str


@dataclass(frozen=True, slots=True)
class RepairFeed:
    """Where the repairs of this plant's assets are announced: the gateway's topic tree."""

    host: str
    port: int
    topics: Topics
    client_id: str = "plant-simulator-repairs"


async def watch_repairs(
    feed: RepairFeed,
    assets: frozenset[str],
    on_repair: Callable[[Repair], None],
    *,
    subscribed: asyncio.Event | None = None,
) -> None:
    """Call `on_repair` once per repaired ticket of one of `assets`; run until cancelled.
    `subscribed` is set once the broker confirmed the subscription.

    The gateway resends a ticket message until the central system acknowledges it, and a later
    `repaired` of the same ticket (worked again after a failed verification) is a new repair:
    each distinct event is one repair."""
    settings = LinkSettings(
        host=feed.host,
        port=feed.port,
        client_id=feed.client_id,
        # No queue kept for the plant while it is away: a repair it did not see did not happen.
        clean_start=True,
        session_expiry_s=0,
        reconnect_min_s=0.2,
        reconnect_max_s=5.0,
        subscriptions=(feed.topics.tickets_transition,),
    )
    seen: set[str] = set()
    async with MqttLink(settings) as link:
        await link.wait_connected()
        if subscribed is not None:
            subscribed.set()
        while True:
            message = await link.receive()
            event = parse_ticket_event(message.payload)
            link.acknowledge(message)
            if event is None:
                continue
            event_id, kind, _, data = event
            asset = str(data.get("asset", ""))
            if kind != REPAIRED_KIND or asset not in assets or event_id in seen:
                continue
            seen.add(event_id)
            repair = Repair(str(data["id"]), asset, str(data.get("fault_code", "")))
            log.info(
                "Plant: `%s` repaired (ticket `%s`, %s).",
                repair.asset,
                repair.ticket_id,
                repair.fault_code,
            )
            on_repair(repair)
