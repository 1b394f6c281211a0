"""Property test of the CAN value path: any frame a bus can carry, garbage too.

Each example is a few frames (configured ids, ids the DBC has but nobody configured, ids it
does not know, the same id with the other id format, error and remote frames, any DLC, any
bytes, a multiplexer page the DBC does not define) handed to the driver's own frame handler
(`CanDriver._handle`, as `records()` calls it for each received frame) with the DBC below, whose
layout the expectations decode on their own (bit arithmetic, not cantools). Against the
contract (protocols/can/dbc.py, the driver's docstring, DESIGN.md section 9):

- nothing escapes but `DeviceUnreachable`, and that only for a bus-off error frame;
- a frame of the wrong length or an undefined multiplexer page is BAD for every signal of its
  message, and changes nothing else: no signal counts as freshly seen, no raw value is kept;
- an unknown, unconfigured, error or remote frame makes no sample and changes no signal;
- a decoded signal is raw x factor + offset; GOOD within the DBC range (or with none),
  UNCERTAIN outside it, BAD when not finite (IEEE float signals: NaN, infinity, overflow).

10 000 examples (derandomized); about 10 s.
"""

from __future__ import annotations

import asyncio
import collections
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can
import pytest
from hypothesis import given, settings

from gateway.core.clock import ManualClock
from gateway.core.errors import DeviceUnreachable
from gateway.core.records import Quality, Sample, Tag
from protocols.can.config import CanConnection, CanSignal
from protocols.can.driver import CanDriver
from tests.support.entropy import CASES, Entropy

EXAMPLES = 10_000
SENSOR_ID = 0x18FEF1FE  # extended
DBC = f"""VERSION ""

NS_ :

BS_:

BU_: ECU

BO_ 256 Motor: 8 ECU
 SG_ Speed : 0|16@1+ (0.5,0) [0|8000] "rpm" ECU
 SG_ Torque : 16|16@1- (0.1,-10) [-500|500] "Nm" ECU
 SG_ Temp : 32|8@1+ (1,-40) [0|0] "degC" ECU
 SG_ Mode : 40|4@1+ (1,0) [0|3] "" ECU
 SG_ Volts : 55|16@0+ (0.01,0) [0|600] "V" ECU

BO_ {SENSOR_ID | 0x80000000} Sensor: 4 ECU
 SG_ Level : 0|32@1- (1,0) [-100|100] "mm" ECU

BO_ 512 Mux: 3 ECU
 SG_ Page M : 0|8@1+ (1,0) [0|0] "" ECU
 SG_ PageA m0 : 8|16@1+ (1,0) [0|1000] "" ECU
 SG_ PageB m1 : 8|16@1- (2,0) [0|0] "" ECU

BO_ 768 Unused: 4 ECU
 SG_ Nobody : 0|8@1+ (1,0) [0|0] "" ECU

BO_ 1024 Wide: 8 ECU
 SG_ Big : 0|64@1- (1e300,0) [0|0] "" ECU

VAL_ 256 Mode 0 "off" 1 "run" 2 "fault" ;
SIG_VALTYPE_ {SENSOR_ID | 0x80000000} Level : 1;
SIG_VALTYPE_ 1024 Big : 2;
"""
SIGNALS = [
    ("speed", "Motor", "Speed"), ("torque", "Motor", "Torque"), ("temp", "Motor", "Temp"),
    ("mode", "Motor", "Mode"), ("volts", "Motor", "Volts"), ("level", "Sensor", "Level"),
    ("page_a", "Mux", "PageA"), ("page_b", "Mux", "PageB"), ("big", "Wide", "Big"),
]  # fmt: skip
# (frame id, extended) -> DBC length and the signals configured on it.
LENGTHS = {(256, False): 8, (SENSOR_ID, True): 4, (512, False): 3, (1024, False): 8}
SIGNALS_OF = {
    (256, False): ("speed", "torque", "temp", "mode", "volts"), (SENSOR_ID, True): ("level",),
    (512, False): ("page_a", "page_b"), (1024, False): ("big",),
}  # fmt: skip
IDS = (*LENGTHS, (768, False), (256, True), (SENSOR_ID, False), (0x7FF, False), (0, False))
RANGES = {"speed": (0, 8000), "torque": (-500, 500), "mode": (0, 3), "volts": (0, 600),
          "level": (-100, 100), "page_a": (0, 1000)}  # fmt: skip
SPECIAL_BYTES = (
    b"\x00" * 8, b"\xff" * 8, struct.pack("<f", math.nan) * 2, struct.pack("<f", math.inf) * 2,
    struct.pack("<d", 1.7e308), struct.pack("<d", math.nan), b"\x01\xff\xff", b"\x05\x00\x00",
)  # fmt: skip


def _le(data: bytes, start: int, size: int, signed: bool) -> int:
    raw = (int.from_bytes(data, "little") >> start) & ((1 << size) - 1)
    return raw - (1 << size) if signed and raw >> (size - 1) else raw


