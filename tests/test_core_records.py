from gateway.core.records import Priority, Quality, Sample, TicketState, dedup_key


def test_priority_raised_one_step_and_stops_at_p0():
    assert Priority.P2.raised() is Priority.P1
    assert Priority.P0.raised() is Priority.P0
    assert Priority.most_urgent(Priority.P3, Priority.P1) is Priority.P1


def test_bad_sample_carries_no_value_and_a_reason():
    s = Sample.bad("pump-1.temp", 1.0, "connection refused")
    assert s.value is None and s.quality is Quality.BAD and s.reason == "connection refused"


def test_closed_and_cancelled_tickets_are_not_open():
    assert TicketState.ACKNOWLEDGED.is_open
    assert not TicketState.CLOSED.is_open and not TicketState.CANCELLED.is_open


def test_dedup_key_names_site_asset_fault_and_detector():
    assert dedup_key("s", "a", "threshold.high", "rule") == "s/a/threshold.high/rule"
