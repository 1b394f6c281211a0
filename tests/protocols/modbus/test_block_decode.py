"""A poll of plain 16-bit points decoded as whole answers (`PointDecoder` block path): the
same samples, in point order, as the point-by-point decoding gives, and its BAD samples when
an answer is unusual."""

from __future__ import annotations

import pytest

from gateway.core.clock import ManualClock
from gateway.core.records import Quality, Sample, Tag, good_samples
from protocols.modbus.config import ModbusLimits, ModbusPoint
from protocols.modbus.points import PointDecoder, plan_for
from tests.support.modbus import point

LIMITS = ModbusLimits()


def decoder(points: list[ModbusPoint]) -> tuple[PointDecoder, ManualClock]:
    clock = ManualClock()
    tags = [Tag(id=f"press-3.{p.name}", asset="press-3") for p in points]
    return PointDecoder(points, tags, plan_for(points, LIMITS), clock), clock


def answers_for(dec: PointDecoder, registers: dict[int, int]) -> list[list[int] | str]:
    plan = plan_for(dec._points, LIMITS)
    return [
        [registers.get(a, 0) for a in range(r.address, r.address + r.count)]
        for r in plan.scalar_requests
    ]


def point_by_point(dec: PointDecoder, answers: list[list[int] | str]) -> list[object]:
    blocks, dec._blocks = dec._blocks, None
    try:
        return dec.records(answers, [])
    finally:
        dec._blocks = blocks


def test_scaled_unsigned_and_signed_points_give_their_engineering_values_in_point_order() -> None:
    points = [
        point(name="b", address=7, type="int16", scale=0.5, offset=-1.0),
        point(name="a", address=0, type="uint16", scale=0.1),
        point(name="c", address=1, type="uint16", scale=2.0, offset=3.0),
        point(name="d", address=9, type="int16"),  # a gap of one register before it
    ]
    dec, clock = decoder(points)
    assert dec._blocks is not None  # the block path is taken for such a device
    registers = {0: 1234, 1: 65535, 7: 0xFFFE, 9: 0x8000}
    records = dec.records(answers_for(dec, registers), [])
    ts = clock.now()
    assert records == [
        Sample("press-3.b", ts, -2 * 0.5 - 1.0),
        Sample("press-3.a", ts, 1234 * 0.1),
        Sample("press-3.c", ts, 65535 * 2.0 + 3.0),
        Sample("press-3.d", ts, -32768.0),
    ]
    assert all(type(r.value) is float for r in records)


@pytest.mark.parametrize(
    "answer",
    [
        "Modbus exception 2 (illegal data address)",  # the request failed
        [1, 2],  # shorter than the points need
        [1, 70000, 3, 4],  # a word outside 0..65535
        [1, -1, 3, 4],
    ],
)
def test_an_unusual_answer_gives_the_point_by_point_samples(answer: list[int] | str) -> None:
    points = [point(name=f"r{i}", address=i, type="uint16", scale=0.1) for i in range(4)]
    dec, _ = decoder(points)
    records = dec.records([answer], [])
    assert records == point_by_point(dec, [answer])
    assert any(r.quality is Quality.BAD for r in records)


def test_points_the_block_path_does_not_serve_are_decoded_point_by_point() -> None:
    points = [
        point(name="a", address=0, type="uint16"),
        point(name="f", address=1, type="float32"),
    ]
    dec, _ = decoder(points)
    assert dec._blocks is None
    deadbanded = [point(name="a", address=0, type="uint16", deadband=1.0)]
    assert decoder(deadbanded)[0]._blocks is None
    huge = [point(name="a", address=0, type="uint16", scale=1e308)]  # inf for large words
    dec, _ = decoder(huge)
    assert dec._blocks is None
    assert dec.records([[65535]], [])[0].quality is Quality.BAD


def test_good_samples_are_the_samples_the_constructor_makes() -> None:
    tags, values = ["a.x", "a.y", "a.z"], [1.0, -0.0, 2.5]
    made = good_samples(tags, 5.0, values)
    assert made == [Sample(tag, 5.0, value) for tag, value in zip(tags, values, strict=True)]
    with pytest.raises(ValueError, match="3 tags but 2 values"):
        good_samples(tags, 5.0, values[:2])
    with pytest.raises(AttributeError):
        made[0].value = 3.0  # type: ignore[misc]  # still frozen
