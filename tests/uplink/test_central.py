"""The simulated central ticket system: what the planner reads, dedup, bad input."""

import asyncio
import io
import json

import numpy as np
import pytest

from gateway.core.records import Priority
from simulator.central import CentralSystem, ReceivedTicketEvent, format_work_order
from tests.uplink.helpers import GATEWAY, SITE, TOPICS, eventually, make_event, make_ticket, running
from uplink.events import make_ticket_encoder, source_urn
from uplink.mqtt import LinkSettings, MqttLink, OutgoingMessage


def test_work_order_block_reads_like_a_planners_view():
    encode = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), lambda: 1, lambda: "e-1")
    ticket = make_ticket(occurrences=4, priority=Priority.P1)
    data = json.loads(encode(ticket, make_event()).payload)["data"]
    block = format_work_order(
        ReceivedTicketEvent("e-1", "opened", "1", TOPICS.tickets_opened, "T-1", "WO-1001", data)
    )
    assert block.splitlines() == [
        "=== WO-1001  P1  NEW WORK ORDER ===",
        "  Asset:       pump-1  (site plant-a, gateway gw-1)",
        "  Fault:       threshold.high  [ISO 14224 HIO]  detected by bearing_temp_hi",
        "  Message:     Bearing temperature 92.5 °C is above the hi limit of 85 °C.",
        "  Seen:        4 time(s), first 2023-11-14T22:13:15.000Z, last 2023-11-14T22:13:20.000Z,"
        " peak 92.5 °C; condition active",
        "  Evidence:    limit=85, value=92.5, unit=°C",
        "  Edge ticket: T-1 rev 1 (event e-1)",
    ]


@pytest.mark.broker
async def test_central_dedups_by_id_keeps_one_work_order_per_ticket_and_skips_garbage(mosquitto):
    printed = io.StringIO()
    central = CentralSystem(
        "127.0.0.1", mosquitto.port, "factory", SITE, GATEWAY, ack=False, output=printed
    )
    encode = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), iter(range(1, 99)).__next__)
    opened = encode(make_ticket("T-1"), make_event("opened"))
    updated = encode(make_ticket("T-1", revision=2), make_event("updated", revision=2))
    other = encode(make_ticket("T-2"), make_event("opened", "T-2"))
    sender = MqttLink(LinkSettings("127.0.0.1", mosquitto.port, "fake-gateway"))

    async with running(central.run_central(), "central"), sender:
        async with asyncio.timeout(10):
            await central.wait_connected()
            await sender.wait_connected()
        for message in (opened, opened, updated, other):
            await sender.publish(OutgoingMessage(message.topic, message.payload))
        await sender.publish(OutgoingMessage(TOPICS.tickets_updated, b"not an event"))
        await eventually(lambda: central.statistics().malformed == 1)

    stats = central.statistics()
    assert (stats.tickets_seen, stats.updates, stats.duplicates_dropped) == (2, 1, 1)
    assert stats.acks_sent == 0  # ack=False
    assert central.work_orders == {"T-1": "WO-1001", "T-2": "WO-1002"}
    assert [e.kind for e in central.received] == ["opened", "updated", "opened"]
    assert printed.getvalue().count("=== WO-") == 3


def test_work_order_shows_deadlines_routing_and_recommended_actions():
    data = {
        "priority": "P2", "asset": "pump-1", "site": "plant-a", "gateway": "edge-01",
        "fault_code": "bearing.outer_race", "iso14224_failure_mode": "VIB",
        "detector": "pump-1-vib.de_bearing", "message": "Outer-race defect.", "occurrences": 1,
        "first_seen": "t0", "last_seen": "t1", "peak_value": 0.5, "condition_active": True,
        "evidence": {}, "revision": 1, "respond_by": "2026-11-22T03:15:00Z",
        "resolve_by": "2026-11-22T05:00:00Z", "routing": {"area": "utilities", "skill": ""},
        "knowledge": [{"actions": ["Check lubrication.", "Plan a bearing replacement."]}],
    }  # fmt: skip
    text = format_work_order(
        ReceivedTicketEvent("e1", "opened", "1", "t", "T-1", "WO-1001", data)
    )
    assert "Respond by:  2026-11-22T03:15:00Z; resolve by 2026-11-22T05:00:00Z" in text
    assert "Route to:    area utilities" in text
    assert "Action:      Check lubrication." in text and "Plan a bearing replacement." in text


