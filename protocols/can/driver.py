"""The CAN driver: listens on one python-can channel and turns DBC-described frames into Samples.

The only module importing python-can. It never sends on the bus.

Receiving: a dedicated thread calls `bus.recv()` with a short timeout and hands frames to the
event loop in batches through a bounded buffer. Why not `can.Notifier` + `AsyncBufferedReader`:
that reader's asyncio queue is unbounded and wakes the loop once per frame; ours wakes it once
per batch (cheap at thousands of frames/s) and bounds memory with an explicit policy. Why not
`asyncio.to_thread(bus.recv)`: one executor hop per frame, and executor threads outlive the
driver. The thread checks a stop flag every `receive_poll_s` (python-can has no portable way to
interrupt a blocking `recv`), which bounds how long exit waits for it.

Stale detection does not tick: the loop sleeps until the earliest moment a signal could turn
stale (at most `max_wait_s`), so an idle channel costs a few wake-ups per second.

Full-queue policy (DESIGN.md section 3, "streams declare what happens"): when the pipeline does
not take records, the source waits on the queue and stops draining this driver; the receive
thread keeps reading the bus (so the interface's own buffer never overflows silently) into a
buffer of `receive_buffer_frames`; once that is full the OLDEST frames are dropped and counted
as `overruns`. CAN traffic is cyclic, so the newest frame of each message is the one worth
keeping. Memory stays bounded.

Serial-line interfaces (slcan, the protocol of CANable-style USB adapters): python-can
parses each ASCII line without checks, so line noise such as `t10` or `t10Z8` comes out of
`recv()` as an IndexError or ValueError. One such line is counted as malformed and skipped, never
a value; `_MAX_GARBLED_IN_A_ROW` of them in a row mean the line is unusable, and the stream
fails so that the source reconnects with a fresh bus. (A non-ASCII byte is a CanOperationError
from python-can, and its slcan keeps the byte in its line buffer: the stream fails at once.)

Opening runs off the event loop: python-can's slcan sleeps 2 s after opening the port, and USB
interfaces can block as long, while the loop serves every other device (DESIGN.md section 9).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import can

from gateway.core.clock import Clock
from gateway.core.errors import (
    BadResponse,
    ConfigError,
    ConfigProblem,
    DeviceUnreachable,
    DriverError,
)
from gateway.core.interfaces import Record
from gateway.core.records import Quality, Sample, Tag
from protocols.can.config import CanConnection, CanSignal
from protocols.can.dbc import (
    FrameKey,
    MessagePlan,
    SignalBinding,
    known_frames,
    load_dbc,
    plan_messages,
    plausibility,
)

log = logging.getLogger(__name__)

_THREAD_JOIN_TIMEOUT_S = 2.0
_MAX_BATCH = 1024  # frames handled per wake-up, so one burst cannot hog the loop
_MAX_GARBLED_IN_A_ROW = 20  # undecodable interface lines in a row before the stream fails
# What python-can raises when an interface fails (ValueError/IndexError: see _FrameReceiver).
_INTERFACE_FAILURES = (can.CanError, OSError, ValueError, IndexError)
# Linux can/error.h: error class bits carried in the id of an error frame.
_CAN_ERR_BUSOFF = 0x40


@dataclass(frozen=True, slots=True)
class CanStatistics:
    frames: int = 0  # every frame received, error frames included
    decoded: int = 0  # frames decoded into samples
    unknown_ids: int = 0  # ids the DBC does not describe
    ignored: int = 0  # ids in the DBC with no configured signal, and remote frames
    # frames that could not be decoded (wrong DLC, unknown mux page) and serial lines the
    # interface could not parse (slcan line noise)
    malformed: int = 0
    error_frames: int = 0
    stale: int = 0  # transitions of a signal to stale
    overruns: int = 0  # frames dropped because the pipeline did not keep up


def valid_interfaces() -> frozenset[str]:
    """python-can interface names, for `check-config` (the config model cannot import can)."""
    return frozenset(can.VALID_INTERFACES)


class CanDriver:
    """A `StreamingDriver` for one CAN channel described by one DBC file."""

    def __init__(
        self,
        device_id: str,
        connection: CanConnection,
        signals: Sequence[CanSignal],
        tags: Sequence[Tag],
        dbc_path: Path,
        clock: Clock,
        *,
        config_file: str | None = None,
        receive_poll_s: float = 0.25,
        max_wait_s: float = 1.0,
    ) -> None:
        """`receive_poll_s`: how often the receive thread looks at its stop flag (exit waits
        up to this long). `max_wait_s`: the longest the loop sleeps between stale checks when
        no frame comes; only a test clock that jumps needs it shorter."""
        self._device_id = device_id
        self._connection = connection
        self._signals = tuple(signals)
        self._tags = tuple(tags)
        self._dbc_path = dbc_path
        self._clock = clock
        self._receive_poll_s = receive_poll_s
        self._max_wait_s = max_wait_s
        # Named in ConfigProblems; the loader knows the device file, the driver may not.
        self._config_file = config_file or f"<device {device_id}>"
        expected = {f"{device_id}.{s.name}" for s in self._signals}
        missing = sorted(expected - {t.id for t in self._tags})
        if missing:  # a wiring bug in the composition root, not a user error
            raise ValueError(f"no Tag given for CAN signals {missing}")
        self._bus: can.BusABC | None = None
        self._receiver: _FrameReceiver | None = None
        self._plans: dict[FrameKey, MessagePlan] = {}
        self._known: frozenset[FrameKey] = frozenset()
        self._by_tag: dict[str, SignalBinding] = {}
        self._last_seen: dict[str, float] = {}
        self._stale: set[str] = set()
        self._next_stale_check = math.inf
        self._error_times: collections.deque[float] = collections.deque()
        self._counts = collections.Counter[str]()
        # Tag id -> (message, frame id, the frame it was last decoded from), for `probe`:
        # per signal, since the pages of a multiplexed message carry different signals.
        self._last_raw: dict[str, tuple[str, int, bytes | bytearray]] = {}

    @property
    def endpoint(self) -> str:
        return f"{self._connection.interface}:{self._connection.channel}"

    def tags(self) -> Sequence[Tag]:
        return self._tags

    def statistics(self) -> CanStatistics:
        receiver = self._receiver
        overruns = receiver.overruns if receiver is not None else 0
        garbled = receiver.garbled if receiver is not None else 0
        return CanStatistics(
            frames=self._counts["frames"],
            decoded=self._counts["decoded"],
            unknown_ids=self._counts["unknown_ids"],
            ignored=self._counts["ignored"],
            malformed=self._counts["malformed"] + garbled,
            error_frames=self._counts["error_frames"],
            stale=self._counts["stale"],
            overruns=overruns + self._counts["overruns"],
        )

    # --- Inspectable (edge-gateway probe) ------------------------------------------------------

    def describe_plan(self) -> list[str]:
        """The frames listened to (known once entered: the DBC is read then)."""
        lines = [f"listening on {self.endpoint} (never sends)"]
        for plan in self._plans.values():
            names = ", ".join(b.tag_id.split(".", 1)[-1] for b in plan.bindings)
            stale = [b.stale_after_s for b in plan.bindings if b.stale_after_s is not None]
            after = f", stale after {max(stale) * 1000:.0f} ms" if stale else ""
            kind = "extended" if plan.extended else "standard"
            lines.append(
                f"{plan.name} ({kind} id {plan.frame_id:#x}, {plan.length} bytes{after}): {names}"
            )
        return lines

    def raw_values(self) -> dict[str, str]:
        return {
            tag: f"{name} {frame_id:#x}: {bytes(data).hex(' ')}"
            for tag, (name, frame_id, data) in self._last_raw.items()
        }

    def state_labels(self) -> dict[str, dict[int, str]]:
        return {
            b.tag_id: dict(b.labels) for plan in self._plans.values() for b in plan.bindings
            if b.labels
        }  # fmt: skip

    async def __aenter__(self) -> Self:
        # The DBC first: a broken file is a ConfigError whatever the state of the bus.
        database = load_dbc(self._dbc_path)
        self._plans = plan_messages(
            database, self._signals, device_id=self._device_id, config_file=self._config_file
        )
        self._known = known_frames(database)
        self._by_tag = {b.tag_id: b for plan in self._plans.values() for b in plan.bindings}
        self._bus = await self._open_bus_off_loop()
        self._receiver = _FrameReceiver(
            self._bus,
            asyncio.get_running_loop(),
            capacity=self._connection.receive_buffer_frames,
            name=f"can-recv[{self._device_id}]",
            poll_s=self._receive_poll_s,
        )
        # A signal that never arrives goes stale `stale_after` after we started listening.
        start = self._clock.monotonic()
        self._last_seen = dict.fromkeys(self._by_tag, start)
        self._next_stale_check = min(
            (start + b.stale_after_s for b in self._by_tag.values() if b.stale_after_s),
            default=math.inf,
        )
        self._receiver.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        receiver, self._receiver = self._receiver, None
        bus, self._bus = self._bus, None
        try:
            if receiver is not None:
                await receiver.stop()
                self._counts["overruns"] += receiver.overruns
                self._counts["malformed"] += receiver.garbled
        finally:  # even when cancelled while waiting for the thread: release the interface
            if bus is not None:
                try:
                    bus.shutdown()
                except (can.CanError, OSError) as error:  # closing must never raise (STYLE.md)
                    log.debug("Closing CAN channel `%s` failed: %s", self.endpoint, error)

    async def records(self) -> AsyncIterator[Record]:
        """Samples as frames arrive, plus BAD samples when a message goes stale.

        Raises `DeviceUnreachable` on bus-off, on `error_frames_per_s_limit` error frames
        within one second, or when the interface fails.

        No `source_ts`: a CAN frame carries no time of its own, and the receive timestamp
        python-can gives is not epoch time on every interface (pcan, kvaser count from the
        adapter's start), so it would look like a source time without being one.
        """
        receiver = self._receiver
        if receiver is None:
            raise RuntimeError("CanDriver.records() called outside `async with`")
        while True:
            wait_s = self._next_stale_check - self._clock.monotonic()
            frames = await receiver.next_batch(wait_s=min(self._max_wait_s, max(0.001, wait_s)))
            now = self._clock.now()
            mono = self._clock.monotonic()
            for frame in frames:
                for record in self._handle(frame, now, mono):
                    yield record
            if mono >= self._next_stale_check:
                for record in self._check_stale(now, mono):
                    yield record

    # --- frame handling ----------------------------------------------------------------------

    def _handle(self, frame: can.Message, now: float, mono: float) -> list[Sample]:
        self._counts["frames"] += 1
        if frame.is_error_frame:
            self._on_error_frame(frame, mono)
            return []
        if frame.is_remote_frame:
            self._counts["ignored"] += 1
            return []
        key = (frame.arbitration_id, frame.is_extended_id)
        plan = self._plans.get(key)
        if plan is None:
            self._counts["ignored" if key in self._known else "unknown_ids"] += 1
            return []
        try:
            values = plan.decode(bytes(frame.data))
        except BadResponse as error:
            # Never a value from a frame we cannot trust: BAD for every signal it carries.
            self._counts["malformed"] += 1
            return [Sample.bad(b.tag_id, now, str(error)) for b in plan.bindings]
        self._counts["decoded"] += 1
        samples: list[Sample] = []
        raw = (plan.name, plan.frame_id, frame.data)
        for decoded in values:
            binding = decoded.binding
            self._last_seen[binding.tag_id] = mono
            self._last_raw[binding.tag_id] = raw
            if binding.tag_id in self._stale and binding.stale_after_s is not None:
                self._stale.discard(binding.tag_id)
                self._next_stale_check = min(self._next_stale_check, mono + binding.stale_after_s)
            doubt = plausibility(binding, decoded.value)
            if doubt is None:
                samples.append(Sample(binding.tag_id, now, decoded.value))
            elif doubt.startswith("not a finite"):
                samples.append(Sample.bad(binding.tag_id, now, doubt))
            else:
                # Outside the DBC range: kept, but flagged so no detector takes it as fact.
                samples.append(
                    Sample(binding.tag_id, now, decoded.value, Quality.UNCERTAIN, reason=doubt)
                )
        return samples

    def _on_error_frame(self, frame: can.Message, mono: float) -> None:
        self._counts["error_frames"] += 1
        if frame.arbitration_id & _CAN_ERR_BUSOFF:
            raise DeviceUnreachable(f"CAN channel `{self.endpoint}` is bus-off")
        # A single error frame is normal on a real bus; a burst means the bus is not usable.
        self._error_times.append(mono)
        while self._error_times and mono - self._error_times[0] > 1.0:
            self._error_times.popleft()
        limit = self._connection.error_frames_per_s_limit
        if len(self._error_times) >= limit:
            self._error_times.clear()
            raise DeviceUnreachable(
                f"CAN channel `{self.endpoint}` reported {limit} error frames within 1 s"
            )

    def _check_stale(self, now: float, mono: float) -> list[Sample]:
        """BAD samples for signals that just turned stale; plans the next check."""
        samples: list[Sample] = []
        next_check = math.inf
        for tag_id, binding in self._by_tag.items():
            if binding.stale_after_s is None or tag_id in self._stale:
                continue
            silent_s = mono - self._last_seen[tag_id]
            if silent_s >= binding.stale_after_s:
                self._stale.add(tag_id)
                self._counts["stale"] += 1
                samples.append(
                    Sample.bad(tag_id, now, f"stale: no frame for {round(silent_s * 1000)} ms")
                )
            else:
                next_check = min(next_check, self._last_seen[tag_id] + binding.stale_after_s)
        self._next_stale_check = next_check
        return samples

    # --- bus ---------------------------------------------------------------------------------

    async def _open_bus_off_loop(self) -> can.BusABC:
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(None, self._open_bus)
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The thread cannot be stopped; close the bus it opens, or the port stays taken.
            opening.add_done_callback(self._shut_down_late_bus)
            raise

    def _shut_down_late_bus(self, opening: asyncio.Future[can.BusABC]) -> None:
        if opening.cancelled() or opening.exception() is not None:
            return
        try:
            opening.result().shutdown()
        except (can.CanError, OSError) as error:
            log.debug("Closing CAN channel `%s` failed: %s", self.endpoint, error)

    def _open_bus(self) -> can.BusABC:
        connection = self._connection
        if connection.interface not in can.VALID_INTERFACES:
            known = ", ".join(sorted(can.VALID_INTERFACES))
            raise ConfigError(
                [
                    ConfigProblem(
                        self._config_file,
                        None,
                        "connection.interface",
                        f"unknown python-can interface `{connection.interface}`; known: {known}",
                    )
                ]
            )
        filters: list[can.typechecking.CanFilter] = []
        for f in connection.filters:
            can_filter: can.typechecking.CanFilter = {"can_id": f.can_id, "can_mask": f.can_mask}
            if f.extended is not None:
                can_filter["extended"] = f.extended
            filters.append(can_filter)
        # Only pass a bitrate when configured: some interfaces reject the keyword.
        options: dict[str, int] = {}
        if connection.bitrate is not None:
            options["bitrate"] = connection.bitrate
        try:
            return can.Bus(
                interface=connection.interface,
                channel=connection.channel,
                receive_own_messages=connection.receive_own_messages,
                can_filters=filters or None,
                **options,  # type: ignore[arg-type]
            )
        except (can.CanError, OSError, ImportError) as error:
            # Missing vendor library, unplugged adapter, `can0` down: a device problem the
            # source retries with backoff, not a crash.
            raise DeviceUnreachable(
                f"cannot open CAN channel `{self.endpoint}`: {error}"
            ) from error


class _FrameReceiver:
    """Runs `bus.recv()` in one thread; the loop takes frames in batches from a bounded deque."""

    def __init__(
        self,
        bus: can.BusABC,
        loop: asyncio.AbstractEventLoop,
        *,
        capacity: int,
        name: str,
        poll_s: float,
    ) -> None:
        self._bus = bus
        self._poll_s = poll_s
        self._loop = loop
        self._capacity = capacity
        # deque(maxlen) drops from the left on append: the drop-oldest policy, atomically.
        self._buffer: collections.deque[can.Message] = collections.deque(maxlen=capacity)
        self._stopping = threading.Event()
        self._wake_pending = False
        self._wakeup = asyncio.Event()
        self._finished: asyncio.Future[None] = loop.create_future()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._name = name
        self.overruns = 0
        self.garbled = 0  # interface lines recv() could not parse (see the module docstring)

    def start(self) -> None:
        self._thread.start()

    async def next_batch(self, wait_s: float) -> list[can.Message]:
        """Frames received so far (at most `_MAX_BATCH`); waits up to `wait_s` for the first."""
        # Order matters: clear the flag, then look at the buffer. A frame appended after the
        # look schedules a wake-up because the flag is clear; one appended before is seen.
        self._wake_pending = False
        self._wakeup.clear()
        if not self._buffer and not self._finished.done():
            try:
                async with asyncio.timeout(wait_s):
                    await self._wakeup.wait()
            except TimeoutError:
                pass  # nothing arrived: the caller still runs its stale check
        batch: list[can.Message] = []
        while self._buffer and len(batch) < _MAX_BATCH:
            batch.append(self._buffer.popleft())
        if not batch and self._failure is not None:
            if isinstance(self._failure, DriverError):
                raise self._failure
            if isinstance(self._failure, _INTERFACE_FAILURES):
                raise DeviceUnreachable(f"CAN receive failed: {self._failure}") from self._failure
            # Anything else is a bug: surface it instead of returning empty batches forever.
            raise RuntimeError(f"CAN receive thread `{self._name}` crashed") from self._failure
        return batch

    async def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            try:
                async with asyncio.timeout(_THREAD_JOIN_TIMEOUT_S):
                    await asyncio.shield(self._finished)
            except TimeoutError:
                log.warning("CAN receive thread `%s` did not stop in time.", self._thread.name)
        # The thread has signalled its last act; join returns at once.
        self._thread.join(timeout=_THREAD_JOIN_TIMEOUT_S)

    def _run(self) -> None:
        garbled_in_row = 0
        try:
            while not self._stopping.is_set():
                try:
                    frame = self._bus.recv(timeout=self._poll_s)
                except (ValueError, IndexError) as error:
                    if self._stopping.is_set():
                        break
                    garbled_in_row += 1
                    self._on_garbled(error, garbled_in_row)
                    continue
                garbled_in_row = 0
                if frame is None:
                    continue
                if len(self._buffer) == self._capacity:
                    self.overruns += 1
                self._buffer.append(frame)
                if not self._wake_pending:
                    self._wake_pending = True
                    self._notify(self._wakeup.set)
        except (*_INTERFACE_FAILURES, BadResponse) as error:
            # ValueError: python-can raises it for a bus shut down under our feet.
            self._failure = error
            self._notify(self._wakeup.set)
        except BaseException as error:
            # A bug: next_batch() re-raises it in the loop; the thread still dies loudly.
            self._failure = error
            self._notify(self._wakeup.set)
            raise
        finally:
            self._notify(self._set_finished)

    def _on_garbled(self, error: Exception, in_row: int) -> None:
        """Count a line the interface could not parse; fail when they keep coming."""
        self.garbled += 1
        if self.garbled == 1:
            log.warning(
                "Receive thread `%s` skipped a line the CAN interface could not parse (%s: %s); "
                "such lines are counted as malformed.",
                self._name,
                type(error).__name__,
                error,
            )
        if in_row >= _MAX_GARBLED_IN_A_ROW:
            raise BadResponse(
                f"{in_row} lines in a row the CAN interface could not parse; last: "
                f"{type(error).__name__}: {error}"
            ) from error

    def _set_finished(self) -> None:
        if not self._finished.done():
            self._finished.set_result(None)

    def _notify(self, callback: Callable[[], object]) -> None:
        try:
            self._loop.call_soon_threadsafe(callback)
        except RuntimeError:
            # The loop is closed: nobody is left to wake, and the thread is about to end.
            self._stopping.set()
