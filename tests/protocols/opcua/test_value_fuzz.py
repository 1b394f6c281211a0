"""Property test of the OPC UA value path: what a server can put in a DataValue, garbage too.

Each example is one Read answer as the client library decodes it from the wire (asyncua's
binary decoder: every variant type, scalars where arrays belong and arrays where scalars
belong, NaN and infinity bit patterns, any status code, timestamps at the ends of the range,
variant bytes of unknown type), handed to the driver's own read path (`_read_points`: the
DataValue -> NodeReading step, the sample-rate node, scale and offset) through a stand-in for
the client. Against the contract of protocols/opcua/decode.py and the driver's docstring:

- nothing escapes;
- a Bad (or reserved) severity is a BAD sample whose reason is the status, never a value;
- a scalar node's value is the number the variant holds (a Boolean as 0/1) times scale plus
  offset, GOOD or UNCERTAIN as the severity says; anything else (text, arrays, structures,
  no value, NaN, infinity, a scaled value that overflows) is BAD with a reason;
- a waveform's data are the array's numbers scaled, all finite; a scalar, text array, empty or
  nested array, or an unusable sample rate is BAD.

10 000 examples (derandomized); about 21 s on a shared 2-core machine. The subscription shape
(data changes dispatched by client handle, subscription status changes) gets 3 000 more.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import math
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from asyncua import ua
from asyncua.common.subscription import DataChangeEvent, DataChangeNotif, StatusChangeEvent
from asyncua.common.utils import Buffer
from asyncua.ua import ua_binary
from hypothesis import given, settings

from gateway.core.clock import ManualClock
from gateway.core.errors import DeviceUnreachable
from gateway.core.records import Quality, Sample, Waveform
from protocols.opcua.config import NodeMode
from protocols.opcua.driver import OpcUaDriver
from tests.support.entropy import CASES, Entropy
from tests.support.opcua import connection, node, tags_for

EXAMPLES = 10_000
VT = ua.VariantType
NUMBER_TYPES = (VT.Double, VT.Float, VT.Int32, VT.UInt32, VT.Int16, VT.UInt16, VT.Int64,
                VT.UInt64, VT.SByte, VT.Byte, VT.Boolean)  # fmt: skip
OTHER_TYPES = (VT.String, VT.ByteString, VT.DateTime, VT.Guid, VT.LocalizedText,
               VT.QualifiedName, VT.NodeId, VT.StatusCode, VT.XmlElement, VT.Null)  # fmt: skip
_PACK = {
    VT.Double: "<d", VT.Float: "<f", VT.Int32: "<i", VT.UInt32: "<I", VT.Int16: "<h",
    VT.UInt16: "<H", VT.Int64: "<q", VT.UInt64: "<Q", VT.SByte: "<b", VT.Byte: "<B",
}  # fmt: skip
# Raw element bytes worth meeting: NaN, infinities, the largest double, zero.
SPECIAL_DOUBLES = (b"\x00" * 8, struct.pack("<d", math.nan), struct.pack("<d", math.inf),
                   struct.pack("<d", -math.inf), struct.pack("<d", 1.7e308))  # fmt: skip
SPECIAL_FLOATS = (b"\x00" * 4, struct.pack("<f", math.nan), struct.pack("<f", math.inf),
                  struct.pack("<f", 3.4e38))  # fmt: skip
# By severity (Part 4, 7.39): Good (with info bits too), Uncertain, Bad and the reserved 11.
STATUS_CODES = (
    (0x0000_0000, 0x0000_0480, 0x00A9_0000),
    (0x4090_0000, 0x40A4_0000, 0x4000_0000),
    (0x808B_0000, 0x8031_0000, 0x8000_0000, 0xC000_0000, 0x80AB_0012),
)
SCALES = (1.0, 0.001, -2.0, 0.0, 1e300, 1e-300)
OFFSETS = (0.0, -273.15, 1e308)
T0 = 1_714_521_600.0


def element(e: Entropy, vtype: ua.VariantType) -> Any:
    if vtype is VT.Boolean:
        return bool(e.byte() & 1)
    if vtype is VT.Double:
        raw = e.choice(SPECIAL_DOUBLES) if e.chance(3) else e.raw(8)
        return struct.unpack("<d", raw)[0]
    if vtype is VT.Float:
        raw = e.choice(SPECIAL_FLOATS) if e.chance(3) else e.raw(4)
        return struct.unpack("<f", raw)[0]
    if vtype in _PACK:
        size = struct.calcsize(_PACK[vtype])
        return struct.unpack(_PACK[vtype], e.raw(size))[0]
    if vtype is VT.String:
        return e.choice(("41.5", "nan", "", "1e999", "Pump", "\u00e9", "0x10"))
    if vtype is VT.ByteString:
        return e.raw(e.between(0, 6))
    if vtype is VT.DateTime:
        return dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    if vtype is VT.Guid:
        return uuid.UUID(bytes=e.raw(16))
    if vtype is VT.LocalizedText:
        return ua.LocalizedText("41.5", "en")
    if vtype is VT.QualifiedName:
        return ua.QualifiedName("x", 2)
    if vtype is VT.NodeId:
        return ua.NodeId(e.byte(), 2)
    if vtype is VT.StatusCode:
        return ua.StatusCode(e.choice(e.choice(STATUS_CODES)))
    if vtype is VT.XmlElement:
        return ua.XmlElement("<a/>")
    return None


def variant_bytes(e: Entropy, array: bool) -> bytes:
    """A Variant as a server would encode it, or (one in 16) bytes of any type id;
    shaped as the node expects (`array`) more often than not."""
    if e.chance(16):
        # Array lengths stay small: asyncua builds a list of that many Nones for a Null
        # array (zero bytes per element), so 2**31 would take minutes and gigabytes.
        kind = e.byte()
        length = struct.pack("<i", e.between(-1, 4)) if kind & 0x80 else b""
        return bytes([kind]) + length + e.raw(e.between(0, 12))
    vtype = e.choice(OTHER_TYPES) if e.chance(4) else e.choice(NUMBER_TYPES)
    expected = ("array", "array", "array") if array else ("scalar", "scalar", "scalar")
    shape = e.choice((*expected, "scalar", "array", "matrix", "empty"))
    if vtype is VT.Null:
        return ua_binary.variant_to_binary(ua.Variant(None, VT.Null))
    if shape == "scalar":
        variant = ua.Variant(element(e, vtype), vtype)
    elif shape == "matrix":
        rows = [[element(e, vtype) for _ in range(2)] for _ in range(2)]
        variant = ua.Variant(rows, vtype, Dimensions=[2, 2])
    else:
        count = 0 if shape == "empty" else e.between(1, 6)
        variant = ua.Variant([element(e, vtype) for _ in range(count)], vtype, is_array=True)
    return ua_binary.variant_to_binary(variant)


def data_value_bytes(e: Entropy, array: bool = False) -> bytes:
    """A DataValue's encoding (Part 6, 5.2.2.17): mask, Variant, StatusCode, timestamps."""
    mask = e.byte() & 0x0F if e.chance(4) else 0x01 | 0x02 | (e.byte() & 0x0C)
    out = bytes([mask])
    if mask & 0x01:
        out += variant_bytes(e, array)
    if mask & 0x02:
        if e.chance(6):
            code = int.from_bytes(e.raw(4), "little")
        else:
            code = e.choice(e.choice(STATUS_CODES))
        out += struct.pack("<I", code)
    for bit in (0x04, 0x08):
        if mask & bit:
            ticks = e.choice((0, 133_589_952_000_000_000, 2**63 - 1, -(2**63), -1))
            out += struct.pack("<q", ticks)
    return out


