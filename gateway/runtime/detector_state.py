"""Learnt detector state (the vibration baseline) kept across restarts: restored before the
detectors see their first record, saved every minute and at stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from gateway.core.errors import StoreError
from gateway.core.interfaces import (
    Detector,
    ResumableDetector,
    ResumedCondition,
    SnapshottingDetector,
)
from gateway.core.records import FaultCode
from gateway.store.snapshots import DetectorSnapshots

log = logging.getLogger("gateway")

DETECTOR_STATE_PERIOD_S = 60.0


def restore_detector_state(detectors: Sequence[Detector], snapshots: DetectorSnapshots) -> None:
    """Learnt state (the vibration baseline) survives restarts, so it is not learnt again."""
    for detector in detectors:
        if isinstance(detector, SnapshottingDetector):
            state = snapshots.load(detector.name)
            if state is not None:
                detector.restore(state)
                log.info("Detector `%s` resumed from its saved state.", detector.name)


def resume_conditions(
    detectors: Sequence[Detector], conditions: Sequence[ResumedCondition]
) -> list[str]:
    """Tell every detector which of its asset's conditions were active at the last stop
    (`ResumableDetector`), so a restart neither leaves them stuck nor re-triggers them.
    Returns the names of detectors whose own failure (`detector.failed`) was active."""
    by_asset: dict[str, list[ResumedCondition]] = {}
    for condition in conditions:
        by_asset.setdefault(condition.asset, []).append(condition)
    for detector in detectors:
        if isinstance(detector, ResumableDetector) and detector.asset in by_asset:
            detector.resume(by_asset[detector.asset])
    return [c.detector for c in conditions if c.fault_code is FaultCode.DETECTOR_FAILED]


def save_detector_state(detectors: Sequence[Detector], snapshots: DetectorSnapshots) -> None:
    for detector in detectors:
        if isinstance(detector, SnapshottingDetector):
            try:
                snapshots.save(detector.name, detector.snapshot())
            except StoreError as exc:
                log.error("Detector `%s` state not saved: %s", detector.name, exc)


async def run_detector_state_saver(
    detectors: Sequence[Detector], snapshots: DetectorSnapshots
) -> None:
    while True:
        await asyncio.sleep(DETECTOR_STATE_PERIOD_S)
        await asyncio.to_thread(save_detector_state, detectors, snapshots)
