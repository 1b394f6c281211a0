"""The records that flow through the gateway (DESIGN.md section 2).

Frozen, slotted dataclasses: cheap on the hot path and safe to share between tasks. Protocol
addressing (registers, NodeIds, CAN ids) never appears here.
"""

from __future__ import annotations

import enum
from abc import abstractmethod
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby, repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class Quality(enum.IntEnum):
    """OPC UA style quality, ordered so that `min()` gives the worst."""

    BAD = 0
    UNCERTAIN = 1
    GOOD = 2


class TagKind(enum.StrEnum):
    SCALAR = "scalar"
    WAVEFORM = "waveform"
    STATE = "state"


class Priority(enum.StrEnum):
    """P0 is the most urgent. Ordering helpers below, since StrEnum compares as text."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"

    @property
    def rank(self) -> int:
        return int(self.value[1])

    def raised(self) -> Priority:
        """One step more urgent, never past P0."""
        return Priority(f"P{max(0, self.rank - 1)}")

    @staticmethod
    def most_urgent(a: Priority, b: Priority) -> Priority:
        return a if a.rank <= b.rank else b


@dataclass(frozen=True, slots=True)
class Tag:
    """One configured point. `id` is unique in the gateway and used in topics and SQLite."""

    id: str
    asset: str
    unit: str = ""
    kind: TagKind = TagKind.SCALAR


@dataclass(frozen=True, slots=True)
class DerivedTag:
    """A tag a detector computes from what it analyses (the velocity RMS of a waveform),
    stored and seen by ticketing like a measured tag. `rise_floor` is the least rise, in
    `unit`, that fails verification after a repair: below it a change is scatter."""

    id: str
    unit: str
    rise_floor: float


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one tag. A BAD sample carries no value and says why in `reason`."""

    tag: str
    ts: float
    value: float | None
    quality: Quality = Quality.GOOD
    source_ts: float | None = None
    reason: str | None = None

    @staticmethod
    def bad(tag: str, ts: float, reason: str) -> Sample:
        return Sample(tag=tag, ts=ts, value=None, quality=Quality.BAD, reason=reason)


def _set_slots(cls: type, names: tuple[str, ...]) -> tuple[Any, ...]:
    """The slot descriptors' setters of a frozen slotted dataclass, in field order."""
    return tuple(cls.__dict__[name].__set__ for name in names)


_SET_SAMPLE = _set_slots(Sample, ("tag", "ts", "value", "quality", "source_ts", "reason"))


def _sample_init(
    self: Sample,
    tag: str,
    ts: float,
    value: float | None,
    quality: Quality = Quality.GOOD,
    source_ts: float | None = None,
    reason: str | None = None,
    _set: tuple[Any, ...] = _SET_SAMPLE,
) -> None:
    # The generated `__init__` of a frozen dataclass goes through `object.__setattr__` once per
    # field; the slots' own setters do the same work in half the time (a Sample is made for
    # every value read, 15 000 a second at 500 x 30, and construction was the largest single
    # cost of decoding: 1.3 -> 0.65 us). Still frozen: assigning an attribute raises.
    set_tag, set_ts, set_value, set_quality, set_source_ts, set_reason = _set
    set_tag(self, tag)
    set_ts(self, ts)
    set_value(self, value)
    set_quality(self, quality)
    set_source_ts(self, source_ts)
    set_reason(self, reason)


setattr(Sample, "__init__", _sample_init)  # noqa: B010 (mypy refuses assigning a method)


def good_samples(tags: Sequence[str], ts: float, values: Sequence[float]) -> list[Sample]:
    """`[Sample(tag, ts, value) for tag, value in zip(tags, values)]`, in about 60 % of its
    time: a decoded block of registers gives every sample of a poll at once, so each field is
    set over the whole list by one C loop instead of one `__init__` call per sample.
    `tags` and `values` have the same length."""
    n = len(tags)
    if len(values) != n:
        raise ValueError(f"{n} tags but {len(values)} values")
    samples: list[Sample] = list(map(object.__new__, repeat(Sample, n)))
    set_tag, set_ts, set_value, set_quality, set_source_ts, set_reason = _SET_SAMPLE
    sink: deque[None] = deque(maxlen=0)
    drain = sink.extend  # runs a map for its effect, keeping nothing
    drain(map(set_tag, samples, tags))
    drain(map(set_ts, samples, repeat(ts, n)))
    drain(map(set_value, samples, values))
    drain(map(set_quality, samples, repeat(Quality.GOOD, n)))
    drain(map(set_source_ts, samples, repeat(None, n)))
    drain(map(set_reason, samples, repeat(None, n)))
    return samples


