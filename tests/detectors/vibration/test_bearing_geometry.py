"""Defect-frequency kinematics against published multipliers."""

from __future__ import annotations

import pytest

from detectors.vibration import BearingCatalogue, BearingGeometry, geometry_from_mapping


@pytest.fixture(scope="module")
def catalogue() -> BearingCatalogue:
    return BearingCatalogue.load()


def test_skf_6205_matches_cwru_published_multipliers(catalogue: BearingCatalogue) -> None:
    m = catalogue.get("6205").multipliers()
    assert m.bpfo == pytest.approx(3.5848, abs=5e-4)
    assert m.bpfi == pytest.approx(5.4152, abs=5e-4)
    assert m.ftf == pytest.approx(0.39828, abs=1e-4)
    assert 2 * m.bsf == pytest.approx(4.7135, abs=5e-4)  # CWRU "rolling element" = 2 x BSF
    assert m.bsf == pytest.approx(2.357, abs=1e-3)  # Smith & Randall (2015) Table 2


def test_skf_6203_matches_cwru_fan_end_multipliers(catalogue: BearingCatalogue) -> None:
    m = catalogue.get("SKF 6203").multipliers()
    assert m.bpfo == pytest.approx(3.0530, abs=5e-4)
    assert m.bpfi == pytest.approx(4.9469, abs=5e-4)
    assert m.ftf == pytest.approx(0.3817, abs=2e-4)
    assert m.bsf == pytest.approx(1.994, abs=1e-3)


def test_mfpt_nice_bearing_at_25_hz(catalogue: BearingCatalogue) -> None:
    f = catalogue.get("NICE").multipliers().at(25.0)
    assert f.bpfo == pytest.approx(81.1, abs=0.1)
    assert f.bpfi == pytest.approx(118.9, abs=0.1)
    assert f.ftf == pytest.approx(10.1, abs=0.1)
    assert f.bsf == pytest.approx(63.9, abs=0.1)


def test_rexnord_za2115_at_2000_rpm_matches_qiu_2006(catalogue: BearingCatalogue) -> None:
    f = catalogue.get("ZA-2115").multipliers().at(2000 / 60)
    assert f.bpfo == pytest.approx(236.4, abs=0.2)
    assert f.bpfi == pytest.approx(296.9, abs=0.2)
    assert f.ftf == pytest.approx(14.8, abs=0.1)
    assert f.bsf == pytest.approx(139.9, abs=0.2)


def test_ball_pass_frequencies_sum_to_ball_count() -> None:
    g = BearingGeometry(
        "x", balls=11, ball_diameter=10.0, pitch_diameter=50.0, contact_angle_deg=20
    )
    m = g.multipliers()
    assert m.bpfo + m.bpfi == pytest.approx(11.0)
    assert m.bpfo == pytest.approx(11 * m.ftf)


def test_geometry_given_directly() -> None:
    g = geometry_from_mapping(
        "mine", {"balls": 9, "ball_diameter_mm": 7.94, "pitch_diameter_mm": 39.04}
    )
    assert g.multipliers().bpfo == pytest.approx(3.585, abs=1e-3)
    with pytest.raises(ValueError, match="pitch_diameter_mm"):
        geometry_from_mapping("bad", {"balls": 9, "ball_diameter_mm": 7.94})


@pytest.mark.parametrize(
    ("balls", "d", "D", "angle"), [(2, 7.0, 39.0, 0.0), (9, 40.0, 39.0, 0.0), (9, 7.0, 39.0, 95.0)]
)
def test_impossible_geometry_is_refused(balls: int, d: float, D: float, angle: float) -> None:
    with pytest.raises(ValueError):
        BearingGeometry("bad", balls, d, D, angle)


def test_unknown_bearing_names_the_known_ones(catalogue: BearingCatalogue) -> None:
    with pytest.raises(KeyError, match="SKF-6205"):
        catalogue.get("6999")
