"""Packing samples into groups: one telemetry.db row per device and timestamp.

A poll of a 30-register device yields 30 samples with one timestamp. Stored as 30 SQLite rows,
each sample cost about 2 us of the writer thread plus an index entry: at 15 000 values/s a
quarter of the gateway's CPU, and about 4 MB of file per minute on the plant box's flash.
Stored as one row holding the 30 values, the same poll costs one row and one index entry.

A group is the samples of one device (the part of the tag id before the first dot: tag ids
are `<device>.<point>`) that share a timestamp. Within the group each sample is a *column*
number, assigned per device the first time a point is seen and never changed, so that a
reader finds one tag's value in every row of its device. Columns keep the set of points free:
a deadband that lets only some points through yields a row with only those columns.

Row layout (the blobs are little-endian arrays, whatever the platform):
  cols      uint32 column numbers, one per sample
  vals      float64 values, NaN where the sample has no value (BAD). A usable sample never
            carries NaN: non-finite values become BAD before they get here.
  quality   one byte per sample, or NULL when every sample is GOOD (the common case)
  reasons   JSON {position: reason}, or NULL when no sample has one
  source_ts float64 per sample (NaN = none), or NULL when no sample has one
"""

from __future__ import annotations

import json
import math
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from gateway.core.records import Poll, Quality, Sample, SampleBatch, time_runs

_SWAP = sys.byteorder != "little"  # a big-endian box swaps, so the file reads the same anywhere
assert array("I").itemsize == 4 and array("d").itemsize == 8  # true on every Linux target

_GOOD = int(Quality.GOOD)


def to_blob(typecode: str, values: Sequence[int] | Sequence[float]) -> bytes:
    packed = array(typecode, values)
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


def from_blob(typecode: str, blob: bytes) -> array[Any]:
    unpacked = array(typecode)
    unpacked.frombytes(blob)
    if _SWAP:
        unpacked.byteswap()
    return unpacked


NOT_FINITE = "value is not a finite number"


def split_tag(tag: str) -> tuple[str, str]:
    """`pump-1.bearing_temp` -> (`pump-1`, `bearing_temp`); a tag without a dot is a device
    of its own with an unnamed point."""
    device, _, point = tag.partition(".")
    return device, point


def usable(sample: Sample) -> tuple[float, int, str | None]:
    """The value, quality and reason to store: a BAD sample keeps no value, and a sample that
    claims to be usable without a finite value is a driver bug kept as a gap that says so,
    never stored as a number."""
    value, quality, reason = sample.value, sample.quality, sample.reason
    if quality is Quality.BAD:
        return math.nan, int(Quality.BAD), reason
    if value is None or not math.isfinite(value):
        return math.nan, int(Quality.BAD), reason or NOT_FINITE
    return float(value), int(quality), reason


@dataclass(slots=True)
class _Group:
    device: str
    ts: float
    cols: list[int] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    vals: list[float] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    source_ts: list[float] = field(default_factory=list)
    any_source_ts: bool = False
    all_good: bool = True

    def row(self) -> tuple[Any, ...]:
        return (
            self.device,
            self.ts,
            to_blob("I", self.cols),
            to_blob("d", self.vals),
            None if self.all_good else bytes(self.quality),
            json.dumps(self.reasons, separators=(",", ":")) if self.reasons else None,
            to_blob("d", self.source_ts) if self.any_source_ts else None,
        )


class ColumnCatalogue:
    """Column numbers per device, as stored in the `sample_columns` table."""

    def __init__(self, known: Iterable[tuple[str, str, int]] = ()) -> None:
        self._columns: dict[str, dict[str, int]] = {}
        for device, point, col in known:
            self._columns.setdefault(device, {})[point] = col
        # Per device, the tag ids of its latest whole poll and their `cols` blob: a poll with
        # the same tags in the same order (every poll of a device without deadbands) reuses
        # the blob (`_pack_poll`). About 12 bytes per tag.
        self.polls: dict[str, tuple[tuple[str, ...], bytes]] = {}

    def column(self, device: str, point: str) -> int | None:
        return self._columns.get(device, {}).get(point)

    def points(self, device: str) -> dict[int, str]:
        """Column number -> point name of one device (to unpack whole rows)."""
        return {col: point for point, col in self._columns.get(device, {}).items()}

    def device_columns(self, device: str) -> dict[str, int]:
        """Point name -> column number of one device, for `pack` to look up (read only: a
        new point is numbered by `number`)."""
        columns = self._columns.get(device)
        if columns is None:
            columns = self._columns[device] = {}
        return columns

    def number(self, device: str, point: str, new: list[tuple[str, str, int]]) -> int:
        """The column of a point of `device`, numbered (and noted in `new`) on first sight."""
        columns = self.device_columns(device)
        col = columns.get(point)
        if col is None:
            # Interned: many devices share point names (`r0`...), kept once, not per device.
            point = sys.intern(point)
            col = columns[point] = len(columns)
            new.append((device, point, col))
        return col