_SAMPLE_TS = attrgetter("ts")


class _SamplesMadeOnDemand(Sequence[Sample]):
    """A sequence whose samples are made by `samples()` when first asked for (and kept):
    iterating or indexing asks for them."""

    __slots__ = ()

    @abstractmethod
    def samples(self) -> list[Sample]: ...

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples())

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...
    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        return self.samples()[index]


class Poll(_SamplesMadeOnDemand):
    """One whole poll of one device whose every value is GOOD, finite, without a reason or a
    source time stamp (the usual poll): the device's tag ids (the same tuple object at every
    poll), the poll's time stamp and the values, in tag order.

    A sequence of its samples, so that it is what a driver's `read()` returns for such a poll
    and whoever iterates it sees the samples. They are made only when first asked for: the
    hot consumers (the queue, quality, telemetry packing, the evidence window, the detector
    routing) read `tags`, `ts` and `values` instead. At 500 devices x 30 registers a `Sample`
    per value, and each consumer's pass over them, were a quarter of the daemon's CPU. Not
    frozen only for that cache; nothing changes `tags`, `ts` or `values` after construction.
    """

    __slots__ = ("_samples", "tags", "ts", "values")

    def __init__(self, tags: tuple[str, ...], ts: float, values: Sequence[float]) -> None:
        if len(values) != len(tags):
            raise ValueError(f"{len(tags)} tags but {len(values)} values")
        self.tags = tags
        self.ts = ts
        self.values = values
        self._samples: list[Sample] | None = None

    def samples(self) -> list[Sample]:
        made = self._samples
        if made is None:
            made = self._samples = good_samples(self.tags, self.ts, self.values)
        return made

    def sample(self, index: int) -> Sample:
        """One of its samples, without making the others."""
        made = self._samples
        if made is not None:
            return made[index]
        return Sample(self.tags[index], self.ts, self.values[index])

    def __len__(self) -> int:
        return len(self.tags)

    def __eq__(self, other: object) -> bool:
        """Equal to a sequence of the same samples (what `read()` returned before polls)."""
        if isinstance(other, Poll):
            return (self.tags, self.ts, list(self.values)) == (other.tags, other.ts,
                                                               list(other.values))  # fmt: skip
        if isinstance(other, list | tuple | SampleBatch):
            return self.samples() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, so unhashable like them

    def __repr__(self) -> str:  # without making the samples
        return f"Poll({self.tags!r}, {self.ts!r}, {list(self.values)!r})"


def record_count(item: object) -> int:
    """How many records an item of the records queue holds: a `Poll` its samples, else one."""
    return len(item) if isinstance(item, Poll) else 1


class SampleBatch(_SamplesMadeOnDemand):
    """Samples as the detector runner hands them on: `parts`, in arrival order, each a
    `Poll` or one `Sample`. A sequence of every sample (polls expanded, made once and kept),
    for whoever has no use for the polls; the hot consumers walk `parts`."""

    __slots__ = ("_flat", "_length", "parts")

    def __init__(self, parts: Sequence[Poll | Sample]) -> None:
        self.parts = parts
        self._length = sum(map(record_count, parts))
        self._flat: list[Sample] | None = None

    def samples(self) -> list[Sample]:
        flat = self._flat
        if flat is None:
            flat = []
            for part in self.parts:
                if isinstance(part, Poll):
                    flat += part.samples()
                else:
                    flat.append(part)
            self._flat = flat
        return flat

    def loose(self) -> list[Sample]:
        """The samples that are not part of a poll, in order."""
        return [part for part in self.parts if type(part) is Sample]

    def __len__(self) -> int:
        return self._length


def time_runs(samples: Sequence[Sample]) -> Iterator[tuple[int, int]]:
    """`(start, end)` of each run of consecutive samples with one time stamp: in a batch, the
    polls one after the other (the samples of a poll share its stamp)."""
    start = 0
    for _, run in groupby(map(_SAMPLE_TS, samples)):
        end = start + len(list(run))
        yield start, end
        start = end


