"""Flood, storm and chattering state kept in state.db, so that a restart does not undo them.

Without it a restart in the middle of an alarm flood or a storm forgets it: the next conditions
open tickets of their own again, the storm the incident was folding. Likewise a chattering
condition would annunciate its next clear and re-raise. Kept: per area in flood, the flood
(start, incident) and its members, folded and quieted keys, and the area's arrivals of the last
hour (they decide when the flood ends and whether it is P0); per group key being counted, the
group (labels, group_wait hold, incident, named root cause), its members and held conditions,
and its new conditions of the window (24 h); per open incident of an area flood, the
conditions it folded (`flood_folds`: they outlive the flood, until the incident closes); per
CHATTERING condition, its recent raise times.

Two speeds of writing, because a storm is thousands of triggers:
- what changes the handling of the next trigger (a flood or an incident starts or ends, a
  condition is folded, held or quieted, a root cause is named, a condition starts or stops
  chattering) is written before the call that changed it returns;
- the rest (arrival counts, raise times, when the incident was last published) is written by
  the timer tick, about once a second. A crash loses at most that second of counts.

Members are written one row each, and only those that changed (the trackers mark them), so the
cost of a finding does not grow with the size of the storm.

A failed write is logged once and retried on the next call: this state refines the handling
of noise; ticket changes themselves are committed by the ledger and never depend on it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import StoreError
from gateway.core.records import (
    ChatterRecord,
    FaultCode,
    Finding,
    FloodArrival,
    FloodRecord,
    GroupRecord,
    Priority,
    StormMemberRecord,
)
from gateway.ticketing.flood_folds import SCOPE_PREFIX, FloodFolds
from gateway.ticketing.groups import GroupStorm, GroupTracker, RootCause
from gateway.ticketing.ledger import Ledger
from gateway.ticketing.noise import ChatterTracker, ConditionFlag
from gateway.ticketing.storms import AreaFlood, Arrival, FloodMember, FloodTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Restored:
    floods: int
    chattering: int
    storms: int = 0


class NoiseJournal:
    def __init__(
        self,
        ledger: Ledger,
        storms: FloodTracker,
        chatter: ChatterTracker,
        groups: GroupTracker,
        folds: FloodFolds,
    ) -> None:
        self._ledger = ledger
        self._storms = storms
        self._chatter = chatter
        self._groups = groups
        self._folds = folds
        self._floods: dict[str, FloodRecord] = {}  # headers as last written, by area
        self._chattering: dict[str, ChatterRecord] = {}  # as last written, by key
        self._structure: tuple[Any, ...] = ()
        self._failing = False

    async def restore(self, now: float) -> Restored:
        """Load what the last run saved into the trackers and the flags."""
        repo = self._ledger.noise
        floods = [_flood(record) for record in await repo.load_floods()]
        arrivals = await repo.load_flood_arrivals(now - self._storms.keep_s)
        self._storms.restore(
            floods, ((a.area, Arrival(a.ts, a.key, a.asset, a.fault_code)) for a in arrivals)
        )
        chattering = await repo.load_chattering()
        for stored in chattering:
            self._chatter.restore(stored.key, stored.raises)
            self._ledger.flags_of(stored.key).add(ConditionFlag.CHATTERING)
            self._ledger.chattering.add(stored.key)
        groups = await self._restore_groups(now)
        self._folds.restore(
            (m.scope.removeprefix(SCOPE_PREFIX), m.key, _held_finding(m.finding))
            for m in await repo.load_storm_members(SCOPE_PREFIX)
            if m.finding is not None
        )
        self._floods = {f.area: _header(f) for f in floods}
        self._chattering = {c.key: ChatterRecord(c.key, tuple(c.raises)) for c in chattering}
        self._structure = self._current_structure()
        for flood in floods:
            log.warning(
                "Alarm flood in area `%s` still in progress after the restart: %d members,"
                " incident `%s`.",
                flood.area,
                len(flood.members),
                flood.incident_key or "-",
            )
        return Restored(len(floods), len(chattering), groups)

    async def _restore_groups(self, now: float) -> int:
        repo = self._ledger.noise
        members: dict[str, list[StormMemberRecord]] = {}
        for member in await repo.load_storm_members("group:"):
            members.setdefault(member.scope.removeprefix("group:"), []).append(member)
        storms = [
            _group(record, members.get(record.group_key, [])) for record in await repo.load_groups()
        ]
        arrivals = await repo.load_group_arrivals(now - self._groups.window_s)
        self._groups.restore(
            storms, ((a.area, Arrival(a.ts, a.key, a.asset, a.fault_code)) for a in arrivals)
        )
        with_incident = [s for s in storms if s.incident_key is not None]
        for storm in with_incident:
            log.warning(
                "Storm of group `%s` still in progress after the restart: %d members,"
                " incident `%s`.",
                storm.key,
                len(storm.members),
                storm.incident_key,
            )
        return len(with_incident)

    async def save(self, *, urgent_only: bool) -> None:
        """Write what changed. With `urgent_only`, only when the structure changed (see the
        module doc)."""
        structure = self._current_structure()
        folds = self._folds
        urgent = structure != self._structure or self._groups.urgent
        urgent = urgent or bool(folds.changed or folds.gone)
        if urgent_only and not urgent:
            return
        floods = self._storms.floods()
        headers = {f.area: _header(f) for f in floods}
        changed_floods = [h for area, h in headers.items() if self._floods.get(area) != h]
        members = [_flood_member(flood, key) for flood in floods for key in sorted(flood.changed)]
        chattering = {
            key: ChatterRecord(key, self._chatter.raises(key))
            for key in sorted(self._ledger.chattering)
        }
        arrivals = self._storms.unsaved()
        changed_chatter = [c for key, c in chattering.items() if self._chattering.get(key) != c]
        floods_ended = set(self._floods) - set(headers)
        chatter_ended = set(self._chattering) - set(chattering)
        groups = self._groups
        group_rows = [_group_record(g) for k in sorted(groups.dirty) if (g := groups.get(k))]
        group_members: list[StormMemberRecord] = []
        members_gone: list[tuple[str, str]] = []
        for name, key in sorted(groups.dirty_members):
            storm = groups.get(name)
            if storm is None:
                continue
            record = _group_member(storm, key, self._ledger)
            if record is None:
                members_gone.append((f"group:{name}", key))
            else:
                group_members.append(record)
        for incident_key, key in sorted(folds.changed):
            finding = folds.finding(incident_key, key)
            if finding is not None:
                group_members.append(_folded_member(incident_key, key, finding, self._ledger))
        members_gone += [(f"{SCOPE_PREFIX}{i}", k) for i, k in sorted(folds.gone)]
        group_arrivals = list(groups.unsaved)
        nothing = not (
            changed_floods or members or changed_chatter or floods_ended or chatter_ended
            or arrivals or group_rows or group_members or members_gone or group_arrivals
            or groups.ended
        )  # fmt: skip
        if nothing:
            self._structure = structure
            groups.urgent = False
            return
        now = self._ledger.clock.now()
        try:
            await self._ledger.noise.save_noise_state(
                floods=changed_floods,
                floods_ended=floods_ended,
                arrivals=[
                    FloodArrival(area, a.ts, a.key, a.asset, a.fault_code) for area, a in arrivals
                ],
                # Old arrivals are dropped by the tick's save, not by each finding's.
                forget_arrivals_before=None if urgent_only else now - self._storms.keep_s,
                chattering=changed_chatter,
                chatter_ended=chatter_ended,
                members=members + group_members,
                members_gone=members_gone,
                groups=group_rows,
                groups_ended=sorted(groups.ended),
                group_arrivals=[
                    FloodArrival(name, a.ts, a.key, a.asset, a.fault_code)
                    for name, a in group_arrivals
                ],
                forget_group_arrivals_before=None if urgent_only else now - groups.window_s,
            )
        except StoreError as exc:
            if not self._failing:
                log.warning(
                    "Flood, storm and chattering state not saved, retrying on the next change: %s",
                    exc,
                )
            self._failing = True
            return
        if self._failing:
            log.info("Flood, storm and chattering state saved again.")
            self._failing = False
        self._storms.mark_saved(len(arrivals))
        for flood in floods:
            flood.changed.clear()
        del groups.unsaved[: len(group_arrivals)]
        groups.dirty.clear()
        groups.dirty_members.clear()
        groups.ended.clear()
        groups.urgent = False
        folds.saved()
        self._floods, self._chattering, self._structure = headers, chattering, structure

    def _current_structure(self) -> tuple[Any, ...]:
        floods = tuple(
            sorted(
                (f.area, f.incident_key, len(f.members), len(f.folded), len(f.quieted))
                for f in self._storms.floods()
            )
        )
        return floods, tuple(sorted(self._ledger.chattering))


def _header(flood: AreaFlood) -> FloodRecord:
    return FloodRecord(
        area=flood.area,
        started_at=flood.started_at,
        incident_key=flood.incident_key,
        published_members=flood.published_members,
        published_at=flood.published_at if math.isfinite(flood.published_at) else None,
        members=(),
        folded=(),
        quieted=(),
    )


def _flood_member(flood: AreaFlood, key: str) -> StormMemberRecord:
    member = flood.members.get(key)
    return StormMemberRecord(
        scope=f"area:{flood.area}",
        key=key,
        asset=member.asset if member else "",
        fault_code=member.fault_code if member else "",
        area=flood.area,
        first_seen=member.first_seen if member else flood.started_at,
        arrivals=member.arrivals if member else 0,
        member=member is not None,
        folded=key in flood.folded,
        quieted=key in flood.quieted,
    )


def _group_member(storm: GroupStorm, key: str, ledger: Ledger) -> StormMemberRecord | None:
    member = storm.members.get(key)
    held = storm.held.get(key)
    raised = held or storm.faults.get(key)
    if member is None and held is None and key not in storm.quieted:
        return None
    if member is None and held is not None:
        member = FloodMember(key, held.asset, held.fault_code, held.ts)
    asset = member.asset if member else ""
    return StormMemberRecord(
        scope=f"group:{storm.key}",
        key=key,
        asset=asset,
        fault_code=member.fault_code if member else "",
        area=ledger.profile(asset).area if asset else "",
        first_seen=member.first_seen if member else 0.0,
        arrivals=member.arrivals if member else 0,
        member=key in storm.members,
        folded=key in storm.folded,
        quieted=key in storm.quieted,
        linked=key in storm.linked,
        held=held is not None,
        finding=_finding_fields(raised) if raised is not None else None,
    )


def _folded_member(
    incident_key: str, key: str, finding: Finding, ledger: Ledger
) -> StormMemberRecord:
    """A condition an area flood's incident folded (see `flood_folds`), with its finding."""
    return StormMemberRecord(
        scope=f"{SCOPE_PREFIX}{incident_key}",
        key=key,
        asset=finding.asset,
        fault_code=str(finding.fault_code),
        area=ledger.profile(finding.asset).flood_area,
        first_seen=finding.ts,
        arrivals=1,
        member=False,
        folded=True,
        finding=_finding_fields(finding),
    )


