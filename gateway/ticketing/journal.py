"""Flood and chattering state kept in state.db, so that a restart does not undo them (issue 5).

Without it a restart in the middle of an alarm flood forgets the flood: the next conditions of
the area open tickets of their own again, the storm the incident was folding. Likewise a
chattering condition would annunciate its next clear and re-raise. Kept per area in flood: the
flood (start, incident, members, folded and quieted keys), and the area's arrivals of the last
hour (they decide when the flood ends and whether it is P0); per CHATTERING condition: its
recent raise times.

Two speeds of writing, because a storm is thousands of triggers:
- what changes the handling of the next trigger (a flood starts or ends, its incident opens,
  a condition is folded or quieted, a condition starts or stops chattering) is written before
  the call that changed it returns;
- the rest (arrival counts, raise times, when the incident was last published) is written by
  the timer tick, about once a second. A crash loses at most that second of counts.

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
from gateway.core.records import ChatterRecord, FloodArrival, FloodRecord
from gateway.ticketing.ledger import Ledger
from gateway.ticketing.noise import ChatterTracker, ConditionFlag
from gateway.ticketing.storms import AreaFlood, Arrival, FloodMember, FloodTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Restored:
    floods: int
    chattering: int


class NoiseJournal:
    def __init__(self, ledger: Ledger, storms: FloodTracker, chatter: ChatterTracker) -> None:
        self._ledger = ledger
        self._storms = storms
        self._chatter = chatter
        self._floods: dict[str, FloodRecord] = {}  # as last written, by area
        self._chattering: dict[str, ChatterRecord] = {}  # as last written, by key
        self._structure: tuple[Any, ...] = ()
        self._failing = False

    async def restore(self, now: float) -> Restored:
        """Load what the last run saved into the flood and chatter trackers and the flags."""
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
        self._floods = {f.area: self._saved_flood(f) for f in floods}
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
        return Restored(len(floods), len(chattering))

    async def save(self, *, urgent_only: bool) -> None:
        """Write what changed. With `urgent_only`, only when the structure changed (a flood,
        its incident, folded or quieted keys, the set of chattering keys)."""
        structure = self._current_structure()
        if urgent_only and structure == self._structure:
            return
        floods = {f.area: self._saved_flood(f) for f in self._storms.floods()}
        chattering = {
            key: ChatterRecord(key, self._chatter.raises(key))
            for key, flags in self._ledger.flags.items()
            if ConditionFlag.CHATTERING in flags
        }
        arrivals = self._storms.unsaved()
        changed_floods = [f for area, f in floods.items() if self._floods.get(area) != f]
        changed_chatter = [c for key, c in chattering.items() if self._chattering.get(key) != c]
        floods_ended = set(self._floods) - set(floods)
        chatter_ended = set(self._chattering) - set(chattering)
        if not (changed_floods or changed_chatter or floods_ended or chatter_ended or arrivals):
            self._structure = structure
            return
        try:
            await self._ledger.noise.save_noise_state(
                floods=changed_floods,
                floods_ended=floods_ended,
                arrivals=[
                    FloodArrival(area, a.ts, a.key, a.asset, a.fault_code) for area, a in arrivals
                ],
                forget_arrivals_before=self._ledger.clock.now() - self._storms.keep_s,
                chattering=changed_chatter,
                chatter_ended=chatter_ended,
            )
        except StoreError as exc:
            if not self._failing:
                log.warning(
                    "Flood and chattering state not saved, retrying on the next change: %s", exc
                )
            self._failing = True
            return
        if self._failing:
            log.info("Flood and chattering state saved again.")
            self._failing = False
        self._storms.mark_saved(len(arrivals))
        self._floods, self._chattering, self._structure = floods, chattering, structure

    def _current_structure(self) -> tuple[Any, ...]:
        floods = tuple(
            sorted(
                (f.area, f.incident_key, len(f.members), len(f.folded), len(f.quieted))
                for f in self._storms.floods()
            )
        )
        chattering = tuple(
            sorted(
                k for k, flags in self._ledger.flags.items() if ConditionFlag.CHATTERING in flags
            )
        )
        return floods, chattering

    @staticmethod
    def _saved_flood(flood: AreaFlood) -> FloodRecord:
        return FloodRecord(
            area=flood.area,
            started_at=flood.started_at,
            incident_key=flood.incident_key,
            published_members=flood.published_members,
            published_at=flood.published_at if math.isfinite(flood.published_at) else None,
            members=tuple(
                {
                    "key": m.key,
                    "asset": m.asset,
                    "fault_code": m.fault_code,
                    "first_seen": m.first_seen,
                    "arrivals": m.arrivals,
                }
                for m in flood.members.values()
            ),
            folded=tuple(sorted(flood.folded)),
            quieted=tuple(sorted(flood.quieted)),
        )


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
    )


def _member(fields: Mapping[str, Any]) -> FloodMember:
    return FloodMember(
        key=str(fields["key"]),
        asset=str(fields["asset"]),
        fault_code=str(fields["fault_code"]),
        first_seen=float(fields["first_seen"]),
        arrivals=int(fields["arrivals"]),
    )
