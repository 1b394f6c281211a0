"""The pure ticket machine: open, enrich, clear, acknowledge."""

from __future__ import annotations

import math

import pytest

from gateway.core.records import FaultCode, Finding, Priority, TicketState
from gateway.ticketing import tickets
from gateway.ticketing.ids import TicketIds

T0 = 1_700_000_000.0


def finding(ts=T0, value=85.0, severity=Priority.P2, fault=FaultCode.THRESHOLD_HIGH, **kw):
    kw.setdefault("evidence", {"level": "high"})
    return Finding(
        asset="pump-1",
        fault_code=fault,
        severity=severity,
        score=5.0,
        detector="threshold:hot",
        message=f"value {value}",
        ts=ts,
        value=value,
        signal="pump-1.t",
        features={"value": value},
        **kw,
    )


def opened(f=None):
    return tickets.open_ticket("T-1", "k", "s", f or finding(), T0 + 0.5)


def test_open_ticket_starts_at_revision_one_with_the_finding():
    ticket, event = opened()
    assert (ticket.state, ticket.revision, ticket.occurrences) == (TicketState.OPENED, 1, 1)
    assert (ticket.priority, ticket.peak_value) == (Priority.P2, 85.0)
    assert ticket.condition_active
    assert (ticket.first_seen, ticket.last_seen, ticket.opened_at) == (T0, T0, T0 + 0.5)
    assert ticket.evidence["features"] == {"value": 85.0}
    assert ticket.evidence["level"] == "high" and ticket.evidence["signal"] == "pump-1.t"
    assert (event.kind, event.revision, event.ticket_id) == ("opened", 1, "T-1")


def test_new_occurrence_is_reported_with_the_next_revision():
    ticket, _ = opened()
    enriched, event = tickets.enrich(ticket, finding(T0 + 60, 90.0), new_occurrence=True)
    assert (enriched.occurrences, enriched.revision, enriched.last_seen) == (2, 2, T0 + 60)
    assert enriched.peak_value == 90.0 and enriched.first_seen == T0
    assert event is not None and event.kind == "updated" and event.revision == 2
    assert event.detail["reason"] == "retriggered" and event.detail["occurrences"] == 2


def test_escalation_within_an_episode_is_reported():
    ticket, _ = opened()
    enriched, event = tickets.enrich(
        ticket, finding(T0 + 1, 95.0, Priority.P1), new_occurrence=False
    )
    assert (enriched.priority, enriched.occurrences, enriched.revision) == (Priority.P1, 1, 2)
    assert event is not None
    assert event.detail["reason"] == "escalated" and event.detail["previous_priority"] == "P2"


def test_a_repeat_that_changes_nothing_urgent_is_folded_in_quietly():
    ticket, _ = opened()
    enriched, event = tickets.enrich(ticket, finding(T0 + 5, 88.0), new_occurrence=False)
    assert event is None
    assert (enriched.revision, enriched.peak_value, enriched.last_seen) == (1, 88.0, T0 + 5)


def test_priority_never_drops():
    ticket, _ = opened(finding(severity=Priority.P1))
    milder = finding(T0 + 60, severity=Priority.P3)
    enriched, _ = tickets.enrich(ticket, milder, new_occurrence=True)
    assert enriched.priority is Priority.P1


@pytest.mark.parametrize(
    ("fault", "peak", "value", "expected"),
    [
        (FaultCode.THRESHOLD_HIGH, 85.0, 90.0, 90.0),
        (FaultCode.THRESHOLD_HIGH, 85.0, 82.0, 85.0),
        (FaultCode.THRESHOLD_LOW, 9.0, 4.0, 4.0),
        (FaultCode.THRESHOLD_LOW, 4.0, 9.0, 4.0),
        (FaultCode.BEARING_OUTER_RACE, 3.0, 7.5, 7.5),
        (FaultCode.THRESHOLD_HIGH, None, 90.0, 90.0),
        (FaultCode.THRESHOLD_HIGH, 85.0, None, 85.0),
        (FaultCode.THRESHOLD_HIGH, 85.0, math.nan, 85.0),
    ],
)
def test_peak_keeps_the_value_in_the_direction_that_makes_the_fault_worse(
    fault, peak, value, expected
):
    assert tickets.more_extreme(fault, peak, value) == expected


def test_clear_keeps_the_ticket_open_and_reports_the_clearing_value():
    ticket, _ = opened()
    cleared, event = tickets.clear_condition(ticket, finding(T0 + 9, 70.0, active=False), T0 + 9)
    assert cleared.state is TicketState.OPENED and not cleared.condition_active
    assert (cleared.revision, event.kind, event.revision) == (2, "condition_cleared", 2)
    assert event.detail["value"] == 70.0 and event.detail["peak_value"] == 85.0


def test_acknowledge_once():
    ticket, _ = opened()
    acked, event = tickets.acknowledge(ticket, "WO-77", T0 + 3)
    assert event is not None
    assert (acked.state, acked.central_id, acked.acknowledged_at) == (
        TicketState.ACKNOWLEDGED, "WO-77", T0 + 3,
    )
    assert (event.kind, event.revision, event.detail["central_id"]) == ("acknowledged", 2, "WO-77")
    again, none = tickets.acknowledge(acked, "WO-78", T0 + 4)
    assert again is acked and none is None


def test_evidence_is_json_safe():
    f = finding(evidence={"peaks": [1.0, math.inf], "nested": {"x": math.nan}, "zone": "C"})
    evidence = tickets.evidence_of(f)
    assert evidence["peaks"] == [1.0, None] and evidence["nested"] == {"x": None}
    assert evidence["zone"] == "C"


def test_ticket_ids_count_per_utc_day():
    ids = TicketIds("plant1", "edge1")
    day = 1_714_521_600.0  # 2024-05-01T00:00:00Z
    assert ids.next_candidate(day) == "T-plant1-edge1-20240501-0001"
    assert ids.next_candidate(day + 3600) == "T-plant1-edge1-20240501-0002"
    assert ids.next_candidate(day + 86_400) == "T-plant1-edge1-20240502-0001"
