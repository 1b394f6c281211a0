"""Plain values read from a node -> gateway records. No asyncua here: tested with tables.

The driver hands over the variant's Python value, the StatusCode and the timestamps; this module
decides what the gateway may believe. A Bad status, a value of the wrong shape or a non-finite
number becomes a BAD sample with a reason, never a value (DESIGN.md section 9, "Bad input").
Scale and offset are the node's, as the Modbus driver applies its point's: records leave the
driver in engineering units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gateway.core.interfaces import Record
from gateway.core.records import Quality, Sample, Tag, Waveform
from protocols.opcua.quality import quality_of, status_label


@dataclass(frozen=True, slots=True)
class NodeReading:
    """One DataValue, already stripped of the library's types."""

    value: object
    status_code: int
    status_name: str | None
    source_ts: float | None
    server_ts: float | None
    data_type: str | None = None  # the variant's type name (Double, Int32...), for `probe`

    @property
    def best_ts(self) -> float | None:
        """SourceTimestamp, else ServerTimestamp: a server that does not stamp at the source
        still tells when it last saw the value (Part 4, 7.11)."""
        return self.source_ts if self.source_ts is not None else self.server_ts


class NotDecodable(ValueError):
    """A value that cannot be trusted as a number of the configured shape."""


def scalar_value(raw: object) -> float:
    """A finite float from a numeric or boolean variant value."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float | np.integer | np.floating):
        try:
            value = float(raw)
        except OverflowError:  # an integer beyond any double
            raise NotDecodable(f"value {raw} is out of range") from None
    elif raw is None:
        raise NotDecodable("no value")
    else:
        raise NotDecodable(f"value of type {type(raw).__name__} is not a number")
    if not math.isfinite(value):
        raise NotDecodable(f"value {value} is not finite")
    return value


def waveform_data(raw: object) -> np.ndarray:
    """A finite float64 array from an array variant value (a list of numbers or Booleans)."""
    if isinstance(raw, bytes | bytearray | str) or not isinstance(raw, Sequence | np.ndarray):
        raise NotDecodable(f"value of type {type(raw).__name__} is not an array")
    if len(raw) == 0:
        raise NotDecodable("empty array")
    try:
        array = np.asarray(raw)
    except (TypeError, ValueError) as exc:  # ragged nesting
        raise NotDecodable(f"array is not numeric: {exc}") from None
    # Numbers and Booleans only: numpy would also turn an array of text ("1.5") into floats.
    if array.dtype.kind not in "biuf":
        raise NotDecodable(f"array of {_element_type(raw)} is not numeric")
    if array.ndim != 1:
        raise NotDecodable(f"array has {array.ndim} dimensions, expected 1")
    data = array.astype(np.float64)
    if not np.isfinite(data).all():
        raise NotDecodable("array holds non-finite values")
    return data


def _element_type(raw: Sequence[object] | np.ndarray) -> str:
    if isinstance(raw, np.ndarray):
        return str(raw.dtype)
    return next((type(v).__name__ for v in raw if not isinstance(v, int | float)), "values")


def scalar_record(
    tag: Tag, reading: NodeReading, now: float, scale: float = 1.0, offset: float = 0.0
) -> Sample:
    """Engineering value = raw * scale + offset; Uncertain values are kept and marked."""
    quality = quality_of(reading.status_code)
    if quality is Quality.BAD:
        return _bad(tag, now, reading, status_label(reading.status_code, reading.status_name))
    try:
        raw = scalar_value(reading.value)
    except NotDecodable as exc:
        return _bad(tag, now, reading, str(exc))
    value = raw * scale + offset
    if not math.isfinite(value):  # a large raw value times the scale overflows
        return _bad(tag, now, reading, f"scaled value {value} is not finite")
    return Sample(
        tag=tag.id,
        ts=now,
        value=value,
        quality=quality,
        source_ts=reading.best_ts,
    )


def waveform_record(
    tag: Tag,
    reading: NodeReading,
    sample_rate: float | None,
    now: float,
    scale: float = 1.0,
    offset: float = 0.0,
) -> Record:
    """A Waveform, or a BAD sample for the waveform tag when the block cannot be trusted."""
    quality = quality_of(reading.status_code)
    if quality is Quality.BAD:
        return _bad(tag, now, reading, status_label(reading.status_code, reading.status_name))
    if sample_rate is None or not math.isfinite(sample_rate) or sample_rate <= 0:
        return _bad(tag, now, reading, f"sample rate {sample_rate} is not a positive number")
    try:
        data = waveform_data(reading.value)
    except NotDecodable as exc:
        return _bad(tag, now, reading, str(exc))
    if scale != 1.0 or offset != 0.0:
        with np.errstate(over="ignore", invalid="ignore"):  # refused just below, not warned
            data = data * scale + offset
        if not np.isfinite(data).all():
            return _bad(tag, now, reading, "scaled array holds non-finite values")
    return Waveform(
        tag=tag.id,
        ts=now,
        sample_rate=sample_rate,
        data=data,
        unit=tag.unit,
        quality=quality,
    )


def raw_text(reading: NodeReading) -> str:
    """The node's value as the server sent it, for a person: `Double 41.5`, `Double[16384]`,
    with the status when it is not Good."""
    value = reading.value
    kind = reading.data_type or type(value).__name__
    if isinstance(value, list | tuple | np.ndarray):
        text = f"{kind}[{len(value)}]"
    else:
        shown = repr(value)
        text = f"{kind} {shown if len(shown) <= 40 else shown[:37] + '...'}"
    if quality_of(reading.status_code) is not Quality.GOOD:
        text += f" ({status_label(reading.status_code, reading.status_name)})"
    return text


def sample_rate_of(reading: NodeReading) -> float | None:
    """The rate held by a sample-rate node, or None when it is not a usable rate."""
    if quality_of(reading.status_code) is Quality.BAD:
        return None
    try:
        rate = scalar_value(reading.value)
    except NotDecodable:
        return None
    return rate if rate > 0 else None


def _bad(tag: Tag, now: float, reading: NodeReading, reason: str) -> Sample:
    return Sample(
        tag=tag.id,
        ts=now,
        value=None,
        quality=Quality.BAD,
        source_ts=reading.best_ts,
        reason=reason,
    )
