"""A motor controller on a CAN bus, driven from a DBC file (default: `demo_machine.dbc`).

It sends every DBC message at its GenMsgCycleTime (or a fixed `period_s`) on a python-can bus,
`virtual` by default so that tests and the demo need no hardware. Multiplexed messages send
their pages round-robin, as real controllers do. Faults for tests and the demo: stop a message
(the gateway must call its signals stale), send a malformed frame (wrong DLC), an unknown id,
an error frame or a bus-off. The physical values are modelled for the messages of
`demo_machine.dbc`; another DBC works with `send(message, values)` only.

    machine = CanMachine("demo-can")
    machine.pause("MotorStatus")
    machine.send_malformed("MotorData", length=3)
    await machine.run(stop_event)            # or run_can_machine(...) for the one-liner
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import can
import cantools
from cantools.database.can import Database
from cantools.database.can import Message as DbcMessage

DEMO_DBC = Path(__file__).with_name("demo_machine.dbc")
_DEFAULT_CYCLE_S = 0.1  # for messages without GenMsgCycleTime
_CAN_ERR_BUSOFF = 0x40  # Linux can/error.h error class


class CanMachine:
    """One simulated controller. Not thread-safe: use it from the event loop that runs it."""

    def __init__(
        self,
        channel: str,
        dbc_path: Path = DEMO_DBC,
        *,
        interface: str = "virtual",
        speed_rpm: float = 1480.0,
    ) -> None:
        database = cantools.database.load_file(str(dbc_path), database_format="dbc")
        assert isinstance(database, Database)
        self.database = database
        self.speed_rpm = speed_rpm
        self.load = 0.6  # 0..1: drives current and temperatures
        self.temperature_offset_c = 0.0  # fault injection: an overheating winding
        self.fault_code = 0
        self.operating_hours = 12_345.6
        self.start_count = 321
        self.frames_sent = 0
        self._paused: set[str] = set()
        self._pages: dict[str, int] = {}
        self._elapsed_s = 0.0
        self._bus = can.Bus(interface=interface, channel=channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._bus.shutdown()

    # --- control ---------------------------------------------------------------------------

    def pause(self, message: str) -> None:
        """Stop sending `message` (its signals must turn stale at the gateway)."""
        self._message(message)
        self._paused.add(message)

    def resume(self, message: str) -> None:
        self._paused.discard(message)

    def values(self, message: str) -> dict[str, float]:
        """The physical values the next frame of `message` carries (page chosen round-robin)."""
        load = self.load
        running = self.speed_rpm > 0
        if message == "MotorData":
            return {
                "SpeedRpm": self.speed_rpm,
                "CurrentA": round(4.0 + 40.0 * load if running else 0.0, 1),
                "WindingTemp": round(45.0 + 50.0 * load + self.temperature_offset_c),
                "DcLinkVoltage": round(560.0 + 3.0 * math.sin(self._elapsed_s), 1),
            }
        if message == "MotorStatus":
            page = self._pages.get(message, 0)
            if page == 0:
                state = 2 if self.fault_code else (1 if running else 0)
                return {"StatusPage": 0, "State": state, "FaultCode": self.fault_code}
            return {
                "StatusPage": 1,
                "OperatingHours": round(self.operating_hours, 1),
                "StartCount": self.start_count,
            }
        if message == "BearingTemps":
            return {
                "BearingTempDE": 40.0 + 25.0 * load + self.temperature_offset_c / 4,
                "BearingTempNDE": 38.0 + 20.0 * load,
            }
        raise KeyError(f"no values modelled for message {message!r}")

    def send(self, message: str, values: Mapping[str, float] | None = None) -> None:
        """Send one frame of `message`, with the modelled values unless `values` is given."""
        dbc_message = self._message(message)
        data = dbc_message.encode(dict(values if values is not None else self.values(message)))
        self._send(dbc_message.frame_id, data, extended=dbc_message.is_extended_frame)
        if dbc_message.is_multiplexed():
            self._pages[message] = (self._pages.get(message, 0) + 1) % _page_count(dbc_message)

    def send_malformed(self, message: str, *, length: int) -> None:
        """A frame of `message` with the wrong DLC (its first `length` bytes of a real one)."""
        dbc_message = self._message(message)
        data = dbc_message.encode(dict(self.values(message)))
        padded = (data + bytes(8))[:length]
        self._send(dbc_message.frame_id, padded, extended=dbc_message.is_extended_frame)

    def send_raw(self, frame_id: int, data: bytes, *, extended: bool = False) -> None:
        """Any frame, for example an id the DBC does not describe."""
        self._send(frame_id, data, extended=extended)

    def send_error_frame(self, *, bus_off: bool = False) -> None:
        self._bus.send(
            can.Message(
                arbitration_id=_CAN_ERR_BUSOFF if bus_off else 0x0,
                is_error_frame=True,
                is_extended_id=False,
                dlc=8,
                data=bytes(8),
            )
        )
        self.frames_sent += 1

    # --- run ------------------------------------------------------------------------------

    async def run(self, stop_event: asyncio.Event, *, period_s: float | None = None) -> None:
        """Send every unpaused message at its cycle time until `stop_event` is set."""
        cycles = {
            m.name: (period_s if period_s is not None else _cycle_s(m))
            for m in self.database.messages
        }
        due = dict.fromkeys(cycles, 0.0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not stop_event.is_set():
            elapsed_s = loop.time() - start
            if self.speed_rpm > 0:
                self.operating_hours += (elapsed_s - self._elapsed_s) / 3600.0
            self._elapsed_s = elapsed_s
            for name, cycle in cycles.items():
                if self._elapsed_s >= due[name]:
                    due[name] += cycle
                    if due[name] < self._elapsed_s:  # we fell behind: skip, do not burst
                        due[name] = self._elapsed_s + cycle
                    if name not in self._paused:
                        self.send(name)
            next_due = min(due.values()) - (loop.time() - start)
            try:
                async with asyncio.timeout(max(0.0, next_due)):
                    await stop_event.wait()
            except TimeoutError:
                continue

    def _message(self, name: str) -> DbcMessage:
        return self.database.get_message_by_name(name)

    def _send(self, frame_id: int, data: bytes, *, extended: bool) -> None:
        self._bus.send(
            can.Message(arbitration_id=frame_id, data=data, is_extended_id=extended, dlc=len(data))
        )
        self.frames_sent += 1


async def run_can_machine(
    channel: str,
    dbc_path: Path = DEMO_DBC,
    *,
    stop_event: asyncio.Event,
    period_s: float | None = None,
    interface: str = "virtual",
    machine: CanMachine | None = None,
) -> None:
    """Run a simulated controller on `channel` until `stop_event` is set.

    Pass your own `machine` to control it while it runs (pause a message, inject frames);
    it is then yours to close.
    """
    if machine is not None:
        await machine.run(stop_event, period_s=period_s)
        return
    async with CanMachine(channel, dbc_path, interface=interface) as own:
        await own.run(stop_event, period_s=period_s)


def _cycle_s(message: DbcMessage) -> float:
    return message.cycle_time / 1000.0 if message.cycle_time else _DEFAULT_CYCLE_S


def _page_count(message: DbcMessage) -> int:
    pages: set[int] = set()
    for signal in message.signals:
        pages.update(signal.multiplexer_ids or ())
    return max(1, len(pages))
