"""Turning one poll's raw answers into records: decoding, enumerations, waveforms, deadband.

Pure: no I/O and no pymodbus. The driver fetches the planned reads and hands the answers here,
so the same code serves Modbus TCP and every unit of an RTU line.

Enumerations (`enum: {0: stopped, 1: running}`): a Sample carries a number, never a label, so
the value stays the raw state code and the labels travel beside it (`PointDecoder.state_labels`,
keyed by tag id, for detectors, status and ticket text). A code outside the map is an UNCERTAIN
sample whose reason names the code: the device reports a state nobody configured.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from gateway.core.clock import Clock
from gateway.core.interfaces import Record
from gateway.core.records import Poll, Quality, Sample, Tag, Waveform
from protocols.modbus.config import (
    DataType,
    DeadbandMode,
    ModbusLimits,
    ModbusPoint,
    RegisterTable,
    WordOrder,
)
from protocols.modbus.decode import DecodeError, decode, decode_bit, decode_raw, decode_string
from protocols.modbus.plan import ReadRequest, Span, describe_plan, plan_block, plan_reads

if TYPE_CHECKING:
    import numpy as np

# An answer per planned request: the registers (or bits as 0/1), or the reason it failed.
Answer = list[int] | str


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Every request of one poll: the merged scalar reads, then each waveform's block reads."""

    scalar_requests: tuple[ReadRequest, ...]
    waveform_requests: tuple[tuple[int, tuple[ReadRequest, ...]], ...]  # (point index, reads)

    @property
    def all_requests(self) -> tuple[ReadRequest, ...]:
        return self.scalar_requests + tuple(r for _, reads in self.waveform_requests for r in reads)


def make_plan(
    points: Sequence[ModbusPoint], *, max_registers: int, max_bits: int, max_gap: int
) -> ReadPlan:
    scalar_index = [i for i, p in enumerate(points) if p.waveform is None]
    scalar = plan_reads(
        [Span(points[i].table.value, points[i].address, points[i].register_count)
         for i in scalar_index],
        max_registers=max_registers,
        max_bits=max_bits,
        max_gap=max_gap,
    )  # fmt: skip
    # The planner numbers points within its input; map them back to the device's indices.
    remapped = tuple(
        ReadRequest(
            r.table,
            r.address,
            r.count,
            tuple(type(s)(scalar_index[s.point], s.offset, s.count) for s in r.slices),
        )
        for r in scalar
    )
    waveforms = tuple(
        (i, tuple(plan_block(p.table.value, p.address, p.register_count, max_registers)))
        for i, p in enumerate(points)
        if p.waveform is not None
    )
    return ReadPlan(remapped, waveforms)


def plan_for(points: Sequence[ModbusPoint], limits: ModbusLimits) -> ReadPlan:
    """The read plan of a device with these points and connection limits."""
    return make_plan(
        points,
        max_registers=limits.max_registers_per_read,
        max_bits=limits.max_bits_per_read,
        max_gap=limits.max_register_gap,
    )


def log_read_plan(device_id: str, points: Sequence[ModbusPoint], limits: ModbusLimits) -> str:
    """Log the read plan of one device once at start and return the summary."""
    summary = describe_plan(plan_for(points, limits).all_requests)
    log.info("Device `%s` read plan: %s.", device_id, summary)
    return summary


def plan_lines(plan: ReadPlan, points: Sequence[ModbusPoint]) -> list[str]:
    """The read plan for a person: the summary, then each request with its function code and
    the points it serves (`holding 0+4 (function 3): bearing_temp, discharge_pressure`)."""
    lines = [describe_plan(plan.all_requests)]
    for request in plan.scalar_requests:
        names = ", ".join(points[piece.point].name for piece in request.slices)
        lines.append(f"{_request_text(request)}: {names}")
    for index, reads in plan.waveform_requests:
        for number, request in enumerate(reads, start=1):
            lines.append(
                f"{_request_text(request)}: {points[index].name} (block {number}/{len(reads)})"
            )
    return lines


def _request_text(request: ReadRequest) -> str:
    table = RegisterTable(request.table)
    return f"{table} {request.address}+{request.count} (function {table.function_code})"