@dataclass(frozen=True, slots=True)
class Waveform:
    """A block of vibration (or other) samples at a fixed rate. Never leaves the site."""

    tag: str
    ts: float
    sample_rate: float
    data: npt.NDArray[np.float64]
    unit: str = "g"
    running_speed_hz: float | None = None
    quality: Quality = Quality.GOOD


class FaultCode(enum.StrEnum):
    """The fault catalogue (DESIGN.md section 5). Each code maps to an ISO 14224 failure mode."""

    UNBALANCE = "unbalance"
    MISALIGNMENT = "misalignment"
    LOOSENESS = "looseness"
    BEARING_OUTER_RACE = "bearing.outer_race"
    BEARING_INNER_RACE = "bearing.inner_race"
    BEARING_ROLLING_ELEMENT = "bearing.rolling_element"
    BEARING_CAGE = "bearing.cage"
    VIBRATION_SEVERITY = "vibration.severity"
    THRESHOLD_HIGH = "threshold.high"
    THRESHOLD_LOW = "threshold.low"
    SENSOR_STUCK = "sensor.stuck"
    SENSOR_BAD_QUALITY = "sensor.bad_quality"
    COMM_LOST = "comm.lost"
    DETECTOR_FAILED = "detector.failed"
    # An ISA-18.2 alarm flood in one area: the incident that folds the flood's conditions.
    ALARM_FLOOD = "alarm.flood"


