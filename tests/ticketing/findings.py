"""The over-temperature finding the ticketing tests raise and clear, in one place."""

from __future__ import annotations

from gateway.core.records import FaultCode, Finding, Priority


def hot(
    ts: float, active: bool = True, *, asset: str = "pump-1", detector: str = "threshold:hot"
) -> Finding:
    """A P2 `threshold.high` finding of `asset`: 85 while raised, 60 once cleared."""
    return Finding(
        asset=asset,
        fault_code=FaultCode.THRESHOLD_HIGH,
        severity=Priority.P2,
        score=1.0,
        detector=detector,
        message="hot",
        ts=ts,
        active=active,
        value=85.0 if active else 60.0,
    )
