"""Stand-ins for the site page's data sources, with the shapes the daemon gives (the health
report, the newest samples, open tickets, state.db's ticket history), for the tests that run the
page's real server on loopback."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.core.clock import ManualClock, SystemClock
from gateway.core.interfaces import SpectrumDetector, TicketEvent
from gateway.core.records import (
    Condition,
    ConditionState,
    OutboxItem,
    OutboxKind,
    Priority,
    Sample,
    Ticket,
    TicketState,
    Waveform,
)
from gateway.runtime.site.live_values import LiveValues
from gateway.runtime.site.pages import DeviceInfo, PointInfo, SitePages
from gateway.runtime.site.server import SitePageServer
from gateway.runtime.site.snapshots import SpectrumSnapshots

NOW = SystemClock().now()
TICKET = Ticket(
    id="T-plant-a-edge-01-20260101-0001", key="plant-a/press-3/threshold.high/threshold:hot",
    site="plant-a", asset="press-3", fault_code="threshold.high", detector="threshold:hot",
    priority=Priority.P1, state=TicketState.OPENED, revision=2, opened_at=NOW - 600,
    first_seen=NOW - 600, last_seen=NOW - 10, occurrences=1, peak_value=97.0,
    message="Oil too hot", respond_by=NOW - 60, resolve_by=NOW + 3600,
)  # fmt: skip
OPENED_PAYLOAD = (
    b'{"specversion":"1.0","id":"e1","type":"com.edge-gateway.ticket.opened",'
    b'"data":{"evidence":{"peak":97.0,"zone":"n/a"}}}'
)


class Telemetry:
    async def read_samples(self, tag: str, start: float, end: float) -> list[Sample]:
        return [Sample(tag, NOW - 100 + i, 40.0 + i) for i in range(50)]

    async def latest_waveform(self, tag: str, at_or_before: float = math.inf) -> Waveform | None:
        return None

    async def latest_good_ts(self, device: str, since: float) -> float | None:
        return None


class Tickets:
    def open_tickets(self) -> list[Ticket]:
        return [TICKET]

    def active_conditions(self) -> list[Condition]:
        return [Condition(TICKET.key, ConditionState.ACTIVE, NOW - 600)]


class History:
    async def get_ticket(self, ticket_id: str) -> Ticket | None:
        return TICKET if ticket_id == TICKET.id else None

    async def ticket_events(self, ticket_id: str) -> list[TicketEvent]:
        return [
            TicketEvent(TICKET.id, 1, "opened", NOW - 600, {"priority": "P1"}),
            TicketEvent(TICKET.id, 2, "shelved", NOW - 300, {"by": "anna", "reason": "test"}),
        ]

    async def ticket_messages(self, ticket_id: str) -> list[OutboxItem]:
        return [OutboxItem(1, "e1", "factory/x/tickets/opened", OPENED_PAYLOAD,
                           OutboxKind.TICKET, NOW - 600, ticket_id=TICKET.id)]  # fmt: skip

    async def list_tickets(self, *, open_only: bool = False) -> list[Ticket]:
        return [TICKET]


async def report() -> dict[str, Any]:
    return {
        "ready": True, "uptime_s": 12.0,
        "devices": [{"device": "press-3", "state": "polling", "latency_s": 0.004, "errors": 0,
                     "last_error": None}],
        "uplink": {"connected": False, "reconnects": 3, "published": 1},
        "outbox": {"depth": 7, "oldest_age_s": 95.0},
        "residency": {"acquired_bytes": 80_000, "sent_bytes": {"ticket": 900}},
    }  # fmt: skip


DEVICE = DeviceInfo(
    id="press-3", asset="press-3", name="Press 3", protocol="modbus_tcp",
    points=(PointInfo("oil_temp", "press-3.oil_temp", "degC"),
            PointInfo("mode", "press-3.mode", "", "scalar", {0: "off", 1: "auto"}),
            PointInfo("pressure", "press-3.pressure", "bar")),
)  # fmt: skip


def make_pages(
    tmp_path: Path,
    live: LiveValues,
    *,
    report: Callable[[], Awaitable[dict[str, Any]]] = report,
    telemetry: Any = None,
    spectra: Sequence[SpectrumDetector] = (),
    devices: Sequence[DeviceInfo] = (DEVICE,),
) -> SitePages:
    return SitePages(
        # The page's clock stands still at NOW: deadlines read the same however late this runs.
        site="plant-a", gateway="edge-01", clock=ManualClock(NOW), report=report, devices=devices,
        live=live, telemetry=telemetry or Telemetry(), tickets=Tickets(), history=History(),
        messages=History(), spectra=spectra, snapshots=SpectrumSnapshots(tmp_path / "spectra"),
    )  # fmt: skip


def make_server(tmp_path: Path, live: LiveValues, **kw: Any) -> SitePageServer:
    return SitePageServer(make_pages(tmp_path, live), "127.0.0.1", 0, **kw)
