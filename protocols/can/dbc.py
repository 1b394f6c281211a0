"""DBC files: load them, bind configured signals to DBC signals, decode frames to values.

The only module besides `driver.py` that imports cantools. Everything here is plain values in,
plain values out, so `check-config` can run it without a bus and tests need no event loop.

Errors: a DBC that does not parse, or a signal the DBC does not hold, is a `ConfigError` (file,
line when cantools gives one): retrying will not fix a file, and `check-config` must catch it
before systemd starts the daemon. A frame that cannot be decoded is a `BadResponse`, which the
driver turns into BAD samples for that message's signals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cantools
from cantools.database.can import Database
from cantools.database.can import Message as DbcMessage
from cantools.database.errors import Error as CantoolsError

from gateway.core.errors import BadResponse, ConfigError, ConfigProblem
from protocols.can.config import CanSignal

# (arbitration id, extended) identifies a frame: 0x100 standard and 0x100 extended differ.
FrameKey = tuple[int, bool]


@dataclass(frozen=True, slots=True)
class SignalBinding:
    """One configured signal: where its value lands and what counts as fresh and plausible."""

    tag_id: str
    signal: str
    unit: str
    # None when the DBC gives no usable range ([0|0] is the common "not specified").
    minimum: float | None
    maximum: float | None
    # None when neither the config nor the DBC gives a cycle time: no stale detection.
    stale_after_s: float | None
    # The DBC's value table (VAL_) for the signal, value -> label; empty when it has none.
    labels: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DecodedValue:
    binding: SignalBinding
    value: float


@dataclass(frozen=True, slots=True)
class MessagePlan:
    """What to do with frames of one id: decode them and hand values to these bindings."""

    name: str
    frame_id: int
    extended: bool
    length: int
    bindings: tuple[SignalBinding, ...]
    _decode: Callable[[bytes], Mapping[str, float]]

    @property
    def key(self) -> FrameKey:
        return (self.frame_id, self.extended)

    def decode(self, data: bytes) -> list[DecodedValue]:
        """Values of the configured signals present in `data` (a multiplexed frame holds one page).

        Raises `BadResponse` when the frame cannot be trusted: a DLC other than the DBC length,
        or a multiplexer value the DBC does not define.
        """
        if len(data) != self.length:
            raise BadResponse(
                f"malformed frame: {len(data)} data bytes, DBC expects {self.length} for "
                f"`{self.name}`"
            )
        try:
            decoded = self._decode(data)
        except CantoolsError as exc:
            raise BadResponse(f"malformed frame `{self.name}`: {exc}") from exc
        values: list[DecodedValue] = []
        for binding in self.bindings:
            raw = decoded.get(binding.signal)
            if raw is not None:
                values.append(DecodedValue(binding, float(raw)))
        return values


def load_dbc(path: Path) -> Database:
    """Parse a DBC file. A missing or broken file is a `ConfigError` naming the file and line."""
    try:
        database = cantools.database.load_file(str(path), database_format="dbc", strict=True)
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(str(path), None, "", f"cannot read DBC file: {exc.strerror or exc}")]
        ) from exc
    except CantoolsError as exc:
        # UnsupportedDatabaseFormatError wraps the parser's error, which knows the line.
        cause = getattr(exc, "e_dbc", None) or exc
        line = getattr(cause, "line", None)
        message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise ConfigError(
            [ConfigProblem(str(path), line, "", f"DBC file does not parse: {message}")]
        ) from exc
    if not isinstance(database, Database):  # pragma: no cover - load_file("dbc") gives one
        raise ConfigError([ConfigProblem(str(path), None, "", "not a CAN database")])
    return database


def plan_messages(
    database: Database,
    signals: Sequence[CanSignal],
    *,
    device_id: str,
    config_file: str = "<device>",
) -> dict[FrameKey, MessagePlan]:
    """Bind every configured signal to its DBC signal, grouped by frame.

    Every unknown message or signal is reported at once (paths `signals[i].message` /
    `signals[i].signal`, for the loader to put line numbers on).
    """
    problems: list[ConfigProblem] = []
    bindings: dict[str, list[SignalBinding]] = {}
    messages: dict[str, DbcMessage] = {}
    for index, configured in enumerate(signals):
        message = _find_message(database, configured.message)
        if message is None:
            problems.append(
                ConfigProblem(
                    config_file,
                    None,
                    f"signals[{index}].message",
                    f"DBC has no message {_describe(configured.message)}",
                )
            )
            continue
        try:
            dbc_signal = message.get_signal_by_name(configured.signal)
        except KeyError:
            problems.append(
                ConfigProblem(
                    config_file,
                    None,
                    f"signals[{index}].signal",
                    f"DBC message `{message.name}` has no signal `{configured.signal}`",
                )
            )
            continue
        messages[message.name] = message
        bindings.setdefault(message.name, []).append(
            SignalBinding(
                tag_id=f"{device_id}.{configured.name}",
                signal=dbc_signal.name,
                unit=configured.unit if configured.unit is not None else (dbc_signal.unit or ""),
                minimum=_bound(dbc_signal.minimum, dbc_signal.maximum)[0],
                maximum=_bound(dbc_signal.minimum, dbc_signal.maximum)[1],
                stale_after_s=_stale_after_s(configured, message, dbc_signal.multiplexer_ids),
                labels={int(k): str(v) for k, v in (dbc_signal.choices or {}).items()},
            )
        )
    if problems:
        raise ConfigError(problems)
    plans: dict[FrameKey, MessagePlan] = {}
    for name, message in messages.items():
        plan = MessagePlan(
            name=name,
            frame_id=message.frame_id,
            extended=message.is_extended_frame,
            length=message.length,
            bindings=tuple(bindings[name]),
            _decode=_decoder(message),
        )
        plans[plan.key] = plan
    return plans


def signal_units(
    dbc_path: Path,
    signals: Sequence[CanSignal],
    *,
    device_id: str,
    config_file: str = "<device>",
) -> dict[str, str]:
    """Tag id -> engineering unit (the config override, else the DBC's), to build the Tags.

    Also the check `check-config` needs: raises `ConfigError` when the DBC does not parse or
    lacks a configured message or signal.
    """
    plans = plan_messages(load_dbc(dbc_path), signals, device_id=device_id, config_file=config_file)
    return {b.tag_id: b.unit for plan in plans.values() for b in plan.bindings}


def known_frames(database: Database) -> frozenset[FrameKey]:
    """Every frame the DBC describes, configured or not (to tell unknown ids from unused ones)."""
    return frozenset((m.frame_id, m.is_extended_frame) for m in database.messages)


def plausibility(binding: SignalBinding, value: float) -> str | None:
    """Why a decoded value cannot be taken at face value, or None when it can."""
    if not math.isfinite(value):
        return f"not a finite number ({value})"
    low, high = binding.minimum, binding.maximum
    if low is not None and high is not None and not low <= value <= high:
        return f"{value:g} outside DBC range [{low:g}, {high:g}]"
    return None


def _decoder(message: DbcMessage) -> Callable[[bytes], Mapping[str, float]]:
    # Numbers, not choice names: a Sample carries a float, and the state text can be looked
    # up later from the DBC. Length is checked by MessagePlan.decode before this runs.
    def decode(data: bytes) -> Mapping[str, float]:
        return message.decode_simple(data, decode_choices=False, scaling=True)  # type: ignore[return-value]

    return decode


def _find_message(database: Database, reference: str | int) -> DbcMessage | None:
    frame_id: int | None = reference if isinstance(reference, int) else None
    if isinstance(reference, str):
        try:
            return database.get_message_by_name(reference)
        except KeyError:
            # "0x100" written as a quoted string in YAML still means a frame id.
            try:
                frame_id = int(reference, 0)
            except ValueError:
                return None
    for message in database.messages:
        if message.frame_id == frame_id:
            return message
    return None


def _describe(reference: str | int) -> str:
    return f"with frame id {reference:#x}" if isinstance(reference, int) else f"`{reference}`"


def _bound(minimum: float | None, maximum: float | None) -> tuple[float | None, float | None]:
    if minimum is None or maximum is None or minimum >= maximum:
        return (None, None)
    return (float(minimum), float(maximum))


def _stale_after_s(
    configured: CanSignal, message: DbcMessage, multiplexer_ids: list[int] | None
) -> float | None:
    if configured.cycle_ms is not None:
        cycle_ms = configured.cycle_ms
    elif message.cycle_time:
        cycle_ms = float(message.cycle_time)
        if multiplexer_ids:
            # GenMsgCycleTime is the period of the frame; senders usually round-robin the
            # pages, so one page comes back only every (number of pages) cycles.
            cycle_ms *= _page_count(message)
    else:
        return None
    return cycle_ms * configured.stale_after_cycles / 1000.0


def _page_count(message: DbcMessage) -> int:
    pages: set[int] = set()
    for signal in message.signals:
        pages.update(signal.multiplexer_ids or ())
    return max(1, len(pages))


# --- describing a DBC for `edge-gateway import-dbc` ------------------------------------------


@dataclass(frozen=True, slots=True)
class DbcSignalInfo:
    """One signal of a DBC message, as plain values."""

    name: str
    unit: str
    scale: float
    offset: float
    minimum: float | None
    maximum: float | None
    labels: Mapping[int, str]
    is_multiplexer: bool  # the switch selecting a multiplexed message's page
    pages: tuple[int, ...]  # pages carrying it (empty: every frame)
    comment: str


@dataclass(frozen=True, slots=True)
class DbcMessageInfo:
    name: str
    frame_id: int
    extended: bool
    length: int
    cycle_ms: float | None
    senders: tuple[str, ...]
    comment: str
    signals: tuple[DbcSignalInfo, ...]


def describe_dbc(path: Path) -> list[DbcMessageInfo]:
    """Every message and signal of a DBC file, in file order. Raises `ConfigError` when the
    file cannot be read or does not parse (as `load_dbc`)."""
    database = load_dbc(path)
    messages = []
    for message in database.messages:
        signals = tuple(
            DbcSignalInfo(
                name=signal.name,
                unit=signal.unit or "",
                scale=float(signal.scale),
                offset=float(signal.offset),
                minimum=_bound(signal.minimum, signal.maximum)[0],
                maximum=_bound(signal.minimum, signal.maximum)[1],
                labels={int(k): str(v) for k, v in (signal.choices or {}).items()},
                is_multiplexer=bool(signal.is_multiplexer),
                pages=tuple(signal.multiplexer_ids or ()),
                comment=_comment(signal.comment),
            )
            for signal in message.signals
        )
        messages.append(
            DbcMessageInfo(
                name=message.name,
                frame_id=message.frame_id,
                extended=bool(message.is_extended_frame),
                length=message.length,
                cycle_ms=float(message.cycle_time) if message.cycle_time else None,
                senders=tuple(message.senders or ()),
                comment=_comment(message.comment),
                signals=signals,
            )
        )
    return messages


def _comment(comment: object) -> str:
    """cantools gives a string, or a dict of language -> string for multilingual files."""
    if isinstance(comment, dict):
        comment = next(iter(comment.values()), "")
    return str(comment or "")
