"""The read planner: pure tables and one seeded property check."""

from __future__ import annotations

import itertools
import random

import pytest

from protocols.modbus.plan import PointSlice, ReadRequest, Span, plan_reads

H, IN = "holding", "input"


def shape(requests: list[ReadRequest]) -> list[tuple[str, int, int]]:
    return [(r.table, r.address, r.count) for r in requests]


def test_contiguous_points_share_one_read_with_their_offsets():
    spans = [Span(H, 0, 2), Span(H, 2, 2), Span(H, 4, 1)]
    (request,) = plan_reads(spans)
    assert (request.table, request.address, request.count) == (H, 0, 5)
    assert request.slices == (PointSlice(0, 0, 2), PointSlice(1, 2, 2), PointSlice(2, 4, 1))


@pytest.mark.parametrize(
    ("max_gap", "expected"),
    [
        (0, [(H, 0, 1), (H, 3, 1)]),
        (1, [(H, 0, 1), (H, 3, 1)]),
        (2, [(H, 0, 4)]),
        (10, [(H, 0, 4)]),
    ],
)
def test_bridges_gaps_up_to_max_gap(max_gap, expected):
    assert shape(plan_reads([Span(H, 0, 1), Span(H, 3, 1)], max_gap=max_gap)) == expected


def test_default_gap_is_small():
    assert shape(plan_reads([Span(H, 0, 1), Span(H, 5, 1)])) == [(H, 0, 6)]
    assert shape(plan_reads([Span(H, 0, 1), Span(H, 6, 1)])) == [(H, 0, 1), (H, 6, 1)]


def test_splits_at_125_registers():
    spans = [Span(H, a, 1) for a in range(130)]
    assert shape(plan_reads(spans)) == [(H, 0, 125), (H, 125, 5)]


def test_never_splits_a_multi_register_point():
    spans = [Span(H, 0, 2), Span(H, 2, 2), Span(H, 4, 2)]
    assert shape(plan_reads(spans, max_registers=3)) == [(H, 0, 2), (H, 2, 2), (H, 4, 2)]
    assert shape(plan_reads(spans, max_registers=4)) == [(H, 0, 4), (H, 4, 2)]


def test_tables_are_planned_separately_in_order_of_appearance():
    spans = [Span(IN, 0, 1), Span(H, 0, 2), Span(IN, 1, 1), Span(H, 2, 2)]
    requests = plan_reads(spans)
    assert shape(requests) == [(IN, 0, 2), (H, 0, 4)]
    assert [s.point for s in requests[0].slices] == [0, 2]
    assert [s.point for s in requests[1].slices] == [1, 3]


def test_overlapping_and_repeated_points_share_registers():
    spans = [Span(H, 0, 2), Span(H, 1, 1), Span(H, 0, 2)]
    (request,) = plan_reads(spans, max_gap=0)
    assert (request.address, request.count) == (0, 2)
    assert sorted(request.slices, key=lambda s: s.point) == [
        PointSlice(0, 0, 2), PointSlice(1, 1, 1), PointSlice(2, 0, 2),
    ]  # fmt: skip


def test_unsorted_points_keep_their_indices():
    spans = [Span(H, 10, 1), Span(H, 0, 1), Span(H, 5, 2)]
    requests = plan_reads(spans, max_gap=0)
    assert shape(requests) == [(H, 0, 1), (H, 5, 2), (H, 10, 1)]
    assert [r.slices[0].point for r in requests] == [1, 2, 0]


def test_no_points_no_requests():
    assert plan_reads([]) == []


@pytest.mark.parametrize(
    ("spans", "kwargs", "message"),
    [
        ([Span(H, 0, 1)], {"max_registers": 0}, "max_registers"),
        ([Span(H, 0, 1)], {"max_registers": 126}, "max_registers"),
        ([Span(H, 0, 1)], {"max_gap": -1}, "max_gap"),
        ([Span(H, 0, 0)], {}, "count 0"),
        ([Span(H, 0, 4)], {"max_registers": 3}, "more than 3 per read"),
    ],
)
def test_refuses_impossible_plans(spans, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_reads(spans, **kwargs)


@pytest.mark.parametrize("seed", range(20))
def test_every_point_is_read_exactly_once_within_limits(seed):
    rng = random.Random(seed)
    spans = [
        Span(rng.choice([H, IN]), rng.randrange(0, 400), rng.choice([1, 2]))
        for _ in range(rng.randrange(1, 80))
    ]
    max_registers = rng.randrange(2, 126)
    max_gap = rng.randrange(0, 12)
    requests = plan_reads(spans, max_registers=max_registers, max_gap=max_gap)

    seen = sorted(s.point for r in requests for s in r.slices)
    assert seen == list(range(len(spans)))
    for request in requests:
        assert 1 <= request.count <= max_registers
        for piece in request.slices:
            span = spans[piece.point]
            assert span.table == request.table
            assert request.address + piece.offset == span.address
            assert piece.count == span.count
            assert piece.offset + piece.count <= request.count
    # Neighbouring reads of one table are merged unless a limit forbids it.
    for table in (H, IN):
        mine = [r for r in requests if r.table == table]
        for a, b in itertools.pairwise(mine):
            first = spans[b.slices[0].point]
            first_end = first.address + first.count
            too_far = first.address - a.end > max_gap
            too_long = max(a.end, first_end) - a.address > max_registers
            assert too_far or too_long
