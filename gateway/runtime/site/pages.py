"""What each page of the site page shows, as plain values for the templates (no web framework
here): the overview, a device, a vibration tag, a ticket and the ticket list.

Everything is read on request from the objects the daemon already runs: the health report,
the newest samples (`LiveValues`), the ticket service's open tickets and conditions, state.db
(a ticket's events and the messages sent for it), telemetry.db (trends, the latest waveform)
and the spectrum detectors' views. Nothing is computed while nobody looks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.clock import Clock
from gateway.core.interfaces import SpectrumDetector, TicketEvent
from gateway.core.records import (
    Condition,
    OutboxItem,
    Priority,
    Quality,
    Sample,
    TagKind,
    Ticket,
    Waveform,
)
from gateway.core.spectrum_view import SpectrumView
from gateway.runtime.site import charts
from gateway.runtime.site.live_values import LiveValues
from gateway.runtime.site.snapshots import SpectrumSnapshots

TREND_WINDOW_S = 3600.0
MIN_TREND_SPAN_S = 120.0
# Feature trends of a waveform tag drawn on its vibration page, with their baseline.
VIBRATION_TRENDS = (
    ("velocity_rms_mm_s", "Velocity RMS", "mm/s"),
    ("kurtosis", "Kurtosis", ""),
    ("crest_factor", "Crest factor", ""),
)
# How far back the time of a device's last GOOD sample is searched when it is unreachable.
LAST_GOOD_LOOKBACK_S = 7 * 86400.0
# Event kinds that come from the central system's commands (the others are the gateway's own).
CENTRAL_KINDS = frozenset(
    {"acknowledged", "assigned", "closed", "cancelled", "repaired", "shelved", "unshelved",
     "resync", "maintenance"}
)  # fmt: skip
MAX_TICKETS_LISTED = 200


class Telemetry(Protocol):
    async def read_samples(self, tag: str, start: float, end: float) -> list[Sample]: ...

    async def latest_waveform(
        self, tag: str, at_or_before: float = math.inf
    ) -> Waveform | None: ...

    async def latest_good_ts(self, device: str, since: float) -> float | None: ...


class OpenTickets(Protocol):
    def open_tickets(self) -> list[Ticket]: ...

    def active_conditions(self) -> list[Condition]: ...


class TicketHistory(Protocol):
    """state.db's tickets, read-only."""

    async def get_ticket(self, ticket_id: str) -> Ticket | None: ...

    async def ticket_events(self, ticket_id: str) -> list[TicketEvent]: ...

    async def list_tickets(self, *, open_only: bool = False) -> list[Ticket]: ...


class TicketMessages(Protocol):
    """The outbox's messages of one ticket, as the central system received them."""

    async def ticket_messages(self, ticket_id: str) -> list[OutboxItem]: ...


@dataclass(frozen=True, slots=True)
class PointInfo:
    """One value of a device as the page lists it."""

    name: str
    tag: str
    unit: str = ""
    kind: str = TagKind.SCALAR.value  # scalar | state | waveform | derived
    enum: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: str
    asset: str
    name: str
    protocol: str
    points: tuple[PointInfo, ...]

    def point(self, name: str) -> PointInfo | None:
        return next((p for p in self.points if p.name == name), None)


# --- formatting (also the templates' filters) ------------------------------------------------


def when(ts: float | None) -> str:
    """Local time of the gateway, to the second."""
    if ts is None or not math.isfinite(ts):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    sign = "-" if seconds < 0 else ""
    s = abs(int(seconds))
    if s < 60:
        return f"{sign}{s} s"
    if s < 3600:
        return f"{sign}{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{sign}{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{sign}{s // 86400} d {s % 86400 // 3600} h"


