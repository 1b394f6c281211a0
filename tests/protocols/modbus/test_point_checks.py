"""Point checks check-config asks of the Modbus plugin (issue 15): overlapping points in one
table are errors, addresses that look like Modicon notation are warnings. Pure tables."""

from __future__ import annotations

import pytest

from protocols.modbus.points import modicon_like_addresses, overlapping_points
from tests.support.modbus import point


def _overlaps(*points: dict[str, object]) -> list[int]:
    return [index for index, _ in overlapping_points([point(**p) for p in points])]


@pytest.mark.parametrize(
    ("points", "overlapping"),
    [
        # float32 at 0 covers 0..1: a second one at 1 shares register 1.
        ([{"name": "a", "address": 0, "type": "float32"},
          {"name": "b", "address": 1, "type": "float32"}], [1]),
        # Adjacent is fine; so is the same address in another table.
        ([{"name": "a", "address": 0, "type": "float32"},
          {"name": "b", "address": 2, "type": "float32"},
          {"name": "c", "address": 0, "table": "input"}], []),
        # Reported at the point with the higher address, whatever the file order.
        ([{"name": "b", "address": 3}, {"name": "a", "address": 0, "type": "uint64"}], [0]),
        # A bit of a status word read whole is a view, not an overlap; the same bit twice is.
        ([{"name": "word", "address": 5}, {"name": "b0", "address": 5, "type": "bit", "bit": 0},
          {"name": "b1", "address": 5, "type": "bit", "bit": 1},
          {"name": "b1x", "address": 5, "type": "bit", "bit": 1}], [3]),
        # A string or a waveform block covers every register it reads.
        ([{"name": "serial", "address": 10, "type": "string", "length": 4},
          {"name": "n", "address": 13}], [1]),
        ([{"name": "wave", "address": 100, "type": "int16",
           "waveform": {"samples": 64, "sample_rate_hz": 1000}},
          {"name": "after", "address": 164}, {"name": "inside", "address": 163}], [2]),
        # Coils: one address, one point.
        ([{"name": "c1", "table": "coils", "address": 3, "type": "bit"},
          {"name": "c2", "table": "coils", "address": 3, "type": "bit"},
          {"name": "c3", "table": "coils", "address": 4, "type": "bit"}], [1]),
        # A point inside a long one is found even after a short one in between.
        ([{"name": "long", "address": 0, "type": "float64"}, {"name": "x", "address": 1},
          {"name": "y", "address": 3}], [1, 2]),
    ],
)  # fmt: skip
def test_overlapping_points(points: list[dict[str, object]], overlapping: list[int]) -> None:
    assert _overlaps(*points) == overlapping


def test_overlap_message_names_both_points_and_their_registers() -> None:
    [(index, message)] = overlapping_points(
        [point(name="t", address=0, type="float32"), point(name="p", address=1, type="float32")]
    )
    assert index == 1
    assert message.startswith("`p` (holding 1..2) overlaps `t` (holding 0..1, points.0)")


@pytest.mark.parametrize(
    ("table", "address", "advice"),
    [
        ("holding", 40001, "holding register 0 counted from 0, and addresses here are"
                           " zero-based, so write `address: 0`"),
        ("holding", 40101, "write `address: 100`"),
        ("input", 30010, "write `address: 9`"),
        ("discrete", 10005, "write `address: 4`"),
        ("holding", 30002, "write `table: input` and `address: 1`"),
        ("input", 49999, "write `table: holding` and `address: 9998`"),
    ],
)  # fmt: skip
def test_modicon_like_addresses_are_warned_with_the_zero_based_address(
    table: str, address: int, advice: str
) -> None:
    kind = "bit" if table == "discrete" else "uint16"
    [(index, message)] = modicon_like_addresses(
        [point(name="ok", address=12), point(name="m", table=table, address=address, type=kind)]
    )
    assert index == 1
    assert advice in message


def test_ordinary_and_sunspec_like_addresses() -> None:
    plain = [point(name=f"p{i}", address=a) for i, a in enumerate((0, 9999, 40000, 50000))]
    assert modicon_like_addresses(plain) == []  # 40000 is SunSpec's zero-based base
    several = [point(name=f"p{i}", address=40001 + i) for i in range(3)]
    [(index, message)] = modicon_like_addresses(several)
    assert index == 0 and "(`p0` and 2 more points)" in message
