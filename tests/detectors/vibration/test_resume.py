"""After a restart, a bearing condition state.db holds active resumes in the detector: fresh
healthy blocks clear it, fresh faulty blocks do not raise it again."""

from __future__ import annotations

from gateway.core.interfaces import ResumableDetector, ResumedCondition
from gateway.core.records import FaultCode

from .test_detector import SHAFT, blocks, detector, feed

OUTER = ResumedCondition("pump-1", "vibration", FaultCode.BEARING_OUTER_RACE)


def test_a_resumed_fault_clears_on_fresh_healthy_blocks() -> None:
    det = detector(fixed_rpm=SHAFT * 60, rpm_tag=None)
    assert isinstance(det, ResumableDetector)
    det.resume([OUTER, ResumedCondition("pump-1", "other-detector", FaultCode.UNBALANCE)])
    out = feed(det, blocks("healthy", 3, 21))
    assert [(f.fault_code, f.active) for f in out[2]] == [("bearing.outer_race", False)]
    assert out[0] == [] and out[1] == []


def test_a_resumed_fault_still_present_is_not_raised_again() -> None:
    det = detector(fixed_rpm=SHAFT * 60, rpm_tag=None)
    feed(det, blocks("healthy", 3, 22))  # the baseline, learnt before the restart
    det.resume([OUTER])
    out = feed(det, blocks("outer", 4, 23), t0=10)
    assert [f for block in out for f in block if f.fault_code == FaultCode.BEARING_OUTER_RACE] == []
