"""Per-point quality of one device, as the engineer on site needs to see it.

A device that answers can still have points that do not: a Modbus exception 2 for one
register range, an enumeration value nobody configured, a stale CAN signal, a NodeId the
server does not know. The source's own log line is about the device (reachable or not); this
watches each point:

- the first BAD or UNCERTAIN reading of a point is logged once with its reason, and so is its
  return to GOOD (a point that keeps changing is logged at DEBUG for a while, so one flapping
  register cannot flood the journal);
- BAD and UNCERTAIN readings are counted per device, and the points BAD (or UNCERTAIN) now
  are named, for `status`, the health topic and the metrics;
- for streams, a configured point that delivers nothing at all within `silence_limit_s` of the
  stream's start (a signal missing from the bus, a node the server never publishes) is
  logged once and named, instead of simply never appearing.

Readings published while the whole device is unreachable are not observed: the source logs
that outage once, and per-point lines for it would only repeat it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import TypedDict

from gateway.core.interfaces import Record
from gateway.core.records import Poll, Quality

log = logging.getLogger(__name__)

_GOOD = Quality.GOOD
_QUALITY = attrgetter("quality")
# More logged changes than this within the window and a point is muted (DEBUG) for the window.
_FLAP_LIMIT = 6
_FLAP_WINDOW_S = 600.0


class PointQuality:
    """The quality of every point of one device. Not thread-safe; one per source and device."""

    def __init__(self, device_id: str) -> None:
        self._device = device_id
        self._prefix = device_id + "."
        self.bad_samples = 0
        self.uncertain_samples = 0
        self._not_good: dict[str, Quality] = {}  # tag -> its current quality, when not GOOD
        self._not_good_since: dict[str, int] = {}  # tag -> readings since it stopped being GOOD
        self._mixed: set[str] = set()  # tags both BAD and UNCERTAIN since they were GOOD
        self._changes: dict[str, deque[float]] = {}  # tag -> times of logged changes
        self._muted_until: dict[str, float] = {}
        # The "never delivered" watch of a stream (`expect`, `check_silence`).
        self._awaited: set[str] = set()
        self._silence_limit = 0.0
        self._deadline: float | None = None
        self._silent: set[str] = set()
        self._silence_reported = False

    # --- readings -------------------------------------------------------------------------

    def observe(self, records: Sequence[Record]) -> None:
        """One good poll's records."""
        not_good = self._not_good
        if isinstance(records, Poll):  # every point GOOD: only a return to GOOD to note
            if not_good:
                for index, tag in enumerate(records.tags):
                    if tag in not_good:
                        self._back_to_good(records.sample(index))
            return
        if not not_good and list(map(_QUALITY, records)).count(_GOOD) == len(records):
            return  # every point GOOD, as it was: counted in C, nothing to note
        for record in records:
            if record.quality is _GOOD:
                if not_good and record.tag in not_good:
                    self._back_to_good(record)
                continue
            self._not_good_reading(record)

    def observe_one(self, record: Record) -> None:
        """One record a stream forwarded."""
        if self._awaited:
            self._awaited.discard(record.tag)
        elif self._silent and record.tag in self._silent:
            self._silent.discard(record.tag)
            log.info("Point `%s` delivers samples now.", record.tag)
        if record.quality is _GOOD:
            if self._not_good and record.tag in self._not_good:
                self._back_to_good(record)
            return
        self._not_good_reading(record)

    def _not_good_reading(self, record: Record) -> None:
        tag, quality = record.tag, record.quality
        if quality is Quality.BAD:
            self.bad_samples += 1
        else:
            self.uncertain_samples += 1
        previous = self._not_good.get(tag)
        if previous is quality:
            self._not_good_since[tag] += 1
            return
        self._not_good[tag] = quality
        self._not_good_since[tag] = self._not_good_since.get(tag, 0) + 1
        if previous is not None:
            self._mixed.add(tag)
        reason = getattr(record, "reason", None) or "no reason given"
        if previous is None:
            self._log(record.ts, tag, logging.WARNING, "Point `%s` %s: %s.", tag, quality.name,
                      reason)  # fmt: skip
        else:
            self._log(
                record.ts, tag, logging.WARNING, "Point `%s` %s (was %s): %s.", tag,
                quality.name, previous.name, reason,
            )  # fmt: skip

    def _back_to_good(self, record: Record) -> None:
        tag = record.tag
        was = self._not_good.pop(tag).name
        readings = self._not_good_since.pop(tag, 0)
        if tag in self._mixed:
            self._mixed.discard(tag)
            was = "BAD or UNCERTAIN"
        self._log(
            record.ts, tag, logging.INFO, "Point `%s` GOOD again after %d %s %s.", tag,
            readings, was, "reading" if readings == 1 else "readings",
        )  # fmt: skip

    def _log(self, ts: float, tag: str, level: int, message: str, *args: object) -> None:
        """Once per change at `level`; DEBUG while the point changes too often."""
        if ts < self._muted_until.get(tag, float("-inf")):
            log.debug(message, *args)
            return
        changes = self._changes.setdefault(tag, deque(maxlen=_FLAP_LIMIT))
        changes.append(ts)
        log.log(level, message, *args)
        if len(changes) == _FLAP_LIMIT and ts - changes[0] <= _FLAP_WINDOW_S:
            self._muted_until[tag] = ts + _FLAP_WINDOW_S
            changes.clear()
            log.warning(
                "Point `%s` changed quality %d times within %.0f min; its changes are logged"
                " at DEBUG for the next %.0f min (counted in `edge-gateway status` as usual).",
                tag, _FLAP_LIMIT, _FLAP_WINDOW_S / 60, _FLAP_WINDOW_S / 60,
            )  # fmt: skip

    # --- silence ---------------------------------------------------------------------------

    def expect(self, tags: Iterable[str], silence_limit_s: float, now_mono: float) -> None:
        """A stream connected for the first time: each of `tags` should deliver something
        (a value, or a BAD sample saying why not) within `silence_limit_s`."""
        if self._deadline is not None:
            return  # counted from the first connection only
        self._awaited = set(tags)
        self._silence_limit = silence_limit_s
        self._deadline = now_mono + silence_limit_s

    def check_silence(self, now_mono: float) -> None:
        """Past the deadline, name (once) the points that never delivered anything."""
        deadline = self._deadline
        if deadline is None or self._silence_reported or now_mono < deadline:
            return
        self._silence_reported = True
        self._silent = set(self._awaited)
        self._awaited = set()
        for tag in sorted(self._silent):
            log.warning(
                "Point `%s` has delivered no sample, good or bad, within %g s of `%s` starting"
                " to stream: check its node id or signal name, and that the device sends it.",
                tag, self._silence_limit, self._device,
            )  # fmt: skip

    # --- what status shows -----------------------------------------------------------------

    def points(self, quality: Quality) -> tuple[str, ...]:
        """Names of the points whose latest reading has this (not GOOD) quality."""
        return tuple(sorted(self._name(t) for t, q in self._not_good.items() if q is quality))

    def silent_points(self) -> tuple[str, ...]:
        return tuple(sorted(self._name(t) for t in self._silent))

    def _name(self, tag: str) -> str:
        return tag[len(self._prefix) :] if tag.startswith(self._prefix) else tag


class QualityFields(TypedDict):
    """The `DeviceStatistics` fields a `PointQuality` fills."""

    uncertain_values: int
    bad_points: tuple[str, ...]
    uncertain_points: tuple[str, ...]
    silent_points: tuple[str, ...]


def quality_statistics(quality: PointQuality | None) -> QualityFields:
    if quality is None:
        return QualityFields(
            uncertain_values=0, bad_points=(), uncertain_points=(), silent_points=()
        )
    return QualityFields(
        uncertain_values=quality.uncertain_samples,
        bad_points=quality.points(Quality.BAD),
        uncertain_points=quality.points(Quality.UNCERTAIN),
        silent_points=quality.silent_points(),
    )