def decoded(data: bytes) -> ua.DataValue | None:
    """What the client library makes of the bytes; None when it refuses them (a Read answer
    that does not decode fails the whole request in the library, before our code runs)."""
    try:
        return ua_binary.struct_from_binary(ua.DataValue, Buffer(data))
    except Exception:  # any failure of the library's decoder is a refusal here
        return None


NODES = [
    node(name="temp", node_id="ns=2;s=T", mode="poll"),
    node(name="flow", node_id="ns=2;s=F", mode="poll", scale=0.5, offset=-10.0),
    node(name="wild", node_id="ns=2;s=W", mode="poll", scale=1e300, offset=0.0),
    node(name="vib", node_id="ns=2;s=V", mode="poll", kind="waveform", sample_rate=2000.0),
    node(name="acc", node_id="ns=2;s=A", mode="poll", kind="waveform",
         sample_rate_node="ns=2;s=Rate", scale=9.81),
]  # fmt: skip


class FakeClient:
    """Stands in for asyncua's Client: its `uaclient.read` answers the Read request."""

    def __init__(self) -> None:
        self.uaclient = self
        self.answer: list[ua.DataValue] = []

    async def read(self, params: ua.ReadParameters) -> list[ua.DataValue]:
        assert len(params.NodesToRead) == len(self.answer)
        return self.answer


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def number(value: Any) -> float | None:
    """The number a scalar variant value holds by the contract, or None."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def numbers(value: Any) -> np.ndarray | None:
    """A 1-D non-empty array of numbers (Booleans as 0/1), all finite, or None."""
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(v, bool | int | float) for v in value):
        return None
    data = np.asarray([float(v) for v in value])
    return data if np.all(np.isfinite(data)) else None


def expected(dv: ua.DataValue, scale: float, offset: float, rate: float | None) -> Any:
    """("bad", None), or (quality, value) / (quality, (rate, data)) for waveforms."""
    code = dv.StatusCode.value if dv.StatusCode is not None else 0
    severity = code >> 30
    if severity >= 2:
        return ("bad", None)
    quality = Quality.GOOD if severity == 0 else Quality.UNCERTAIN
    value = dv.Value.Value if dv.Value is not None else None
    if rate is False:  # a scalar node
        raw = number(value)
        if raw is None or (dv.Value is not None and dv.Value.is_array):
            return ("bad", None)
        result = raw * scale + offset
        return (quality, result) if math.isfinite(result) else ("bad", None)
    if rate is None or not math.isfinite(rate) or rate <= 0:
        return ("bad", None)
    data = numbers(value)
    if data is None:
        return ("bad", None)
    with np.errstate(over="ignore", invalid="ignore"):
        data = data * scale + offset
    return (quality, (rate, data)) if np.all(np.isfinite(data)) else ("bad", None)


def rate_of(dv: ua.DataValue) -> float | None:
    code = dv.StatusCode.value if dv.StatusCode is not None else 0
    if code >> 30 >= 2 or dv.Value is None or dv.Value.is_array:
        return None
    rate = number(dv.Value.Value)
    return rate if rate is not None and rate > 0 else None


def test_a_read_of_any_data_values_stores_only_what_the_server_vouched_for(loop):
    driver = OpcUaDriver("pump", connection("opc.tcp://fake:4840"), NODES,
                         tags_for("pump", NODES), ManualClock(T0))  # fmt: skip
    client = FakeClient()
    seen: collections.Counter[str] = collections.Counter()

    @settings(max_examples=EXAMPLES, derandomize=True)
    @given(data=CASES)
    def check(data: bytes) -> None:
        e = Entropy(data)
        # One DataValue per node in the order read, then the sample-rate node's.
        arrays = [n.kind.value == "waveform" for n in NODES] + [False]
        values = [decoded(data_value_bytes(e, array)) for array in arrays]
        if any(v is None for v in values):
            seen["refused by the library"] += 1
            return
        client.answer = values
        records = loop.run_until_complete(driver._read_points(client, driver._points))
        assert [r.tag for r in records] == [f"pump.{n.name}" for n in NODES]
        rate = rate_of(values[-1])
        for n, dv, record in zip(NODES, values, records, strict=False):
            node_rate = False if n.kind.value == "scalar" else (n.sample_rate or rate)
            quality, value = expected(dv, n.scale, n.offset, node_rate)
            seen[f"{n.kind.value} {getattr(quality, 'name', quality)}"] += 1
            if quality == "bad":
                assert isinstance(record, Sample) and record.quality is Quality.BAD, record
                assert record.value is None and record.reason
                continue
            if n.kind.value == "scalar":
                assert isinstance(record, Sample) and record.quality is quality, record
                assert record.value == value and math.isfinite(record.value)
                stamp = dv.SourceTimestamp or dv.ServerTimestamp
                assert (record.source_ts is None) == (stamp is None)
            else:
                assert isinstance(record, Waveform) and record.quality is quality, record
                assert record.sample_rate == value[0]
                np.testing.assert_array_equal(record.data, value[1])

    check()
    assert seen["refused by the library"] < EXAMPLES // 3, seen
    for outcome in ("scalar bad", "scalar GOOD", "scalar UNCERTAIN", "waveform bad",
                    "waveform GOOD", "waveform UNCERTAIN"):  # fmt: skip
        assert seen[outcome], seen


SUBSCRIBED = [n.model_copy(update={"mode": NodeMode.SUBSCRIBE}) for n in NODES]
SUBSCRIPTION_EXAMPLES = 3_000  # the value steps are the read path's; this covers the dispatch
UNKNOWN_HANDLE = 99


def test_a_subscription_of_any_notifications_stores_only_what_the_server_vouched_for():
    """The subscription shape: each data change is dispatched by its client handle (a value
    node, the sample-rate node, or a handle nobody asked for), decoded as a read is, and a
    Bad subscription status ends the stream as our DeviceUnreachable; nothing else escapes."""
    rate_handle = len(SUBSCRIBED) + 1
    seen: collections.Counter[str] = collections.Counter()

    @settings(max_examples=SUBSCRIPTION_EXAMPLES, derandomize=True)
    @given(data=CASES)
    def check(data: bytes) -> None:
        e = Entropy(data)
        driver = OpcUaDriver("pump", connection("opc.tcp://fake:4840"), SUBSCRIBED,
                             tags_for("pump", SUBSCRIBED), ManualClock(T0))  # fmt: skip
        # As `_subscribe` maps the handles it asked for: 1..n the nodes, then the rate node.
        driver._by_handle = {i: p for i, p in enumerate(driver._subscribed, start=1)}
        driver._by_handle[rate_handle] = "ns=2;s=Rate"
        rate: float | None = None  # the rate node's last usable value, none until one came
        for _ in range(e.between(1, 8)):
            if e.chance(12):
                code = e.choice(e.choice(STATUS_CODES))
                event: Any = StatusChangeEvent(ua.StatusChangeNotification(ua.StatusCode(code)))
                if code >> 30 >= 2:
                    with pytest.raises(DeviceUnreachable, match="subscription status"):
                        driver._record_from_event(event)
                    seen["status bad"] += 1
                    return
                assert driver._record_from_event(event) is None
                continue
            handle = e.choice((*range(1, rate_handle + 1), UNKNOWN_HANDLE))
            target = driver._by_handle.get(handle)
            waveform = not isinstance(target, str) and target is not None and (
                target.node.kind.value == "waveform")  # fmt: skip
            dv = decoded(data_value_bytes(e, waveform))
            if dv is None:
                seen["refused by the library"] += 1
                continue
            item = ua.MonitoredItemNotification(ClientHandle=handle, Value=dv)
            event = DataChangeEvent(None, None, DataChangeNotif(None, item))  # type: ignore[arg-type]
            record = driver._record_from_event(event)
            if target is None or isinstance(target, str):
                assert record is None
                if isinstance(target, str):
                    rate = rate_of(dv)
                    seen["rate"] += 1
                continue
            n = target.node
            node_rate = False if n.kind.value == "scalar" else (n.sample_rate or rate)
            quality, value = expected(dv, n.scale, n.offset, node_rate)
            seen[f"{n.kind.value} {getattr(quality, 'name', quality)}"] += 1
            assert record is not None and record.tag == target.tag.id
            if quality == "bad":
                assert isinstance(record, Sample) and record.quality is Quality.BAD, record
                assert record.value is None and record.reason
            elif n.kind.value == "scalar":
                assert isinstance(record, Sample) and record.quality is quality, record
                assert record.value == value and math.isfinite(record.value)
            else:
                assert isinstance(record, Waveform) and record.quality is quality, record
                assert record.sample_rate == value[0]
                np.testing.assert_array_equal(record.data, value[1])

    check()
    for outcome in ("status bad", "rate", "scalar bad", "scalar GOOD", "scalar UNCERTAIN",
                    "waveform bad", "waveform GOOD"):  # fmt: skip
        assert seen[outcome], seen
