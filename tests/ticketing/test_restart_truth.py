"""A restart tells the truth (DESIGN.md section 9): a condition active when the gateway
stopped is resumed, its detector is told, and fresh data decides. Against the real state.db
and a real threshold detector, as the daemon wires them (`resume_conditions`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from detectors.threshold import ThresholdDetector
from gateway.core.clock import ManualClock
from gateway.core.records import Finding, Quality, Sample
from gateway.runtime.detector_state import resume_conditions
from gateway.ticketing.policy import AssetProfile
from gateway.ticketing.topology import Link
from tests.ticketing.restart import Gateway

T0 = 1_714_521_600.0
TAG = "pump-1.bearing_temp"
ASSETS = {"pump-1": AssetProfile("pump-1", "pump", area="utilities", tags=(TAG,))}


def detector() -> ThresholdDetector:
    """What the rule `hot: hi 80, deadband 2, off-delay 5 s` builds, fresh as after a start."""
    return ThresholdDetector(
        name="pump-1.hot",
        asset="pump-1",
        signal_tag=TAG,
        hi=80.0,
        deadband=2.0,
        off_delay_s=5.0,
        detector_id="threshold:hot",
    )


async def feed(gw: Gateway, rule: ThresholdDetector, values: list[float]) -> list[Finding]:
    """One sample a second from the gateway clock on, each through detector and ticketing."""
    out = []
    for value in values:
        gw.clock.advance(1.0)
        for finding in rule.update(Sample(TAG, gw.clock.now(), value)):
            out.append(finding)
            await gw.service.on_finding(finding)
    return out


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    gateway = Gateway(tmp_path / "state.db", ManualClock(T0), ASSETS)
    await gateway.boot()
    yield gateway
    await gateway.shutdown()


async def opened_then_restarted(gw: Gateway) -> tuple[str, ThresholdDetector]:
    rule = detector()
    await feed(gw, rule, [85.0, 86.0])
    (ticket,) = gw.service.open_tickets()
    await gw.restart()  # the detector's state is gone with the process
    fresh = detector()
    resume_conditions([fresh], gw.service.conditions_to_resume())
    return ticket.id, fresh


async def test_a_value_back_to_normal_during_the_gap_clears_after_the_off_delay(gw: Gateway):
    ticket_id, rule = await opened_then_restarted(gw)
    findings = await feed(gw, rule, [70.0] * 7)  # normal from the first fresh sample on
    assert [f.active for f in findings] == [False]
    assert findings[0].ts - (T0 + 3.0) >= 5.0  # the off-delay ran on fresh data
    kinds = await gw.kinds(ticket_id)
    assert kinds == ["opened", "condition_cleared"]
    (ticket,) = gw.service.open_tickets()
    assert ticket.condition_active is False


async def test_a_fault_still_there_after_the_restart_is_not_a_re_trigger(gw: Gateway):
    ticket_id, rule = await opened_then_restarted(gw)
    await feed(gw, rule, [87.0] * 10)
    assert await gw.kinds(ticket_id) == ["opened"]
    (ticket,) = gw.service.open_tickets()
    assert ticket.condition_active and ticket.occurrences == 1
    # ... and when it does go away later, the clear is reported once.
    await feed(gw, rule, [70.0] * 7)
    assert await gw.kinds(ticket_id) == ["opened", "condition_cleared"]


async def test_a_condition_cleared_before_the_stop_is_not_resumed(gw: Gateway):
    rule = detector()
    await feed(gw, rule, [85.0] + [70.0] * 7)
    await gw.restart()
    assert gw.service.conditions_to_resume() == []


LINK = Link("modbus-tcp-10.0.0.5-502", "modbus_tcp", frozenset({"pump-1"}), frozenset({TAG}))


async def test_a_link_that_came_back_during_the_gap_reports_its_restoration(tmp_path: Path):
    gw = Gateway(tmp_path / "state.db", ManualClock(T0), ASSETS, links=[LINK])
    await gw.boot()
    try:
        await gw.service.observe_samples([Sample(TAG, T0 + 1, None, Quality.BAD, "refused")])
        (ticket,) = gw.service.open_tickets()
        assert (ticket.asset, ticket.fault_code) == (LINK.id, "comm.lost")
        await gw.restart()
        await gw.service.observe_samples([Sample(TAG, T0 + 30, 61.0)])
        assert await gw.kinds(ticket.id) == ["opened", "condition_cleared"]
    finally:
        await gw.shutdown()