def _finding_fields(finding: Finding) -> dict[str, Any]:
    """What a held or folded condition needs to open its ticket after a restart (no raw
    evidence), and whether it is still active."""
    return {
        "active": finding.active,
        "asset": finding.asset,
        "fault_code": str(finding.fault_code),
        "severity": finding.severity.value,
        "score": finding.score,
        "detector": finding.detector,
        "message": finding.message,
        "ts": finding.ts,
        "signal": finding.signal,
        "value": finding.value,
    }


def _held_finding(fields: Mapping[str, Any]) -> Finding:
    return Finding(
        asset=str(fields["asset"]),
        fault_code=FaultCode(str(fields["fault_code"])),
        severity=Priority(str(fields["severity"])),
        score=float(fields["score"]),
        detector=str(fields["detector"]),
        message=str(fields["message"]),
        ts=float(fields["ts"]),
        signal=fields.get("signal"),
        value=fields.get("value"),
        active=bool(fields.get("active", True)),
    )


def _group_record(storm: GroupStorm) -> GroupRecord:
    return GroupRecord(
        group_key=storm.key,
        labels=dict(storm.labels),
        hold_until=storm.hold_until,
        incident_key=storm.incident_key,
        started_at=storm.started_at,
        root=storm.root.as_dict() if storm.root is not None else None,
        predecessor=storm.predecessor,
        published_members=storm.published_members,
        published_at=storm.published_at if math.isfinite(storm.published_at) else None,
        published_root=storm.published_root,
    )