# ISO 14224 Table B.6 failure-mode codes, so the central system receives coded failures.
ISO14224_FAILURE_MODE: Mapping[str, str] = {
    FaultCode.UNBALANCE: "VIB",  # vibration
    FaultCode.MISALIGNMENT: "VIB",
    FaultCode.LOOSENESS: "VIB",
    FaultCode.BEARING_OUTER_RACE: "VIB",
    FaultCode.BEARING_INNER_RACE: "VIB",
    FaultCode.BEARING_ROLLING_ELEMENT: "VIB",
    FaultCode.BEARING_CAGE: "VIB",
    FaultCode.VIBRATION_SEVERITY: "VIB",
    FaultCode.THRESHOLD_HIGH: "HIO",  # high output
    FaultCode.THRESHOLD_LOW: "LOO",  # low output
    FaultCode.SENSOR_STUCK: "FOV",  # faulty output voltage / erratic output
    FaultCode.SENSOR_BAD_QUALITY: "ERO",  # erratic output
    FaultCode.COMM_LOST: "FTF",  # fail to function
    FaultCode.DETECTOR_FAILED: "OTH",
    FaultCode.ALARM_FLOOD: "OTH",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """What a detector concludes about an asset. `active` False means the finding cleared."""

    asset: str
    fault_code: FaultCode
    severity: Priority
    score: float
    detector: str
    message: str
    ts: float
    active: bool = True
    features: Mapping[str, float] = field(default_factory=dict)
    # Small JSON-able summary (peaks, zone, matched frequencies): evidence, never raw arrays.
    evidence: Mapping[str, Any] = field(default_factory=dict)
    signal: str | None = None
    value: float | None = None


class ConditionState(enum.StrEnum):
    NORMAL = "NORMAL"
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    CLEARING = "CLEARING"


class TicketState(enum.StrEnum):
    OPENED = "OPENED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    ASSIGNED = "ASSIGNED"
    IN_PROGRESS = "IN_PROGRESS"  # a technician started the work (`cmd/start`)
    ON_HOLD = "ON_HOLD"  # work waits for parts, access or production (`cmd/hold`)
    REPAIRED = "REPAIRED"
    VERIFYING = "VERIFYING"
    VERIFIED = "VERIFIED"
    REOPENED = "REOPENED"
    CLOSED = "CLOSED"
    CANCELLED = "CANCELLED"

    @property
    def is_open(self) -> bool:
        return self not in (TicketState.CLOSED, TicketState.CANCELLED)


def dedup_key(site: str, asset: str, fault_code: str, detector: str) -> str:
    """site + asset + fault code + detector: at most one open ticket per key (section 6)."""
    return f"{site}/{asset}/{fault_code}/{detector}"


@dataclass(frozen=True, slots=True)
class Condition:
    """The edge-owned alarm state for one dedup key."""

    key: str
    state: ConditionState
    since: float


@dataclass(frozen=True, slots=True)
class Ticket:
    """The work order as the gateway knows it."""

    id: str
    key: str
    site: str
    asset: str
    fault_code: str
    detector: str
    priority: Priority
    state: TicketState
    revision: int
    opened_at: float
    first_seen: float
    last_seen: float
    occurrences: int
    peak_value: float | None
    message: str
    condition_active: bool = True
    central_id: str | None = None
    acknowledged_at: float | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    # SLA deadlines computed at open from the site's SLA table; None on a ticket stored
    # without them.
    respond_by: float | None = None
    resolve_by: float | None = None
    closed_at: float | None = None
    # Small JSON facts owned by the ticket lifecycle: routing, failure coding,
    # knowledge, links (recurrence_of, incident), assignment, resolution, verification.
    attributes: Mapping[str, Any] = field(default_factory=dict)


class OutboxKind(enum.StrEnum):
    """Ticket messages are settled only by the central ack; the rest by PUBACK."""

    TICKET = "ticket"
    STATUS = "status"
    HEALTH = "health"
    SUMMARY = "summary"
    REPLY = "reply"

    @property
    def needs_central_ack(self) -> bool:
        return self is OutboxKind.TICKET


UserProperties = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A message committed for the uplink. `event_id` is the CloudEvents id, reused on resend.

    `content_type` and `user_properties` are the MQTT 5 properties decided when the message was
    built, kept with it so that a send never parses the payload again. `content_type` is None
    only for rows written before state.db schema version 5.
    """

    seq: int
    event_id: str
    topic: str
    payload: bytes
    kind: OutboxKind
    created_at: float
    attempts: int = 0
    last_sent_at: float | None = None
    settled_at: float | None = None
    ticket_id: str | None = None
    content_type: str | None = None
    user_properties: UserProperties = ()


# --- Noise-control state that survives a restart ---------------------------------------------
# The ticketing lifecycle produces these and state.db keeps them; defined here once because
# `gateway.ticketing` and `gateway.store` may not import each other (DESIGN.md section 1).


@dataclass(frozen=True, slots=True)
class Shelving:
    """An operator shelved the condition of a dedup key (ISA-18.2 shelving, at most 8 h)."""

    until: float | None  # None: one-shot, until the condition next clears
    reason: str
    by: str
    key: str = ""  # the dedup key shelved; with `set_at`, what state.db keeps across restarts
    set_at: float = 0.0

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """An asset in maintenance mode until `until`: its conditions are OUT_OF_SERVICE."""

    asset: str
    until: float
    by: str
    set_at: float


@dataclass(frozen=True, slots=True)
class FloodRecord:
    """An area's alarm flood in progress (ISA-18.2 flood), as saved and loaded."""

    area: str
    started_at: float
    incident_key: str | None
    published_members: int
    published_at: float | None  # None: the incident was never published
    # One JSON object per member: key, asset, fault_code, first_seen, arrivals.
    members: tuple[Mapping[str, Any], ...]
    folded: tuple[str, ...]
    quieted: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FloodArrival:
    """One new condition counted by the flood detector of an area."""

    area: str
    ts: float
    key: str
    asset: str
    fault_code: str


@dataclass(frozen=True, slots=True)
class StormMemberRecord:
    """One member of a flood (`scope` `area:<area>`) or of a storm by signature (`scope`
    `group:<group key>`), saved one row each so that a new member costs one row, not the
    whole storm. `finding`: what raised a held or folded condition of a storm (a
    JSON object with its `active` state), to open its ticket later, after a restart too."""

    scope: str
    key: str
    asset: str
    fault_code: str
    area: str
    first_seen: float
    arrivals: int
    member: bool = True
    folded: bool = False
    quieted: bool = False
    linked: bool = False
    held: bool = False
    finding: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """A group key's storm state: labels, the group_wait hold, the incident and its
    named root cause (JSON object), as saved and loaded. Members are `StormMemberRecord`s."""

    group_key: str
    labels: Mapping[str, str]
    hold_until: float | None
    incident_key: str | None
    started_at: float | None
    root: Mapping[str, Any] | None
    predecessor: str | None
    published_members: int
    published_at: float | None
    published_root: str | None


@dataclass(frozen=True, slots=True)
class ChatterRecord:
    """A condition flagged CHATTERING and the raise times that still count for it."""

    key: str
    raises: tuple[float, ...]