_TAG, _TS, _VALUE = attrgetter("tag"), attrgetter("ts"), attrgetter("value")
_QUALITY, _SOURCE_TS, _REASON = attrgetter("quality"), attrgetter("source_ts"), attrgetter("reason")


def pack(
    samples: Sequence[Sample], catalogue: ColumnCatalogue
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, int]]]:
    """Rows for `sample_groups` and the columns first seen in this batch.

    Samples of one device with one timestamp share a row; the same tag twice at one
    timestamp starts a second row rather than overwriting the first.

    A batch is usually several polls one after the other (the runner takes what is waiting:
    every device whose answer came in the same turn of the event loop). Each run of samples
    with one time stamp that is a poll like its device's previous one is packed whole
    (`_pack_poll`); a run that makes exactly one row is packed alone and teaches its device's
    poll; whatever is left is packed sample by sample together (`_pack_each`).
    """
    if isinstance(samples, SampleBatch):
        return _pack_batch(samples, catalogue)
    return _pack_samples(samples, catalogue)


def _pack_batch(
    batch: SampleBatch, catalogue: ColumnCatalogue
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, int]]]:
    """`pack` for the runner's batch: a `Poll` with the tags of its device's last whole poll
    is its row at once (its values are GOOD and finite by construction); other polls and the
    loose samples are packed as samples, the polls teaching their device's poll."""
    polls = catalogue.polls
    rows: list[tuple[Any, ...]] = []
    loose: list[Sample] = []
    for part in batch.parts:
        if isinstance(part, Poll):
            tags = part.tags
            device = tags[0].partition(".")[0]
            known = polls.get(device)
            if known is not None and (known[0] is tags or known[0] == tags):
                if known[0] is not tags:
                    polls[device] = (tags, known[1])  # the device's own tuple: `is` next time
                rows.append((device, part.ts, known[1], to_blob("d", part.values), None, None,
                             None))  # fmt: skip
                continue
            loose += part.samples()
        else:
            loose.append(part)
    if not loose:
        return rows, []
    loose_rows, new_columns = _pack_samples(loose, catalogue)
    return rows + loose_rows, new_columns


def _pack_samples(
    samples: Sequence[Sample], catalogue: ColumnCatalogue
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, int]]]:
    if not samples:
        return [], []
    tags = tuple(map(_TAG, samples))
    polls = catalogue.polls
    rows: list[tuple[Any, ...]] = []
    new_columns: list[tuple[str, str, int]] = []
    rest: list[Sample] = []
    for start, end in time_runs(samples):
        run_tags = tags[start:end]
        chunk = samples[start:end]
        device = run_tags[0].partition(".")[0]
        known = polls.get(device)
        if known is not None and known[0] == run_tags:
            row = _pack_poll(device, chunk, known[1])
            if row is not None:
                rows.append(row)
                continue
        if rest:  # keep the order of what is packed sample by sample
            rest += chunk
            continue
        run_rows, run_new = _pack_each(chunk, catalogue)
        new_columns += run_new  # numbered now, whichever rows the run ends up in
        if (
            len(run_rows) == 1
            and run_rows[0][0] == device
            and len(run_rows[0][2]) == 4 * len(chunk)
        ):
            polls[device] = (run_tags, run_rows[0][2])  # one row of every sample: one poll
            rows += run_rows
        else:
            rest += chunk
    if rest:
        rest_rows, rest_new = _pack_each(rest, catalogue)
        rows += rest_rows
        new_columns += rest_new
    return rows, new_columns


def _pack_poll(device: str, samples: Sequence[Sample], cols: bytes) -> tuple[Any, ...] | None:
    """The row of one poll whose tags are those of the device's last whole poll, in the same
    order, when its samples are all GOOD with finite values, one time stamp, no reason and no
    source time stamp (the usual poll); None otherwise (`_pack_each` then packs it). The same
    row `_pack_each` makes, from whole-poll passes instead of one step per sample."""
    # `list.count` compares in C (identity first: a poll's samples share one time stamp
    # object and the GOOD member); a reason or source time stamp may be falsy ("", 0.0) and
    # still be one, so they are counted as None, not tested for truth.
    n, ts = len(samples), samples[0].ts
    if (
        list(map(_TS, samples)).count(ts) != n
        or list(map(_QUALITY, samples)).count(Quality.GOOD) != n
        or list(map(_SOURCE_TS, samples)).count(None) != n
        or list(map(_REASON, samples)).count(None) != n
    ):
        return None
    values = list(map(_VALUE, samples))
    if None in values or not all(map(math.isfinite, values)):
        return None
    return (device, ts, cols, to_blob("d", values), None, None, None)