def number(value: float | None, unit: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        text = f"{value:.4g}"
    elif abs(value) >= 100:
        text = f"{value:.1f}"
    else:
        text = f"{value:.4g}"
    return f"{text} {unit}".strip()


def byte_count(value: int | float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{int(value)} B"


def actor_of(event: TicketEvent) -> str:
    """Who made the change: the actor a command named, else the central system for the
    changes that only its commands make, else the gateway (findings, timers, verification)."""
    for key in ("by", "actor", "assignee"):
        value = event.detail.get(key)
        if isinstance(value, str) and value:
            return value
    return "central system" if event.kind in CENTRAL_KINDS else "gateway"


# --- the pages --------------------------------------------------------------------------------


class SitePages:
    def __init__(
        self,
        *,
        site: str,
        gateway: str,
        clock: Clock,
        report: Callable[[], Awaitable[dict[str, Any]]],
        devices: Sequence[DeviceInfo],
        live: LiveValues,
        telemetry: Telemetry,
        tickets: OpenTickets,
        history: TicketHistory,
        messages: TicketMessages,
        spectra: Sequence[SpectrumDetector],
        snapshots: SpectrumSnapshots,
    ) -> None:
        self.site = site
        self.gateway = gateway
        self.clock = clock
        self._report = report
        self.devices = {d.id: d for d in devices}
        self._live = live
        self._telemetry = telemetry
        self._tickets = tickets
        self._history = history
        self._messages = messages
        self.spectra = {d.tag_id: d for d in spectra}
        self._snapshots = snapshots
        self._views: dict[str, SpectrumView] = {}  # newest view per waveform tag
        self._last_good: dict[str, float | None] = {}  # per unreachable device

    # -- overview ---------------------------------------------------------------------------

    async def overview(self) -> dict[str, Any]:
        report = await self._report()
        now = self.clock.now()
        stats = {d["device"]: d for d in report.get("devices", [])}
        devices = [await self._device_row(d, stats.get(d.id), now) for d in self.devices.values()]
        tickets = self._tickets.open_tickets()
        by_priority = {p.value: [] for p in Priority}  # type: dict[str, list[dict[str, Any]]]
        for ticket in sorted(tickets, key=lambda t: (t.priority.rank, t.opened_at)):
            by_priority[ticket.priority.value].append(_ticket_row(ticket, now))
        residency = report.get("residency", {})
        sent = sum(residency.get("sent_bytes", {}).values())
        acquired = residency.get("acquired_bytes", 0)
        return {
            "site": self.site,
            "gateway": self.gateway,
            "now": now,
            "ready": report.get("ready", False),
            "uptime_s": report.get("uptime_s"),
            "uplink": report.get("uplink", {}),
            "outbox": report.get("outbox", {}),
            "devices": devices,
            "conditions": [_condition_row(c, now) for c in self._tickets.active_conditions()],
            "tickets_by_priority": [(p, rows) for p, rows in by_priority.items() if rows],
            "open_tickets": len(tickets),
            "residency": {
                "acquired_bytes": acquired,
                "sent_bytes": sent,
                "sent_by_kind": dict(sorted(residency.get("sent_bytes", {}).items())),
                "share": (sent / acquired) if acquired else None,
                "refused_by_guard": residency.get("refused_by_guard", {}),
            },
            "vibration_tags": sorted(self.spectra),
        }

    async def _device_row(
        self, device: DeviceInfo, stats: Mapping[str, Any] | None, now: float
    ) -> dict[str, Any]:
        scalars = [p for p in device.points if p.kind != TagKind.WAVEFORM.value]
        samples = self._live.of(p.tag for p in scalars)
        counts = {q.name: 0 for q in Quality}
        for sample in samples.values():
            counts[sample.quality.name] += 1
        state = str(stats["state"]) if stats else "unknown"
        last_good = None
        if state == "unreachable":
            if device.id not in self._last_good:
                self._last_good[device.id] = await self._telemetry.latest_good_ts(
                    device.id, now - LAST_GOOD_LOOKBACK_S
                )
            last_good = self._last_good[device.id]
        else:
            self._last_good.pop(device.id, None)
        return {
            "id": device.id,
            "name": device.name,
            "asset": device.asset,
            "protocol": device.protocol,
            "state": state,
            "latency_s": stats.get("latency_s") if stats else None,
            "errors": stats.get("errors", 0) if stats else 0,
            "last_error": stats.get("last_error") if stats else None,
            "points": len(scalars),
            "bad": counts["BAD"],
            "uncertain": counts["UNCERTAIN"],
            "good": counts["GOOD"],
            "last_good": last_good,
            "since": (now - last_good) if last_good is not None else None,
        }

    # -- device -----------------------------------------------------------------------------

    async def device(self, device_id: str, point: str | None) -> dict[str, Any] | None:
        device = self.devices.get(device_id)
        if device is None:
            return None
        now = self.clock.now()
        samples = self._live.of(p.tag for p in device.points)
        chosen = device.point(point) if point else None
        if chosen is None or chosen.kind == TagKind.WAVEFORM.value:
            chosen = next((p for p in device.points if p.kind != TagKind.WAVEFORM.value), None)
        rows = [_point_row(p, samples.get(p.tag), now) for p in device.points]
        trend = None
        if chosen is not None:
            trend = await self._trend(chosen.tag, f"{chosen.name}, last hour", chosen.unit, now)
        return {
            "device": device,
            "now": now,
            "points": rows,
            "chosen": chosen,
            "trend": trend,
            "vibration_tags": sorted(t for t in self.spectra if t.startswith(f"{device.id}.")),
        }

    async def _trend(
        self,
        tag: str,
        title: str,
        unit: str,
        now: float,
        bands: Sequence[charts.Band] = (),
        levels: Sequence[charts.Level] = (),
    ) -> str:
        """The last hour of `tag` from telemetry.db; a shorter history (a gateway just
        started) is drawn over its own span, at least `MIN_TREND_SPAN_S`."""
        end = now + 1.0
        samples = await self._telemetry.read_samples(tag, end - TREND_WINDOW_S, end)
        start = end - TREND_WINDOW_S
        if samples:
            start = max(start, min(samples[0].ts, end - MIN_TREND_SPAN_S))
        reduced = charts.reduce_trend([(s.ts, s.value) for s in samples], start, end)
        return charts.trend_chart(title, reduced, start, end, unit, bands=bands,
                                  levels=levels)  # fmt: skip

    # -- vibration --------------------------------------------------------------------------

    async def vibration(self, tag: str) -> dict[str, Any] | None:
        detector = self.spectra.get(tag)
        if detector is None:
            return None
        now = self.clock.now()
        view = await self._spectrum_view(detector)
        trends = []
        for feature, title, unit in VIBRATION_TRENDS:
            bands: list[charts.Band] = []
            levels: list[charts.Level] = []
            reference = view.baseline.get(feature) if view is not None else None
            if reference is not None:
                mean, std = reference
                bands.append(charts.Band(mean - 2 * std, mean + 2 * std, "baseline",
                                         "learnt baseline, mean +- 2 std"))  # fmt: skip
                levels.append(charts.Level(mean, "baseline", "baseline"))
            if feature == "velocity_rms_mm_s" and view is not None:
                levels += [
                    charts.Level(b, f"zone-{name}", f"zone {name.upper()}", stretch=False)
                    for b, name in zip(view.zone_boundaries_mm_s, "bcd", strict=False)
                ]
            trends.append(
                (
                    title,
                    await self._trend(
                        f"{tag}.{feature}", f"{title}, last hour", unit, now, bands, levels
                    ),
                )
            )
        return {"tag": tag, "asset": detector.asset, "now": now, "view": view,
                **spectrum_charts(view), "trends": trends}  # fmt: skip

    async def _spectrum_view(self, detector: SpectrumDetector) -> SpectrumView | None:
        """The view of the newest stored block; computed again only for a new block."""
        tag = detector.tag_id
        waveform = await self._telemetry.latest_waveform(tag)
        held = self._views.get(tag)
        if waveform is None:
            return held
        if held is not None and held.ts == waveform.ts:
            return held
        view = await asyncio.to_thread(detector.spectrum_view, waveform)
        if view is not None:
            self._views[tag] = view
        return view or held

    # -- tickets ----------------------------------------------------------------------------

    async def ticket(self, ticket_id: str) -> dict[str, Any] | None:
        ticket = await self._history.get_ticket(ticket_id)
        if ticket is None:
            return None
        now = self.clock.now()
        events = await self._history.ticket_events(ticket_id)
        messages = await self._messages.ticket_messages(ticket_id)
        sent = [_message_row(m) for m in messages]
        opened = next((m for m in sent if m["type"].endswith(".opened")), None)
        snapshot = await asyncio.to_thread(self._snapshots.load, ticket_id)
        return {
            "ticket": ticket,
            "row": _ticket_row(ticket, now),
            "now": now,
            "events": [
                {
                    "revision": e.revision,
                    "kind": e.kind,
                    "ts": e.ts,
                    "actor": actor_of(e),
                    "detail": dict(e.detail),
                }
                for e in events
            ],
            "messages": sent,
            "evidence_sent": opened["data"].get("evidence") if opened else None,
            "opened_message": opened,
            "snapshot": snapshot,
            **spectrum_charts(snapshot),
        }

    async def tickets(self) -> dict[str, Any]:
        now = self.clock.now()
        every = await self._history.list_tickets()
        newest = sorted(every, key=lambda t: t.opened_at, reverse=True)[:MAX_TICKETS_LISTED]
        return {"now": now, "tickets": [_ticket_row(t, now) for t in newest],
                "total": len(every)}  # fmt: skip


def spectrum_charts(view: SpectrumView | None) -> dict[str, str | None]:
    """The spectrum, envelope spectrum and zone bar of a view (None without a view)."""
    if view is None:
        return {"spectrum_svg": None, "envelope_svg": None, "zone_svg": None}
    envelope = None
    if view.envelope is not None:
        envelope = charts.spectrum_chart(
            f"Envelope spectrum of {view.tag}",
            view.envelope,
            lines=view.lines,
            matched=view.matched,
        )
    return {
        "spectrum_svg": charts.spectrum_chart(
            f"Acceleration spectrum of {view.tag}",
            view.spectrum,
            lines=[line for line in view.lines if line.name == "shaft"],
            band_hz=view.band_hz,
        ),
        "envelope_svg": envelope,
        "zone_svg": charts.zone_bar(view.velocity_rms_mm_s, view.zone_boundaries_mm_s, view.zone),
    }


def _point_row(point: PointInfo, sample: Sample | None, now: float) -> dict[str, Any]:
    row: dict[str, Any] = {"point": point, "value": "-", "label": "", "quality": "NO DATA",
                           "reason": "", "ts": None, "source_ts": None, "age_s": None}  # fmt: skip
    if point.kind == TagKind.WAVEFORM.value:
        row["quality"] = "WAVEFORM"
        return row
    if sample is None:
        return row
    value = sample.value
    row.update(
        quality=sample.quality.name,
        reason=sample.reason or "",
        ts=sample.ts,
        source_ts=sample.source_ts,
        age_s=now - sample.ts,
        value=number(value, point.unit),
    )
    if value is not None and point.enum and float(value).is_integer():
        row["label"] = point.enum.get(int(value), "")
    return row


def _ticket_row(ticket: Ticket, now: float) -> dict[str, Any]:
    # A person's `accept`/`start` is the response; the delivery ack is not.
    responded = "response" in ticket.attributes
    closed = not ticket.state.is_open
    return {
        "id": ticket.id,
        "asset": ticket.asset,
        "fault_code": ticket.fault_code,
        "priority": ticket.priority.value,
        "state": ticket.state.value,
        "opened_at": ticket.opened_at,
        "message": ticket.message,
        "occurrences": ticket.occurrences,
        "condition_active": ticket.condition_active,
        "respond_by": ticket.respond_by,
        "resolve_by": ticket.resolve_by,
        "respond_left_s": None if responded or ticket.respond_by is None
        else ticket.respond_by - now,
        "resolve_left_s": None if closed or ticket.resolve_by is None
        else ticket.resolve_by - now,
        "respond_late": not responded and ticket.respond_by is not None
        and now > ticket.respond_by,
        "resolve_late": not closed and ticket.resolve_by is not None and now > ticket.resolve_by,
        "revision": ticket.revision,
    }  # fmt: skip


def _condition_row(condition: Condition, now: float) -> dict[str, Any]:
    parts = condition.key.split("/")
    asset, fault, detector = ([*parts, "", "", "", ""])[1:4]
    return {"key": condition.key, "asset": asset, "fault_code": fault, "detector": detector,
            "state": condition.state.value, "since": condition.since,
            "for_s": now - condition.since}  # fmt: skip


def _message_row(item: OutboxItem) -> dict[str, Any]:
    """An outbox message as the central system receives it (the CloudEvent document)."""
    import json

    try:
        document = json.loads(item.payload)
    except ValueError:
        document = {}
    if not isinstance(document, dict):
        document = {}
    data = document.get("data")
    return {
        "event_id": item.event_id,
        "topic": item.topic,
        "type": str(document.get("type", "")),
        "created_at": item.created_at,
        "sent_at": item.last_sent_at,
        "settled_at": item.settled_at,
        "attempts": item.attempts,
        "data": data if isinstance(data, dict) else {},
        "bytes": len(item.payload),
    }