def raw_texts(
    plan: ReadPlan,
    points: Sequence[ModbusPoint],
    tag_ids: Sequence[str],
    scalar_answers: Sequence[Answer],
    waveform_answers: Sequence[Sequence[Answer]],
) -> dict[str, str]:
    """Tag id -> the registers (hex) or bits its point got in one poll. A request answered
    with an error gives no raw value (the sample's reason says why)."""
    texts: dict[str, str] = {}
    for request, answer in zip(plan.scalar_requests, scalar_answers, strict=False):
        if isinstance(answer, str):
            continue
        bits = RegisterTable(request.table).is_bits
        for piece in request.slices:
            words = answer[piece.offset : piece.offset + piece.count]
            texts[tag_ids[piece.point]] = " ".join(
                str(word) if bits else f"0x{word:04X}" for word in words
            )
    for (index, _), answers in zip(plan.waveform_requests, waveform_answers, strict=False):
        blocks = [answer for answer in answers if not isinstance(answer, str)]
        if len(blocks) != len(answers):
            continue
        registers = [word for block in blocks for word in block]
        head = " ".join(f"0x{word:04X}" for word in registers[:4])
        texts[tag_ids[index]] = f"{head} ... ({len(registers)} registers)"
    return texts


def check_points(points: Sequence[ModbusPoint]) -> list[str]:
    """Cross-point problems the single-point model cannot see (for the config cross-check)."""
    problems: list[str] = []
    by_name = {p.name: p for p in points}
    if len(by_name) != len(points):
        seen: set[str] = set()
        for p in points:
            if p.name in seen:
                problems.append(f"point name `{p.name}` is used twice")
            seen.add(p.name)
    for p in points:
        rate = p.waveform.sample_rate_point if p.waveform else None
        if rate is None:
            continue
        source = by_name.get(rate)
        if source is None:
            problems.append(f"`{p.name}`: sample_rate_point `{rate}` is not a point of the device")
        elif source.waveform is not None or source.type in (DataType.STRING, DataType.BIT):
            problems.append(f"`{p.name}`: sample_rate_point `{rate}` must be a number point")
    return problems


def _span_text(point: ModbusPoint) -> str:
    last = point.address + point.register_count - 1
    where = f"{point.address}" if last == point.address else f"{point.address}..{last}"
    if point.type is DataType.BIT and not point.table.is_bits:
        where += f" bit {point.bit or 0}"
    return f"{point.table} {where}"


def overlapping_points(points: Sequence[ModbusPoint]) -> list[tuple[int, str]]:
    """(index, message) for each point whose registers (or bits) another point of the same
    table already covers: a float32 at 0 and another at 1 share register 1, so one of them
    decodes garbage. A `bit` point of a register table is a view of one bit and may sit on a
    register another point reads whole; the same bit twice is still an overlap."""
    problems: list[tuple[int, str]] = []
    by_table: dict[RegisterTable, list[int]] = {}
    for index, point in enumerate(points):
        by_table.setdefault(point.table, []).append(index)
    for indices in by_table.values():
        bits: dict[tuple[int, int], int] = {}  # (register, bit) -> index of its first point
        widest: int | None = None  # the earlier whole-register point reaching furthest
        for index in sorted(indices, key=lambda i: (points[i].address, i)):
            point = points[index]
            if point.type is DataType.BIT and not point.table.is_bits:
                first = bits.setdefault((point.address, point.bit or 0), index)
                if first != index:
                    problems.append((index, _overlap(point, points[first], first)))
                continue
            if widest is not None:
                other = points[widest]
                if other.address + other.register_count > point.address:
                    problems.append((index, _overlap(point, other, widest)))
            end = point.address + point.register_count
            if widest is None or end > points[widest].address + points[widest].register_count:
                widest = index
    return sorted(problems)


def _overlap(point: ModbusPoint, other: ModbusPoint, other_index: int) -> str:
    if point.table.is_bits:
        hint = f"each address of `{point.table}` belongs to one point"
    elif point.type is DataType.BIT:
        hint = "each bit belongs to one point"
    else:
        hint = (
            "each register belongs to one point; to read one bit of a register that a point"
            " reads whole, use `type: bit` with `bit:`"
        )
    return (
        f"`{point.name}` ({_span_text(point)}) overlaps `{other.name}` ({_span_text(other)},"
        f" points.{other_index}): {hint}"
    )


