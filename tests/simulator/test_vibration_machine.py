"""The simulator's vibration machines, proven against our own `VibrationDetector`.

Blocks are those the demo serves: 25.6 kHz, 16384 samples (0.64 s, 1.5625 Hz resolution) from a
2950 rpm pump (the speed of `simulator.pump`) on an SKF 6205. The running speed travels with
each block, as from a tachometer channel.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors.vibration import BearingCatalogue, VibrationDetector, Zone
from gateway.core.records import FaultCode, Finding, Waveform
from simulator.vibration import (
    FULL_SCALE_VELOCITY_MM_S,
    MEAN_SLIP,
    DefectOrders,
    FaultScenario,
    Resonance,
    VibrationMachine,
)

FS = 25600.0
BLOCK = 16384
SHAFT_HZ = 2950 / 60
TAG = "pump-1.de_accel"
CATALOGUE = BearingCatalogue.load()
BEARING = CATALOGUE.get("6205")
CONFIRM = 3


def machine(seed: int = 1, shaft_hz: float = SHAFT_HZ) -> VibrationMachine:
    return VibrationMachine(FS, BLOCK, shaft_hz, BEARING, seed=seed)


def detector() -> VibrationDetector:
    return VibrationDetector(
        asset="pump-1", tag_id=TAG, geometry=BEARING, confirm_blocks=CONFIRM, baseline_blocks=3
    )


def feed(det: VibrationDetector, m: VibrationMachine, blocks: int) -> list[list[Finding]]:
    out = []
    for _ in range(blocks):
        t = m.next_t
        data = m.next_block()
        out.append(det.update(Waveform(TAG, t, FS, data, running_speed_hz=m.speed_hz)))
    return out


def raised(per_block: list[list[Finding]]) -> dict[str, int]:
    """Fault code -> index of the block that raised it."""
    return {str(f.fault_code): i for i, fs in enumerate(per_block) for f in fs if f.active}


# -- the machine itself ------------------------------------------------------------------------


@pytest.mark.parametrize("name", CATALOGUE.names())
def test_defect_orders_equal_the_detector_kinematics(name: str) -> None:
    geometry = CATALOGUE.get(name)
    ours = DefectOrders.of(geometry)
    theirs = geometry.multipliers()
    for line in ("bpfo", "bpfi", "ftf", "bsf"):
        assert getattr(ours, line) == pytest.approx(getattr(theirs, line), rel=1e-12)


def test_same_seed_gives_the_same_blocks_and_another_seed_does_not() -> None:
    a, b, c = machine(seed=5), machine(seed=5), machine(seed=6)
    for m in (a, b, c):
        m.set_fault(FaultCode.BEARING_INNER_RACE, 0.1)
    first = [a.next_block() for _ in range(2)]
    second = [b.next_block() for _ in range(2)]
    assert all(np.array_equal(x, y) for x, y in zip(first, second, strict=True))
    assert a.speed_hz == b.speed_hz
    assert not np.allclose(first[1], c.next_block(a.block_seconds))


def test_blocks_are_in_g_with_a_wandering_speed_near_nominal() -> None:
    m = machine()
    speeds = []
    for _ in range(20):
        x = m.next_block()
        assert x.shape == (BLOCK,) and x.dtype == np.float64
        speeds.append(m.speed_hz)
    assert m.next_t == pytest.approx(20 * BLOCK / FS)
    assert max(abs(s / SHAFT_HZ - 1) for s in speeds) < 0.003
    assert np.ptp(speeds) > 0  # it does wander


def test_unbalance_severity_sets_the_velocity_the_detector_measures() -> None:
    m = machine()
    m.set_fault(FaultCode.UNBALANCE, 0.4)
    det = detector()
    feed(det, m, 2)
    assert det.last_diagnosis is not None
    expected = 0.4 * FULL_SCALE_VELOCITY_MM_S
    # The healthy residual 1x (0.45 mm/s) adds with a random phase.
    assert det.last_diagnosis.iso.velocity_rms_mm_s == pytest.approx(expected, abs=0.6)


def test_rejects_unknown_faults_and_impossible_settings() -> None:
    m = machine()
    with pytest.raises(ValueError, match="not simulated"):
        m.set_fault(FaultCode.SENSOR_STUCK, 0.5)
    with pytest.raises(ValueError, match="must not be negative"):
        m.set_growth(FaultCode.UNBALANCE, start_s=0, per_hour=-1)
    with pytest.raises(ValueError, match="Nyquist"):
        VibrationMachine(8000, 4096, SHAFT_HZ, BEARING, resonance=Resonance(freq_hz=5000))


def test_growth_follows_the_schedule_and_clearing_repairs() -> None:
    m = machine()
    m.set_growth(FaultCode.LOOSENESS, start_s=10, per_hour=360, initial=0.1, limit=0.5)
    assert m.severity(FaultCode.LOOSENESS, 9.9) == 0
    assert m.severity(FaultCode.LOOSENESS, 10) == pytest.approx(0.1)
    assert m.severity(FaultCode.LOOSENESS, 12) == pytest.approx(0.3)
    assert m.severity(FaultCode.LOOSENESS, 100) == pytest.approx(0.5)
    m.clear_fault(FaultCode.LOOSENESS)
    assert m.severity(FaultCode.LOOSENESS, 100) == 0


# -- against the detector --------------------------------------------------------------------


def test_healthy_machine_raises_nothing_over_30_blocks() -> None:
    det = detector()
    per_block = feed(det, machine(seed=3), 30)
    assert per_block == [[]] * 30
    assert det.baseline.learned
    assert det.last_diagnosis is not None
    assert det.last_diagnosis.iso.zone is Zone.A
    assert det.last_diagnosis.verdict == "normal"


DETECTED = [
    (FaultCode.UNBALANCE, 0.3),
    (FaultCode.MISALIGNMENT, 0.3),
    (FaultCode.LOOSENESS, 0.3),
    (FaultCode.BEARING_OUTER_RACE, 0.05),
    (FaultCode.BEARING_INNER_RACE, 0.05),
    (FaultCode.BEARING_ROLLING_ELEMENT, 0.05),
]
CAGE_MISS = pytest.param(
    FaultCode.BEARING_CAGE,
    0.1,
    marks=pytest.mark.xfail(
        strict=True,
        reason=(
            "detector: FTF (19.6 Hz at 2950 rpm, 9.8 Hz at 1480 rpm) +-3 % holds no line of "
            "the 1.5625 Hz spectrum, so the cage comb is not tested at this block length "
            "(the diagnosis notes it); seeds 0-4 x severity 0.05/0.1/0.3 at both speeds: cage "
            "found 0/30, and no other location called either (30/30)"
        ),
    ),
)


@pytest.mark.parametrize(("code", "severity"), [*DETECTED, CAGE_MISS])
def test_fault_is_confirmed_with_its_code_after_confirm_blocks(
    code: FaultCode, severity: float
) -> None:
    m = machine(seed=11)
    det = detector()
    healthy = feed(det, m, 3)
    assert healthy == [[]] * 3 and det.baseline.learned
    m.set_fault(code, severity)
    found = raised(feed(det, m, CONFIRM + 1))
    assert found.get(code) == CONFIRM - 1  # confirmed on the third faulty block, not before
    # Nothing else, except the ISO severity finding a strong machine fault brings along.
    assert set(found) - {code, FaultCode.VIBRATION_SEVERITY} == set()


@pytest.mark.parametrize("shaft_rpm", [2950, 1480])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_cage_fault_is_never_called_another_location(shaft_rpm: int, seed: int) -> None:
    # The cage's impacts fill the envelope with FTF harmonics; for the 6205, 6 x FTF lies
    # 1.4 % from BSF. A ball ticket here would send the technician to the wrong part.
    m = machine(seed=seed, shaft_hz=shaft_rpm / 60)
    det = detector()
    feed(det, m, 3)
    m.set_fault(FaultCode.BEARING_CAGE, 0.3)
    found = raised(feed(det, m, 2 * CONFIRM))
    assert set(found) <= {FaultCode.BEARING_CAGE.value}
    assert det.last_diagnosis is not None
    assert any("bearing.cage not tested" in note for note in det.last_diagnosis.notes)


def test_outer_race_evidence_names_the_slipping_bpfo() -> None:
    m = machine(seed=2)
    m.set_fault(FaultCode.BEARING_OUTER_RACE, 0.05)
    findings = [f for fs in feed(detector(), m, CONFIRM) for f in fs]
    (finding,) = findings
    matched = finding.evidence["matched"]
    bpfo = DefectOrders.of(BEARING).bpfo * SHAFT_HZ
    assert matched["defect_line"] == "BPFO"
    # The impacts come at BPFO less the mean slip: each harmonic line sits in a bin next to
    # it. (The comb's fitted fundamental, `matched_hz`, may be a bin further off.)
    df = FS / BLOCK
    lines = {line["line"]: line["freq_hz"] for line in matched["harmonic_lines"]}
    assert lines["1x"] == pytest.approx(bpfo * (1 - MEAN_SLIP), abs=df)
    assert matched["matched_hz"] == pytest.approx(bpfo * (1 - MEAN_SLIP), abs=2 * df)
    harmonic = max(int(h) for h in matched["harmonics"])
    assert harmonic >= 2
    # Random slip smears the higher harmonics: the detector searches 1 + h // 2 bins around h,
    # and never beyond h times the slip tolerance.
    expected = harmonic * bpfo * (1 - MEAN_SLIP)
    assert lines[f"{harmonic}x"] == pytest.approx(expected, abs=(1 + harmonic // 2) * df)
    assert abs(lines[f"{harmonic}x"] / (harmonic * bpfo) - 1) <= matched["tolerance_pct"] / 100


def test_growing_unbalance_walks_the_iso_zones_and_raises_severity() -> None:
    m = machine(seed=4)
    m.set_growth(FaultCode.UNBALANCE, start_s=0, per_hour=3600 * 0.01, limit=1.0)  # +0.01/s
    det = detector()
    zones: list[Zone] = []
    velocities: list[float] = []
    for t in (0.0, 15.0, 30.0, 45.0, 60.0, 90.0):
        for k in range(CONFIRM):
            t_block = t + k * m.block_seconds
            data = m.next_block(t_block)
            det.update(Waveform(TAG, t_block, FS, data, running_speed_hz=m.speed_hz))
        assert det.last_diagnosis is not None
        zones.append(det.last_diagnosis.iso.zone)
        velocities.append(det.last_diagnosis.iso.velocity_rms_mm_s)
    assert [z.rank for z in zones] == sorted(z.rank for z in zones)
    assert zones[0] is Zone.A and zones[-1] is Zone.D
    assert velocities == sorted(velocities)
    data = m.next_block(100.0)
    assert det.update(Waveform(TAG, 100.0, FS, data, running_speed_hz=m.speed_hz)) == []
    assert det.snapshot()["active"] == sorted(
        [FaultCode.UNBALANCE.value, FaultCode.VIBRATION_SEVERITY.value]
    )


def test_demo_scenario_stays_quiet_then_raises_the_outer_race() -> None:
    healthy_blocks = 12
    scenario = FaultScenario(
        healthy_s=healthy_blocks * BLOCK / FS, onset_severity=0.03, per_hour=36.0
    )
    m = scenario.apply(machine(seed=7))
    assert m.severity(scenario.fault, 100.0) == pytest.approx(scenario.severity_at(100.0))
    det = VibrationDetector(asset="pump-1", tag_id=TAG, geometry=BEARING)  # product defaults
    found = raised(feed(det, m, healthy_blocks + CONFIRM + 2))
    assert det.baseline.count == healthy_blocks  # learning stops when the fault is seen
    # The kurtogram band chosen on healthy noise is kept for a while; the whitened full band
    # still carries the fault, so confirmation is not delayed.
    assert found == {FaultCode.BEARING_OUTER_RACE.value: healthy_blocks + CONFIRM - 1}
