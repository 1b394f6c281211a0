"""Learnt detector state (the vibration baseline) kept across restarts: restored before the
detectors see their first record, saved every minute and at stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from gateway.core.errors import StoreError
from gateway.core.interfaces import Detector, SnapshottingDetector
from gateway.store.snapshots import DetectorSnapshots

log = logging.getLogger("gateway")

DETECTOR_STATE_PERIOD_S = 60.0


def restore_detector_state(detectors: Sequence[Detector], snapshots: DetectorSnapshots) -> None:
    """Learnt state (the vibration baseline) survives restarts (issue 4)."""
    for detector in detectors:
        if isinstance(detector, SnapshottingDetector):
            state = snapshots.load(detector.name)
            if state is not None:
                detector.restore(state)
                log.info("Detector `%s` resumed from its saved state.", detector.name)


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