# Modicon notation numbers registers from 1 with the table as the leading digit: 4xxxx
# holding, 3xxxx input, 1xxxx discrete inputs (0xxxx coils cannot be told apart).
_MODICON: dict[int, RegisterTable] = {
    40001: RegisterTable.HOLDING,
    30001: RegisterTable.INPUT,
    10001: RegisterTable.DISCRETE,
}


def modicon_like_addresses(points: Sequence[ModbusPoint]) -> list[tuple[int, str]]:
    """(index of the first such point, message) per table whose points have addresses that
    look like Modicon notation (holding register 40101 is `address: 100`). A warning, not an
    error: some devices really map registers there (SunSpec starts at zero-based 40000)."""
    found: dict[tuple[RegisterTable, int], list[int]] = {}
    for index, point in enumerate(points):
        base = _modicon_base(point.address)
        if base is not None:
            found.setdefault((point.table, base), []).append(index)
    warnings: list[tuple[int, str]] = []
    for (table, base), indices in found.items():
        first = points[indices[0]]
        modicon_table = _MODICON[base]
        zero_based = first.address - base
        if modicon_table is table:
            how = f"`address: {zero_based}`"
        else:
            how = f"`table: {modicon_table}` and `address: {zero_based}`"
        more = len(indices) - 1
        others = f" and {more} more point{'s' if more > 1 else ''}" if more else ""
        warnings.append(
            (
                indices[0],
                f"address {first.address} (`{first.name}`{others}) looks like Modicon"
                f" notation: {first.address} is {modicon_table} register {zero_based} counted"
                f" from 0, and addresses here are zero-based, so write {how}; keep it if the"
                f" device's manual gives zero-based addresses this high (SunSpec maps start at"
                f" 40000)",
            )
        )
    return warnings


def _modicon_base(address: int) -> int | None:
    for base in _MODICON:
        if base <= address <= base + 9998:
            return base
    return None


class DeadbandFilter:
    """Report-by-exception for one point: a change beyond the deadband, a change of quality,
    or the heartbeat falling due lets a sample through; everything else is dropped."""

    __slots__ = ("_at", "_band", "_clock", "_heartbeat", "_last", "_percent", "_quality")

    def __init__(self, point: ModbusPoint, clock: Clock) -> None:
        self._band = point.deadband or 0.0
        self._percent = point.deadband_mode is DeadbandMode.PERCENT
        self._heartbeat = point.heartbeat_s
        self._clock = clock
        self._last: float | None = None
        self._quality: Quality | None = None
        self._at = 0.0

    def passes(self, sample: Sample) -> bool:
        now = self._clock.monotonic()
        value = sample.value
        first_or_quality_change = (
            self._quality is not sample.quality or value is None or self._last is None
        )
        heartbeat_due = self._heartbeat is not None and now - self._at >= self._heartbeat
        if first_or_quality_change or heartbeat_due or value is None or self._last is None:
            report = True
        else:
            band = self._band * abs(self._last) / 100.0 if self._percent else self._band
            report = abs(value - self._last) > band
        if report:
            self._last, self._quality, self._at = value, sample.quality, now
        return report


@dataclass(frozen=True, slots=True)
class _BlockStep:
    """How `PointDecoder._block_records` decodes one scalar request's answer."""

    size: int  # the words the answer must hold at least
    count: int  # points it serves (one word each)
    pick: Callable[[Sequence[int]], Any] | None  # their words, unless the answer's first ones
    uniform: tuple[bool, float, float] | None  # (signed, scale, offset) shared by all of them
    params: tuple[tuple[bool, float, float], ...]  # per point, when not shared


