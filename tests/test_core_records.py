import dataclasses
import inspect

import pytest

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


def test_sample_constructor_takes_exactly_its_fields_in_order_with_their_defaults():
    """`Sample.__init__` is written by hand (for speed): it must stay the dataclass's own."""
    fields = dataclasses.fields(Sample)
    params = [p for p in inspect.signature(Sample.__init__).parameters.values()
              if p.name != "self" and not p.name.startswith("_")]  # fmt: skip
    assert [p.name for p in params] == [f.name for f in fields]
    for param, field in zip(params, fields, strict=True):
        unset = field.default is dataclasses.MISSING
        assert param.default == (inspect.Parameter.empty if unset else field.default), field.name
    sample = Sample("press.temp", 2.0, 61.5, Quality.UNCERTAIN, 1.5, "clamped")
    assert [getattr(sample, f.name) for f in fields] == [
        "press.temp", 2.0, 61.5, Quality.UNCERTAIN, 1.5, "clamped"
    ]
    assert sample == Sample(tag="press.temp", ts=2.0, value=61.5, quality=Quality.UNCERTAIN,
                            source_ts=1.5, reason="clamped")  # fmt: skip
    assert hash(sample) == hash(Sample("press.temp", 2.0, 61.5, Quality.UNCERTAIN, 1.5, "clamped"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.value = 0.0  # type: ignore[misc]
