"""Pure decoding: StatusCode -> quality, variant values -> records. No server needed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.core.records import Quality, Sample, Tag, TagKind, Waveform
from protocols.opcua.decode import (
    NodeReading,
    NotDecodable,
    sample_rate_of,
    scalar_record,
    scalar_value,
    waveform_data,
    waveform_record,
)
from protocols.opcua.quality import quality_of, status_label

GOOD = 0x0000_0000
GOOD_OVERFLOW = 0x0000_0480  # Good with info bits (overflow) in the low half
UNCERTAIN_LAST_USABLE = 0x4090_0000
BAD_SENSOR_FAILURE = 0x808B_0000
RESERVED_SEVERITY = 0xC000_0000

TAG = Tag(id="pump.temp", asset="pump", unit="degC")
WAVE_TAG = Tag(id="pump.vib", asset="pump", unit="g", kind=TagKind.WAVEFORM)


def reading(
    value: object, status: int = GOOD, name: str | None = "Good", **ts: float
) -> NodeReading:
    return NodeReading(value, status, name, ts.get("source"), ts.get("server"))


@pytest.mark.parametrize(
    ("status", "quality"),
    [
        (GOOD, Quality.GOOD),
        (GOOD_OVERFLOW, Quality.GOOD),
        (UNCERTAIN_LAST_USABLE, Quality.UNCERTAIN),
        (BAD_SENSOR_FAILURE, Quality.BAD),
        (RESERVED_SEVERITY, Quality.BAD),  # Part 4 7.39: treat 11 as Bad
    ],
)
def test_quality_follows_the_status_severity_bits(status: int, quality: Quality) -> None:
    assert quality_of(status) is quality


def test_status_label_falls_back_to_hex_of_the_code_without_info_bits() -> None:
    assert status_label(0x80AB_0012, None) == "0x80AB0000"
    assert status_label(BAD_SENSOR_FAILURE, "BadSensorFailure") == "BadSensorFailure"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, 1.0),
        (False, 0.0),
        (7, 7.0),
        (-2.5, -2.5),
        (np.float32(1.5), 1.5),
        (np.int16(-3), -3.0),
    ],
)
def test_scalar_value_accepts_numbers_and_booleans(raw: object, expected: float) -> None:
    assert scalar_value(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("41.5", "str is not a number"),
        (None, "no value"),
        ([1.0, 2.0], "list is not a number"),
        (math.nan, "not finite"),
        (math.inf, "not finite"),
    ],
)
def test_scalar_value_refuses_what_is_not_a_finite_number(raw: object, reason: str) -> None:
    with pytest.raises(NotDecodable, match=reason):
        scalar_value(raw)


def test_good_scalar_is_scaled_and_keeps_the_source_timestamp() -> None:
    sample = scalar_record(TAG, reading(20, source=100.0, server=101.0), 200.0, scale=0.5, offset=1)
    assert sample == Sample(
        tag="pump.temp", ts=200.0, value=11.0, quality=Quality.GOOD, source_ts=100.0
    )


def test_server_timestamp_stands_in_when_the_source_gives_none() -> None:
    sample = scalar_record(TAG, reading(1.0, server=101.0), 200.0)
    assert sample.source_ts == 101.0


def test_uncertain_value_is_kept_and_marked() -> None:
    sample = scalar_record(
        TAG, reading(3.0, UNCERTAIN_LAST_USABLE, "UncertainLastUsableValue"), 1.0
    )
    assert (sample.value, sample.quality) == (3.0, Quality.UNCERTAIN)


def test_bad_status_gives_a_bad_sample_named_after_the_status_never_the_value() -> None:
    sample = scalar_record(TAG, reading(99.0, BAD_SENSOR_FAILURE, "BadSensorFailure"), 1.0)
    assert sample.value is None
    assert sample.quality is Quality.BAD
    assert sample.reason == "BadSensorFailure"


def test_good_status_with_a_text_value_is_a_bad_sample_with_a_reason() -> None:
    sample = scalar_record(TAG, reading("overrange"), 1.0)
    assert (sample.value, sample.quality) == (None, Quality.BAD)
    assert sample.reason == "value of type str is not a number"


def test_array_becomes_a_waveform_with_rate_unit_and_scaling() -> None:
    record = waveform_record(WAVE_TAG, reading([0.0, 1.0, -1.0]), 12_800.0, 5.0, scale=2.0)
    assert isinstance(record, Waveform)
    assert record.sample_rate == 12_800.0
    assert record.unit == "g"
    np.testing.assert_array_equal(record.data, [0.0, 2.0, -2.0])
    assert record.data.dtype == np.float64


@pytest.mark.parametrize(
    ("raw", "rate", "status", "reason"),
    [
        ([1.0, 2.0], 100.0, BAD_SENSOR_FAILURE, "BadSensorFailure"),
        ([1.0, 2.0], None, GOOD, "sample rate None is not a positive number"),
        ([1.0, 2.0], 0.0, GOOD, "sample rate 0.0 is not a positive number"),
        (3.0, 100.0, GOOD, "float is not an array"),
        ([], 100.0, GOOD, "empty array"),
        ([1.0, math.nan], 100.0, GOOD, "non-finite"),
        ([[1.0], [2.0]], 100.0, GOOD, "2 dimensions"),
        (["a", "b"], 100.0, GOOD, "not numeric"),
    ],
)
def test_untrustworthy_waveform_is_a_bad_sample(
    raw: object, rate: float | None, status: int, reason: str
) -> None:
    name = "BadSensorFailure" if status == BAD_SENSOR_FAILURE else "Good"
    record = waveform_record(WAVE_TAG, reading(raw, status, name), rate, 1.0)
    assert isinstance(record, Sample)
    assert record.quality is Quality.BAD and record.value is None
    assert record.reason is not None and reason in record.reason


def test_waveform_data_refuses_bytes() -> None:
    with pytest.raises(NotDecodable):
        waveform_data(b"\x00\x01")


@pytest.mark.parametrize(
    ("raw", "status", "rate"),
    [
        (25_600.0, GOOD, 25_600.0),
        (0.0, GOOD, None),
        (-1.0, GOOD, None),
        (100.0, BAD_SENSOR_FAILURE, None),
    ],
)
def test_sample_rate_node_value_is_used_only_when_positive_and_not_bad(
    raw: object, status: int, rate: float | None
) -> None:
    assert sample_rate_of(reading(raw, status)) == rate


@pytest.mark.parametrize("raw", [["1.5", "2"], [b"1"], [1.0, "2"], [None, 1.0], [10**400]])
def test_an_array_that_is_not_all_numbers_is_not_a_waveform(raw: list[object]) -> None:
    # numpy would read text as numbers ("1.5" -> 1.5): a String[] node is no waveform.
    with pytest.raises(NotDecodable, match=r"not numeric|non-finite"):
        waveform_data(raw)


def test_a_value_that_overflows_when_scaled_is_a_bad_sample() -> None:
    sample = scalar_record(TAG, reading(1e300), 1.0, scale=1e10)
    assert sample.quality is Quality.BAD and sample.value is None
    assert sample.reason is not None and "not finite" in sample.reason
    record = waveform_record(WAVE_TAG, reading([1.0, 1e300]), 100.0, 1.0, scale=1e10)
    assert isinstance(record, Sample) and record.quality is Quality.BAD
    assert record.reason is not None and "non-finite" in record.reason