class PointDecoder:
    """Decodes the answers of one poll into records, one per tag, in point order (minus points
    held back by their deadband, and string points, whose text is kept in `texts`)."""

    def __init__(
        self, points: Sequence[ModbusPoint], tags: Sequence[Tag], plan: ReadPlan, clock: Clock
    ) -> None:
        if len(points) != len(tags):
            raise ValueError(f"{len(points)} points but {len(tags)} tags")
        problems = check_points(points)
        if problems:
            raise ValueError("; ".join(problems))
        self._points = tuple(points)
        self._tags = tuple(tags)
        self._plan = plan
        self._clock = clock
        self._filters = {
            i: DeadbandFilter(p, clock) for i, p in enumerate(points) if p.deadband is not None
        }
        index = {p.name: i for i, p in enumerate(points)}
        self._rate_index = {
            i: index[p.waveform.sample_rate_point]
            for i, p in enumerate(points)
            if p.waveform is not None and p.waveform.sample_rate_point is not None
        }
        self.texts: dict[str, str] = {}
        # Hot path: plain big-endian 16-bit points skip the generic
        # decoder. Value -> (signed, scale, offset); anything else takes `_scalar`.
        self._fast = {
            i: (p.type is DataType.INT16, p.scale, p.offset)
            for i, p in enumerate(points)
            if p.type in (DataType.UINT16, DataType.INT16)
            and p.word_order in (WordOrder.ABCD, WordOrder.CDAB)  # one word: no word swap
            and p.enum is None
            and p.waveform is None
        }
        # Per scalar request, what each slice needs, looked up once here rather than per poll:
        # (point index, offset, count, fast decoding or None, tag id).
        self._steps = tuple(
            tuple(
                (piece.point, piece.offset, piece.count, self._fast.get(piece.point),
                 self._tags[piece.point].id)
                for piece in request.slices
            )
            for request in plan.scalar_requests
        )  # fmt: skip
        # Without deadbands, string points or waveforms, every decoded sample is reported as
        # it is: the poll's records are the decoded samples in point order.
        self._plain = not self._filters and not plan.waveform_requests and all(
            p.type is not DataType.STRING for p in points
        )
        # Block decoding (`_block_steps`): its tag ids in point order, and how to put values
        # computed in request order into point order when the two differ.
        self._block_order: Callable[[Sequence[float]], Any] | None = None
        self._block_tags: tuple[str, ...] = ()
        self._blocks = self._block_steps() if self._plain else None

    def _block_steps(self) -> tuple[_BlockStep, ...] | None:
        """Per scalar request, how to decode its answer as a whole (`_block_records`), when
        every point is a plain 16-bit number whose scaled value is finite for every word, and
        scale and offset are floats (so the value is the float the per-point path makes).
        None otherwise. Sets `_block_order` when the requests (in address order) do not hold
        the points in point order."""
        blocks: list[_BlockStep] = []
        order: list[int] = []  # point indices in the order the requests serve them
        for steps in self._steps:
            params: list[tuple[bool, float, float]] = []
            offsets: list[int] = []
            for i, offset, count, plain, _ in steps:
                if plain is None or count != 1:
                    return None
                signed, scale, shift = plain
                widest = 0x8000 if signed else 0xFFFF
                if type(scale) is not float or type(shift) is not float:
                    return None
                if not math.isfinite(widest * abs(scale) + abs(shift)):
                    return None
                params.append(plain)
                offsets.append(offset)
                order.append(i)
            if not offsets:
                return None
            uniform = params[0] if all(p == params[0] for p in params) else None
            contiguous = offsets == list(range(len(offsets)))
            pick = None if contiguous else itemgetter(*offsets)
            blocks.append(_BlockStep(max(offsets) + 1, len(offsets), pick, uniform, tuple(params)))
        n = len(self._points)
        if sorted(order) != list(range(n)):
            return None  # a point served twice or not at all: not a plain poll
        self._block_tags = tuple(self._tags[i].id for i in range(n))
        if order != list(range(n)) and n > 1:
            position = {point: k for k, point in enumerate(order)}
            self._block_order = itemgetter(*(position[i] for i in range(n)))
        return tuple(blocks)

    def tags(self) -> list[Tag]:
        """Tags that produce records (string points are device metadata, see `texts`)."""
        return [t for p, t in zip(self._points, self._tags, strict=True)
                if p.type is not DataType.STRING]  # fmt: skip

    def state_labels(self) -> dict[str, Mapping[int, str]]:
        """Tag id -> enumeration labels, for points that declare `enum`."""
        return {t.id: p.enum for p, t in zip(self._points, self._tags, strict=True) if p.enum}

    def records(
        self, scalar_answers: Sequence[Answer], waveform_answers: Sequence[Sequence[Answer]]
    ) -> Sequence[Record]:
        """Records for one poll: a `Poll` when every point is a GOOD plain number.
        `scalar_answers[i]` answers `plan.scalar_requests[i]`; `waveform_answers[j]` holds the
        answers to the reads of waveform number j."""
        ts = self._clock.now()
        if self._blocks is not None:
            block = self._block_records(scalar_answers, ts)
            if block is not None:
                return block
        out: list[Record | None] = [None] * len(self._points)
        points = self._points
        for steps, answer in zip(self._steps, scalar_answers, strict=True):
            if isinstance(answer, str):
                for i, _, _, _, tag_id in steps:
                    out[i] = Sample(tag_id, ts, None, Quality.BAD, reason=answer)
                continue
            size = len(answer)
            for i, offset, count, plain, tag_id in steps:
                if plain is not None and offset < size:
                    word = answer[offset]
                    if 0 <= word <= 0xFFFF:
                        signed, scale, shift = plain
                        raw = word - 0x10000 if signed and word & 0x8000 else word
                        value = raw * scale + shift
                        if math.isfinite(value):
                            out[i] = Sample(tag_id, ts, float(value))
                            continue
                out[i] = self._scalar(points[i], tag_id, answer[offset : offset + count], ts)
        if self._plain:
            return [record for record in out if record is not None]
        for (i, _), answers in zip(self._plan.waveform_requests, waveform_answers, strict=True):
            out[i] = self._waveform(i, answers, out, ts)
        records: list[Record] = []
        for i, record in enumerate(out):
            if record is None:
                continue
            if isinstance(record, Sample):
                if points[i].type is DataType.STRING:
                    continue
                gate = self._filters.get(i)
                if gate is not None and not gate.passes(record):
                    continue
            records.append(record)
        return records

    def _block_records(self, answers: Sequence[Answer], ts: float) -> Poll | None:
        """The records of a poll whose every answer came and holds only 16-bit words: the
        values of each answer computed in one pass, handed on as one `Poll` (its samples are
        made only if a consumer asks for them). None when an answer failed or
        is short or holds a word outside 0..65535: the per-point path then says which point
        is BAD and why."""
        assert self._blocks is not None
        values: list[float] = []
        for block, answer in zip(self._blocks, answers, strict=True):
            if isinstance(answer, str) or len(answer) < block.size:
                return None
            if min(answer) < 0 or max(answer) > 0xFFFF:
                return None
            if block.pick is not None:
                picked = block.pick(answer)
                words: Sequence[int] = picked if block.count > 1 else (picked,)
            else:
                words = answer if len(answer) == block.count else answer[: block.count]
            if block.uniform is not None:
                signed, scale, shift = block.uniform
                if signed:
                    values += [(w - 0x10000 if w & 0x8000 else w) * scale + shift for w in words]
                else:
                    values += [w * scale + shift for w in words]
            else:
                values += [
                    (w - 0x10000 if signed and w & 0x8000 else w) * scale + shift
                    for w, (signed, scale, shift) in zip(words, block.params, strict=True)
                ]
        if self._block_order is not None:
            values = list(self._block_order(values))  # into point order
        return Poll(self._block_tags, ts, values)

    def _scalar(self, point: ModbusPoint, tag_id: str, words: Sequence[int], ts: float) -> Sample:
        try:
            if point.type is DataType.BIT:
                raw: float = (
                    words[0] & 1
                    if point.table.is_bits
                    else decode_bit(words[0], point.bit or 0, point.word_order)
                )
                value = float(raw)
            elif point.type is DataType.STRING:
                self.texts[tag_id] = decode_string(words, point.word_order)
                return Sample(tag_id, ts, None, Quality.GOOD)
            elif point.enum is not None:
                raw = decode_raw(words, point.type, point.word_order)
                value = float(raw)
            else:
                return Sample(
                    tag_id, ts, decode(words, point.type, point.word_order, point.scale,
                                       point.offset)
                )  # fmt: skip
        except DecodeError as exc:
            return Sample(tag_id, ts, None, Quality.BAD, reason=str(exc))
        except IndexError:
            return Sample(tag_id, ts, None, Quality.BAD, reason="answer too short for the point")
        if point.enum is not None and int(raw) not in point.enum:
            return Sample(
                tag_id, ts, value, Quality.UNCERTAIN,
                reason=f"state {int(raw)} is not in the configured enumeration",
            )  # fmt: skip
        return Sample(tag_id, ts, value)

    def _waveform(
        self, i: int, answers: Sequence[Answer], out: Sequence[Record | None], ts: float
    ) -> Record:
        point, tag = self._points[i], self._tags[i]
        assert point.waveform is not None  # planned only for waveform points
        failed = next((a for a in answers if isinstance(a, str)), None)
        if failed is not None:
            return Sample.bad(tag.id, ts, failed)
        rate = point.waveform.sample_rate_hz
        rate_index = self._rate_index.get(i)
        if rate_index is not None:
            source = out[rate_index]
            if not isinstance(source, Sample) or source.quality is not Quality.GOOD:
                return Sample.bad(
                    tag.id, ts, f"sample rate point `{point.waveform.sample_rate_point}` is BAD"
                )
            rate = source.value
        if rate is None or not math.isfinite(rate) or rate <= 0:
            return Sample.bad(tag.id, ts, f"sample rate {rate!r} Hz is not a positive number")
        registers = [word for answer in answers if not isinstance(answer, str) for word in answer]
        try:
            data = decode_block(registers, point)
        except DecodeError as exc:
            return Sample.bad(tag.id, ts, str(exc))
        return Waveform(tag.id, ts, float(rate), data, unit=point.unit or "g")