def _pack_each(
    samples: Sequence[Sample], catalogue: ColumnCatalogue
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, int]]]:
    groups: dict[tuple[str, float], _Group] = {}
    full: list[_Group] = []
    new_columns: list[tuple[str, str, int]] = []
    group: _Group | None = None
    # Per sample, the lookups are inlined (the device's columns are fetched once per run of
    # its samples; `usable` only for a sample that is not GOOD and finite): at 15 000 samples/s
    # this halved the packing. No tag -> (device, column) cache: at 15 000 tags it held
    # 2.3 MB for 0.3 us a sample.
    device_columns: dict[str, int] = {}
    current = None  # the device whose columns `device_columns` holds
    cols: list[int] = []
    seen: set[int] = set()
    vals: list[float] = []
    qualities: list[int] = []
    stamps: list[float] = []
    good, nan, isfinite = Quality.GOOD, math.nan, math.isfinite
    for sample in samples:
        device, _, point = sample.tag.partition(".")
        if device != current:
            current, device_columns = device, catalogue.device_columns(device)
        col = device_columns.get(point)
        if col is None:
            col = catalogue.number(device, point, new_columns)
        ts = sample.ts
        # A poll's samples arrive together: most belong to the group of the one before.
        if group is None or group.device != device or group.ts != ts:
            key = (device, ts)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(device, ts)
            cols, seen, vals = group.cols, group.seen, group.vals
            qualities, stamps = group.quality, group.source_ts
        if col in seen:
            full.append(group)
            group = groups[(device, ts)] = _Group(device, ts)
            cols, seen, vals = group.cols, group.seen, group.vals
            qualities, stamps = group.quality, group.source_ts
        value = sample.value
        if sample.quality is good and value is not None and isfinite(value):
            vals.append(float(value))
            qualities.append(_GOOD)
            reason = sample.reason
        else:
            value, quality, reason = usable(sample)
            vals.append(value)
            qualities.append(quality)
            if quality != _GOOD:
                group.all_good = False
        if reason is not None:
            group.reasons[str(len(cols))] = reason
        cols.append(col)
        seen.add(col)
        source_ts = sample.source_ts
        if source_ts is None:
            stamps.append(nan)
        else:
            stamps.append(source_ts)
            group.any_source_ts = True
    return [g.row() for g in (*full, *groups.values())], new_columns


def unpack_one(tag: str, col: int, row: Any) -> Sample | None:
    """The sample of column `col` in one stored row (`ts, cols, vals, quality, reasons,
    source_ts`), or None when the row has no value for it."""
    try:
        position = from_blob("I", row[1]).index(col)
    except ValueError:
        return None
    value: float | None = from_blob("d", row[2])[position]
    quality = Quality(row[3][position]) if row[3] is not None else Quality.GOOD
    if quality is Quality.BAD or (value is not None and math.isnan(value)):
        value = None  # a gap stays a gap (NaN is only ever the mark of one)
    reason = json.loads(row[4]).get(str(position)) if row[4] is not None else None
    source_ts: float | None = None
    if row[5] is not None:
        stamp = from_blob("d", row[5])[position]
        source_ts = None if math.isnan(stamp) else stamp
    return Sample(tag=tag, ts=row[0], value=value, quality=quality, source_ts=source_ts,
                  reason=reason)  # fmt: skip


def unpack_row(device: str, points: dict[int, str], row: Any) -> list[Sample]:
    """Every sample of one stored row (`ts, cols, vals, quality, reasons, source_ts`), in
    the row's order; a column the catalogue does not name is shown as `<device>.#<col>`."""
    cols = from_blob("I", row[1])
    vals = from_blob("d", row[2])
    qualities = row[3]
    reasons: dict[str, str] = json.loads(row[4]) if row[4] is not None else {}
    stamps = from_blob("d", row[5]) if row[5] is not None else None
    samples = []
    for position, col in enumerate(cols):
        quality = Quality(qualities[position]) if qualities is not None else Quality.GOOD
        value: float | None = vals[position]
        if quality is Quality.BAD or (value is not None and math.isnan(value)):
            value = None
        stamp = stamps[position] if stamps is not None else math.nan
        samples.append(
            Sample(
                tag=f"{device}.{points.get(col, f'#{col}')}",
                ts=row[0],
                value=value,
                quality=quality,
                source_ts=None if math.isnan(stamp) else stamp,
                reason=reasons.get(str(position)),
            )
        )
    return samples
