"""Verification after repair of a vibration ticket (issue 5): the vibration features the
detector derives per waveform (`<waveform tag>.<feature>`) are related tags of the asset, so
the ticket's pre-fault baseline holds them and the verification compares them before/after.
The asset profile is built from the example config by the app, as in production."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detectors.vibration.detector import SAMPLE_FEATURES as VIBRATION_FEATURES
from gateway.assembly.detectors import build_detectors
from gateway.assembly.plant import configured_devices
from gateway.assembly.ticketing import asset_profiles
from gateway.config.loader import load_config
from gateway.core.clock import ManualClock
from gateway.core.records import FaultCode, Finding, Priority, Sample, TicketState
from gateway.ticketing.evidence import Tolerance, compare_to_baseline
from gateway.ticketing.policy import AssetProfile
from gateway.ticketing.verification import tolerance_for
from tests.ticketing.policies import default_policy
from tests.ticketing.restart import Gateway

T0 = 1_714_521_600.0
CONFIG = Path(__file__).resolve().parents[2] / "configs"
WAVEFORM = "pump-1-vib.vib_de"
HEALTHY = {
    "velocity_rms_mm_s": 1.2,
    "accel_rms_g": 0.05,
    "accel_peak_g": 0.17,
    "crest_factor": 3.4,
    "kurtosis": 3.0,
}
FAULTY = {
    "velocity_rms_mm_s": 4.6,
    "accel_rms_g": 0.21,
    "accel_peak_g": 1.3,
    "crest_factor": 6.2,
    "kurtosis": 7.5,
}
# After a good repair: within the tolerances, some features quieter than before the fault.
REPAIRED = {
    "velocity_rms_mm_s": 1.3,
    "accel_rms_g": 0.06,
    "accel_peak_g": 0.15,
    "crest_factor": 2.9,
    "kurtosis": 2.8,
}
# After a repair that did not fix it: velocity and the impact features still up.
STILL_BAD = {
    "velocity_rms_mm_s": 2.1,
    "accel_rms_g": 0.09,
    "accel_peak_g": 0.45,
    "crest_factor": 5.0,
    "kurtosis": 5.2,
}


def site_profiles() -> dict[str, AssetProfile]:
    loaded = load_config(CONFIG)
    devices = configured_devices(loaded.devices, loaded.protocols)
    return asset_profiles(devices, build_detectors(devices, loaded.rules))


def test_the_profile_built_from_config_holds_the_features_of_each_vibration_rule():
    profile = site_profiles()["pump-1"]
    features = [t for t in profile.tags if t.startswith(f"{WAVEFORM}.")]
    assert features == [f"{WAVEFORM}.{f}" for f in VIBRATION_FEATURES]
    assert "pump-1-vib.speed" in profile.tags and "pump-1.bearing_temp" in profile.tags
    assert WAVEFORM not in profile.tags  # the raw waveform is never a related tag


def test_the_rise_floors_are_declared_for_exactly_the_features_the_detector_emits():
    floors = site_profiles()["pump-1"].rise_floors
    assert set(floors) == {f"{WAVEFORM}.{f}" for f in VIBRATION_FEATURES}
    assert floors[f"{WAVEFORM}.velocity_rms_mm_s"] == 0.3  # mm/s, under the 0.7 mm/s zone step


@pytest.mark.parametrize(
    ("tag", "before", "after", "within"),
    [
        (f"{WAVEFORM}.velocity_rms_mm_s", 1.2, 1.37, True),  # +14 %
        (f"{WAVEFORM}.velocity_rms_mm_s", 1.2, 1.5, False),  # +0.3 mm/s, +25 %
        (f"{WAVEFORM}.velocity_rms_mm_s", 1.2, 0.4, True),  # quieter than before: no fault
        (f"{WAVEFORM}.velocity_rms_mm_s", 0.5, 0.79, True),  # small baseline: 0.3 mm/s floor
        (f"{WAVEFORM}.accel_rms_g", 0.05, 0.069, True),  # floor 0.02 g
        (f"{WAVEFORM}.accel_rms_g", 0.05, 0.08, False),
        (f"{WAVEFORM}.kurtosis", 3.0, 3.5, True),  # floor 0.5
        (f"{WAVEFORM}.kurtosis", 3.0, 4.0, False),
        (f"{WAVEFORM}.crest_factor", 3.4, 4.0, False),  # +0.6 over max(0.51, 0.3)
        ("pump-1.bearing_temp", 60.0, 45.0, False),  # scalar tags: either way, as before
        ("pump-1.bearing_temp", 60.0, 68.0, True),
        ("pump-1.run_state", 0.0, 0.1, True),  # scalar floor of 0.15 units
    ],
)
def test_tolerance_per_tag(tag: str, before: float, after: float, within: bool):
    floors = site_profiles()["pump-1"].rise_floors
    passed, figures = compare_to_baseline(
        {tag: before}, {tag: after}, lambda t: tolerance_for(t, 0.15, floors)
    )
    assert passed is within
    assert figures[tag] == {"before": before, "after": after, "within": within}


def test_a_plain_tolerance_keeps_the_old_rule():
    assert compare_to_baseline({"a": 10.0}, {"a": 8.4}, 0.15)[0] is False
    assert Tolerance(0.15, 0.15).within(10.0, 8.6)


def features(values: dict[str, float], ts: float) -> list[Sample]:
    return [Sample(f"{WAVEFORM}.{name}", ts, value) for name, value in values.items()]


class Pump:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def run(self, seconds: int, values: dict[str, float]) -> None:
        """A feature block every 30 s, as the detector emits them, with the shaft turning."""
        for _ in range(seconds // 30):
            self.gw.clock.advance(30)
            now = self.gw.clock.now()
            samples = [*features(values, now), Sample("pump-1-vib.speed", now, 1480.0)]
            await self.gw.service.observe_samples(samples)

    async def fault(self, active: bool = True) -> None:
        await self.gw.service.on_finding(
            Finding(
                asset="pump-1",
                fault_code=FaultCode.BEARING_OUTER_RACE,
                severity=Priority.P2,
                score=0.9,
                detector="pump-1-vib.de_bearing",
                message="BPFO with harmonics and sidebands; zone C.",
                ts=self.gw.clock.now(),
                active=active,
                signal=WAVEFORM,
                value=FAULTY["velocity_rms_mm_s"] if active else HEALTHY["velocity_rms_mm_s"],
            )
        )


@pytest.fixture
async def pump(tmp_path: Path):
    profiles = site_profiles()
    policy = default_policy(verification_window_s=600.0)
    gw = Gateway(tmp_path / "state.db", ManualClock(T0), profiles, policy)
    await gw.boot()
    yield Pump(gw)
    await gw.shutdown()


async def repaired_ticket(pump: Pump) -> str:
    """Healthy for 5 min, then the fault (with elevated features), then the repair."""
    await pump.run(300, HEALTHY)
    pump.gw.clock.advance(1)
    await pump.fault()
    (ticket,) = pump.gw.service.open_tickets()
    baseline = ticket.attributes["baseline"]
    for name, value in HEALTHY.items():
        assert baseline[f"{WAVEFORM}.{name}"] == pytest.approx(value)
    await pump.run(120, FAULTY)
    await pump.fault(active=False)
    reply = await pump.gw.command(
        "close",
        "c-1",
        ticket_id=ticket.id,
        resolution="bearing replaced",
        cause_code="3.4",
        remedy_code="2",
        repaired=True,
    )
    assert reply.accepted and reply.detail["state"] == "VERIFYING"
    return ticket.id


async def verified_payload(pump: Pump, ticket_id: str) -> dict:
    """The `verified` message as the central system receives it (CloudEvents data)."""
    messages = await pump.gw.db.outbox.unsettled(1000)
    for item in messages:
        data = json.loads(item.payload)["data"]
        if item.ticket_id == ticket_id and data.get("change", {}).get("result"):
            return data
    raise AssertionError("no verified message")


async def test_healthy_features_after_the_repair_pass_and_close_the_ticket(pump: Pump):
    ticket_id = await repaired_ticket(pump)
    await pump.run(630, REPAIRED)
    ticket = await pump.gw.db.tickets.get_ticket(ticket_id)
    # Issue 13: verified, then the edge waits for the sign-off; it never closes by itself.
    assert ticket is not None and ticket.state is TicketState.VERIFIED
    data = await verified_payload(pump, ticket_id)
    assert data["change"]["result"] == "pass"
    figures = data["change"]["figures"]
    for name in VIBRATION_FEATURES:
        figure = figures[f"{WAVEFORM}.{name}"]
        assert (figure["before"], figure["after"]) == (HEALTHY[name], REPAIRED[name])
        assert figure["within"] is True
    print("pass figures:", {k.rsplit(".", 1)[-1]: v for k, v in figures.items()})


async def test_elevated_features_after_the_repair_fail_and_reopen_it(pump: Pump):
    ticket_id = await repaired_ticket(pump)
    await pump.run(630, STILL_BAD)
    (ticket,) = pump.gw.service.open_tickets()
    assert ticket.id == ticket_id and ticket.state is TicketState.REOPENED
    kinds = [e.kind for e in await pump.gw.db.tickets.ticket_events(ticket_id)]
    assert kinds[-4:] == ["repaired", "verifying", "verified", "reopened"]
    data = await verified_payload(pump, ticket_id)
    assert data["change"]["result"] == "fail"
    assert data["change"]["running_s"] >= 600
    figures = data["change"]["figures"]
    failed = sorted(k.rsplit(".", 1)[-1] for k, f in figures.items() if not f["within"])
    assert failed == [
        "accel_peak_g",
        "accel_rms_g",
        "crest_factor",
        "kurtosis",
        "velocity_rms_mm_s",
    ]
    velocity = figures[f"{WAVEFORM}.velocity_rms_mm_s"]
    assert (velocity["before"], velocity["after"]) == (1.2, 2.1)
    assert figures["pump-1-vib.speed"]["within"] is True  # the shaft speed did not change
    print("fail figures:", {k.rsplit(".", 1)[-1]: v for k, v in figures.items()})