_NUMPY_TYPES: dict[DataType, str] = {
    DataType.UINT16: "u2", DataType.INT16: "i2", DataType.UINT32: "u4", DataType.INT32: "i4",
    DataType.UINT64: "u8", DataType.INT64: "i8", DataType.FLOAT32: "f4", DataType.FLOAT64: "f8",
}  # fmt: skip


def decode_block(registers: Sequence[int], point: ModbusPoint) -> np.ndarray:
    """`point.waveform.samples` values of `point.type`, scaled, as float64 (vectorised).

    The byte and word order are undone per value exactly as `decode` does for one value.
    """
    # numpy only here: a site without waveform blocks does not pay its ~15 MB of RSS.
    import numpy as np

    assert point.waveform is not None
    per_value = point.type.registers
    samples = point.waveform.samples
    if len(registers) != samples * per_value:
        raise DecodeError(f"waveform needs {samples * per_value} registers, got {len(registers)}")
    # Range first, on the plain ints: one beyond int64 would make numpy raise OverflowError.
    if registers and (min(registers) < 0 or max(registers) > 0xFFFF):
        raise DecodeError("register value outside 0..65535 in waveform")
    words = np.asarray(registers, dtype=np.int64)
    grid = words.astype(">u2").reshape(samples, per_value)
    order = point.word_order.value
    if order in ("CDAB", "DCBA"):
        grid = grid[:, ::-1]
    raw = np.ascontiguousarray(grid).tobytes()
    if order in ("BADC", "DCBA"):
        swapped = bytearray(raw)
        swapped[0::2], swapped[1::2] = raw[1::2], raw[0::2]
        raw = bytes(swapped)
    # A signalling NaN warns when cast, a large value times the scale overflows: both are
    # refused below with a reason instead.
    with np.errstate(over="ignore", invalid="ignore"):
        values = np.frombuffer(raw, dtype=">" + _NUMPY_TYPES[point.type]).astype(np.float64)
        scaled = values * point.scale + point.offset
    if not np.all(np.isfinite(values)):
        raise DecodeError("waveform holds NaN or infinite values")
    # As `decode` for one value: a large raw value times the scale can overflow to infinity.
    if not np.all(np.isfinite(scaled)):
        raise DecodeError("scaled waveform holds infinite values")
    return scaled


def table_of(request: ReadRequest) -> RegisterTable:
    return RegisterTable(request.table)