def _group(record: GroupRecord, members: list[StormMemberRecord]) -> GroupStorm:
    root = record.root
    storm = GroupStorm(
        record.group_key,
        dict(record.labels),
        hold_until=record.hold_until,
        incident_key=record.incident_key,
        started_at=record.started_at,
        root=RootCause(
            key=str(root["key"]),
            asset=str(root["asset"]),
            fault_code=str(root["fault_code"]),
            first_seen=float(root["first_seen"]),
            named_by=str(root["named_by"]),
            upstream_of=int(root.get("upstream_of", 0)),
        )
        if root is not None
        else None,
        predecessor=record.predecessor,
        published_members=record.published_members,
        published_at=record.published_at if record.published_at is not None else float("-inf"),
        published_root=record.published_root,
    )
    for m in members:
        if m.member:
            storm.members[m.key] = FloodMember(
                m.key, m.asset, m.fault_code, m.first_seen, m.arrivals
            )
            storm.areas[m.area] += 1
        if m.folded:
            storm.folded.add(m.key)
        if m.quieted:
            storm.quieted.add(m.key)
        if m.linked:
            storm.linked.add(m.key)
        if m.finding is not None:
            finding = _held_finding(m.finding)
            if m.held:
                storm.held[m.key] = finding
            else:
                storm.faults[m.key] = finding
    return storm


def _flood(record: FloodRecord) -> AreaFlood:
    members = [_member(m) for m in record.members]
    return AreaFlood(
        area=record.area,
        started_at=record.started_at,
        members={m.key: m for m in members},
        quieted=set(record.quieted),
        folded=set(record.folded),
        incident_key=record.incident_key,
        published_members=record.published_members,
        published_at=record.published_at if record.published_at is not None else float("-inf"),
        total_arrivals=sum(m.arrivals for m in members),
    )


def _member(fields: Mapping[str, Any]) -> FloodMember:
    return FloodMember(
        key=str(fields["key"]),
        asset=str(fields["asset"]),
        fault_code=str(fields["fault_code"]),
        first_seen=float(fields["first_seen"]),
        arrivals=int(fields["arrivals"]),
    )