def vibration_ticket_block() -> tuple[str, list[str]]:
    """The work order of a real outer-race ticket: the detector's finding on the vendored CWRU
    excerpt, through the ticket encoder, as the central system prints it."""
    from detectors.vibration import BearingCatalogue, VibrationDetector
    from gateway.core.records import Waveform
    from gateway.ticketing.tickets import evidence_of
    from tests.detectors.vibration.recordings_support import EXCERPTS

    with np.load(EXCERPTS / "cwru_or007_6_130_de.npz") as z:
        x, fs, rpm = z["signal"].astype(np.float64), float(z["fs"]), float(z["rpm"])
    det = VibrationDetector(
        asset="pump-1", tag_id="pump-1.de_accel", geometry=BearingCatalogue.load().get("6205"),
        fixed_rpm=rpm,
    )  # fmt: skip
    block = 16384
    findings = [
        f
        for i in range(x.size // block)
        for f in det.update(Waveform("pump-1.de_accel", i * block / fs, fs, x[i * block :][:block]))
    ]
    (finding,) = [f for f in findings if f.active]
    ticket = make_ticket(
        fault_code=finding.fault_code, detector=finding.detector, message=finding.message,
        evidence=evidence_of(finding), peak_value=finding.value,
    )  # fmt: skip
    encode = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), lambda: 1, lambda: "e-1")
    data = json.loads(encode(ticket, make_event()).payload)["data"]
    block = format_work_order(
        ReceivedTicketEvent("e-1", "opened", "1", TOPICS.tickets_opened, "T-1", "WO-1001", data)
    )
    return block, list(finding.evidence["readout"])


def test_vibration_work_order_reads_as_sentences_with_units_never_a_structure() -> None:
    block, readout = vibration_ticket_block()
    lines = block.splitlines()
    evidence = lines[lines.index(next(ln for ln in lines if ln.startswith("  Evidence:"))) :]
    text = " ".join(ln.strip() for ln in evidence)
    assert "Matched line: BPFO fitted at 107.7 Hz, 0.3 % above the kinematic 107.3 Hz" in text
    assert "Harmonics that decided (level above the envelope floor): 1x at 107.7 Hz" in text
    assert "Speed used: 1796 rpm (29.93 Hz, configured fixed speed)." in text
    assert "Envelope band: 3000-6000 Hz" in text and "What to check: Check the outer race" in text
    message = next(i for i, ln in enumerate(lines) if ln.startswith("  Message:"))
    for line in lines[message:]:
        assert not any(ch in line for ch in "{}[]"), line  # no Python structure printed
    for line in [ln for ln in lines if not ln.startswith(("  Seen:", "  Edge ticket:"))]:
        assert len(line) <= 100 or " " not in line.strip(), line
    assert "peak 0.1841 mm/s; condition active" in block
    # Wrapped at word boundaries: every word of the readout is printed whole, in order.
    printed = text.replace("Evidence: ", "", 1).split()
    assert printed[: len(" ".join(readout).split())] == " ".join(readout).split()


def test_plain_evidence_values_carry_units_and_structures_are_named_not_dumped() -> None:
    data = {
        "priority": "P2", "asset": "pump-1", "fault_code": "vibration.severity",
        "message": "Vibration on `pump-1` at 5.10 mm/s RMS is in ISO 10816-3 zone D.",
        "evidence": {"velocity_rms_mm_s": 5.1, "speed_rpm": 2950.0, "zone": "D",
                     "features": {"kurtosis": 3.1}, "top_peaks": [{"freq_hz": 49.2}]},
    }  # fmt: skip
    text = format_work_order(ReceivedTicketEvent("e", "opened", "1", "t", "T", "WO-1", data))
    assert "velocity_rms_mm_s=5.1 mm/s, speed_rpm=2950 rpm, zone=D" in text
    assert "in the ticket's data: features, top_peaks" in " ".join(text.split())
    evidence = text[text.index("Evidence:") :]
    assert "{" not in evidence and "[" not in evidence