def expected_values(key: tuple[int, bool], data: bytes) -> dict[str, float] | None:
    """Signal name -> engineering value by the DBC above; None when the frame is malformed."""
    if len(data) != LENGTHS[key]:
        return None
    if key == (256, False):
        return {
            "speed": _le(data, 0, 16, False) * 0.5,
            "torque": _le(data, 16, 16, True) * 0.1 - 10,
            "temp": _le(data, 32, 8, False) - 40.0,
            "mode": float(_le(data, 40, 4, False)),
            # Motorola: start bit 55 is the MSB (byte 6, bit 7), so bytes 6-7 big-endian.
            "volts": int.from_bytes(data[6:8], "big") * 0.01,
        }
    if key == (SENSOR_ID, True):
        return {"level": struct.unpack("<f", data)[0]}
    if key == (1024, False):
        return {"big": struct.unpack("<d", data)[0] * 1e300}  # may overflow to inf
    page = data[0]
    if page == 0:
        return {"page_a": float(_le(data, 8, 16, False))}
    if page == 1:
        return {"page_b": _le(data, 8, 16, True) * 2.0}
    return None  # a page the DBC does not define


def frame(e: Entropy) -> can.Message:
    kind = e.choice(("data", "data", "data", "data", "error", "remote"))
    frame_id, extended = e.choice(IDS) if not e.chance(8) else (e.below(0x800), False)
    if kind == "error":
        return can.Message(arbitration_id=e.choice((0x04, 0x40, 0x20, e.byte())),
                           is_error_frame=True, data=e.raw(8))  # fmt: skip
    if kind == "remote":
        return can.Message(arbitration_id=frame_id, is_extended_id=extended,
                           is_remote_frame=True, dlc=e.below(9))  # fmt: skip
    size = LENGTHS.get((frame_id, extended), 8)
    if e.chance(5):
        size = e.between(0, 12)
    data = e.choice(SPECIAL_BYTES)[:size].ljust(size, b"\0") if e.chance(4) else e.raw(size)
    if (frame_id, extended) == (512, False) and size and not e.chance(4):
        data = bytes([e.below(2)]) + data[1:]  # mostly a defined page
    return can.Message(arbitration_id=frame_id, is_extended_id=extended, data=data,
                       is_fd=size > 8)  # fmt: skip


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[tuple[CanDriver, asyncio.AbstractEventLoop]]:
    (tmp_path / "fuzz.dbc").write_text(DBC)
    signals = [CanSignal(name=n, message=m, signal=s) for n, m, s in SIGNALS]
    tags = [Tag(id=f"bus.{n}", asset="bus") for n, _, _ in SIGNALS]
    connection = CanConnection(protocol="can", interface="virtual", channel="fuzz-frames",
                               dbc="fuzz.dbc", error_frames_per_s_limit=1000)  # fmt: skip
    loop = asyncio.new_event_loop()
    driver = CanDriver("bus", connection, signals, tags, tmp_path / "fuzz.dbc", ManualClock())
    loop.run_until_complete(driver.__aenter__())
    try:
        yield driver, loop
    finally:
        loop.run_until_complete(driver.__aexit__(None, None, None))
        loop.close()


def test_any_frame_gives_the_dbc_value_or_a_bad_sample_and_nothing_else(driver):
    handler, _ = driver
    seen: collections.Counter[str] = collections.Counter()
    mono = [0.0]

    @settings(max_examples=EXAMPLES, derandomize=True)
    @given(data=CASES)
    def check(data: bytes) -> None:
        e = Entropy(data)
        for _ in range(e.between(1, 4)):
            message = frame(e)
            mono[0] += 2.0  # error frames never pile up to the per-second limit
            before = (dict(handler._last_seen), dict(handler._last_raw))
            try:
                samples = handler._handle(message, 1000.0, mono[0])
            except DeviceUnreachable:
                assert message.is_error_frame and message.arbitration_id & 0x40
                seen["bus-off"] += 1
                continue
            key = (message.arbitration_id, message.is_extended_id)
            configured = key in LENGTHS and not message.is_error_frame
            if not configured or message.is_remote_frame:
                assert samples == []
                assert (handler._last_seen, handler._last_raw) == before, "state changed"
                seen["no sample"] += 1
                continue
            _check(key, bytes(message.data), samples, before, handler, seen)

    check()
    for outcome in ("bus-off", "no sample", "malformed", "GOOD", "UNCERTAIN", "BAD"):
        assert seen[outcome], seen


def _check(key: tuple[int, bool], data: bytes, samples: list[Sample], before: Any,
           handler: CanDriver, seen: collections.Counter[str]) -> None:  # fmt: skip
    values = expected_values(key, data)
    if values is None:
        assert sorted(s.tag for s in samples) == sorted(f"bus.{n}" for n in SIGNALS_OF[key])
        for sample in samples:
            assert sample.quality is Quality.BAD and sample.value is None and sample.reason
        assert (handler._last_seen, handler._last_raw) == before, "a malformed frame counted"
        seen["malformed"] += 1
        return
    assert sorted(s.tag for s in samples) == sorted(f"bus.{n}" for n in values)
    for sample in samples:
        name = sample.tag.removeprefix("bus.")
        value = values[name]
        seen[sample.quality.name] += 1
        if not math.isfinite(value):
            assert sample.quality is Quality.BAD and sample.value is None and sample.reason
            continue
        assert sample.value is not None and math.isclose(sample.value, value, rel_tol=1e-12)
        low, high = RANGES.get(name, (-math.inf, math.inf))
        if low <= sample.value <= high:
            assert sample.quality is Quality.GOOD and sample.reason is None, sample
        else:
            assert sample.quality is Quality.UNCERTAIN and sample.reason, sample
