"""`pack` of a poll like the device's previous one (the reused `cols` blob): the row must be
the one packing it on its own gives, and anything unusual in the poll must still be kept."""

from __future__ import annotations

import math

import pytest

from gateway.core.records import Quality, Sample
from gateway.store.sample_groups import ColumnCatalogue, pack, unpack_row


def poll(ts: float, n: int = 5, device: str = "press-3") -> list[Sample]:
    return [Sample(f"{device}.r{i}", ts, 0.5 * i + ts) for i in range(n)]


def alone(samples: list[Sample], warm: ColumnCatalogue) -> list[tuple[object, ...]]:
    """The rows of `samples` packed by a catalogue with the same columns and no poll seen."""
    catalogue = ColumnCatalogue(
        (device, point, col)
        for device in ("press-3",)
        for col, point in warm.points(device).items()
    )
    rows, _ = pack(samples, catalogue)
    return rows


def test_a_poll_like_the_previous_gives_the_row_it_gives_alone() -> None:
    catalogue = ColumnCatalogue()
    first_rows, first_new = pack(poll(10.0), catalogue)
    assert len(first_rows) == 1 and len(first_new) == 5
    second = poll(11.0)
    rows, new = pack(second, catalogue)
    assert new == []  # numbered once, with the first poll
    assert rows == alone(second, catalogue)
    points = catalogue.points("press-3")
    assert unpack_row("press-3", points, (rows[0][1], *rows[0][2:])) == second


@pytest.mark.parametrize(
    "change",
    [
        {"quality": Quality.UNCERTAIN, "reason": "state 7 is not in the enumeration"},
        {"quality": Quality.BAD, "value": None, "reason": "exception 2"},
        {"value": math.nan},
        {"value": None},
        {"reason": ""},  # falsy, still a reason
        {"source_ts": 0.0},  # falsy, still a source time stamp
        {"source_ts": 10.5},
        {"ts": 11.5},  # another time stamp: a row of its own
    ],
)
def test_a_poll_like_the_previous_keeps_what_is_unusual_in_it(change: dict[str, object]) -> None:
    catalogue = ColumnCatalogue()
    pack(poll(10.0), catalogue)
    pack(poll(11.0), catalogue)  # the device's usual poll, known now
    samples = poll(12.0)
    fields = {
        "tag": samples[2].tag, "ts": samples[2].ts, "value": samples[2].value,
        "quality": Quality.GOOD, "source_ts": None, "reason": None,
    }  # fmt: skip
    samples[2] = Sample(**(fields | change))  # type: ignore[arg-type]
    rows, _ = pack(samples, catalogue)
    assert rows == alone(samples, catalogue)


def test_a_poll_with_other_points_or_order_is_packed_point_by_point() -> None:
    catalogue = ColumnCatalogue()
    pack(poll(10.0), catalogue)
    fewer = poll(11.0)[:3]  # a deadband held two back
    assert pack(fewer, catalogue)[0] == alone(fewer, catalogue)
    swapped = poll(12.0)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    assert pack(swapped, catalogue)[0] == alone(swapped, catalogue)
    more = poll(13.0, n=6)  # a new point: numbered and noted
    rows, new = pack(more, catalogue)
    assert new == [("press-3", "r5", 5)]
    assert rows == alone(more, catalogue)


def alone_each(polls: list[list[Sample]], warm: ColumnCatalogue) -> list[tuple[object, ...]]:
    """The rows of each poll packed on its own by a catalogue with the same columns."""
    rows: list[tuple[object, ...]] = []
    for samples in polls:
        device = samples[0].tag.partition(".")[0]
        catalogue = ColumnCatalogue(
            (device, point, col) for col, point in warm.points(device).items()
        )
        rows += pack(samples, catalogue)[0]
    return sorted(rows, key=lambda row: (str(row[0]), float(str(row[1]))))


def by_key(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return sorted(rows, key=lambda row: (str(row[0]), float(str(row[1]))))


def test_a_batch_of_several_polls_gives_the_rows_each_poll_gives_alone() -> None:
    # The runner hands over whatever is waiting: polls of several devices one after the other.
    devices = ("press-1", "press-2", "press-3")
    catalogue = ColumnCatalogue()
    first = [poll(10.0 + i / 100, device=d) for i, d in enumerate(devices)]
    rows, new = pack([s for p in first for s in p], catalogue)
    assert by_key(rows) == alone_each(first, catalogue)
    assert len(new) == 15
    assert set(catalogue.polls) == set(devices)  # each device's poll is known from a batch
    second = [poll(11.0 + i / 100, device=d) for i, d in enumerate(devices)]
    second[1][2] = Sample.bad(second[1][2].tag, second[1][2].ts, "exception 4")
    rows, new = pack([s for p in second for s in p], catalogue)
    assert new == []
    assert by_key(rows) == alone_each(second, catalogue)
    good, bad = int(Quality.GOOD), int(Quality.BAD)
    assert rows[1][4] == bytes([good, good, bad, good, good])  # kept, in its poll's row


def test_polls_of_two_devices_with_one_time_stamp_are_two_rows() -> None:
    catalogue = ColumnCatalogue()
    _, new = pack(poll(10.0, device="press-1") + poll(10.0, device="press-2"), catalogue)
    # Every column first seen is reported, to be stored (the reader names points by them).
    assert sorted(new) == sorted((d, f"r{i}", i) for d in ("press-1", "press-2") for i in range(5))
    both = [poll(11.0, device="press-1"), poll(11.0, device="press-2")]
    rows, _ = pack(both[0] + both[1], catalogue)
    assert by_key(rows) == alone_each(both, catalogue)
    twice = poll(12.0, device="press-1") + poll(12.0, device="press-1")  # the same tags again
    rows, _ = pack(twice, catalogue)
    assert [row[:4] for row in rows] == [row[:4] for row in alone_each([twice[:5]], catalogue)] * 2
