"""ISO 10816-3 zone boundaries, Annex A tables."""

from __future__ import annotations

import pytest

from detectors.vibration import Foundation, MachineGroup, Zone, zone_for

G1, G2 = MachineGroup.LARGE, MachineGroup.MEDIUM
RIGID, FLEX = Foundation.RIGID, Foundation.FLEXIBLE


@pytest.mark.parametrize(
    ("group", "foundation", "ab", "bc", "cd"),
    [
        (G1, RIGID, 2.3, 4.5, 7.1),
        (G1, FLEX, 3.5, 7.1, 11.0),
        (G2, RIGID, 1.4, 2.8, 4.5),
        (G2, FLEX, 2.3, 4.5, 7.1),
    ],
)
def test_zone_boundaries(
    group: MachineGroup, foundation: Foundation, ab: float, bc: float, cd: float
) -> None:
    assert zone_for(ab - 0.01, group, foundation).zone is Zone.A
    assert zone_for(ab, group, foundation).zone is Zone.B  # a boundary belongs to the upper zone
    assert zone_for(bc - 0.01, group, foundation).zone is Zone.B
    assert zone_for(bc, group, foundation).zone is Zone.C
    assert zone_for(cd - 0.01, group, foundation).zone is Zone.C
    assert zone_for(cd, group, foundation).zone is Zone.D
    assert zone_for(0.0, group, foundation).zone is Zone.A
    assert zone_for(50.0, group, foundation).zone is Zone.D


def test_plain_values_are_accepted_for_group_and_foundation() -> None:
    sev = zone_for(3.0, 2, "flexible")
    assert (sev.zone, sev.group, sev.foundation) == (Zone.B, G2, FLEX)
    assert sev.to_dict()["boundaries_mm_s"] == [2.3, 4.5, 7.1]
