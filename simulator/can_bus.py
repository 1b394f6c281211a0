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

Across processes (the demo's plant and gateway are separate processes, and `virtual`
works inside one only): `interface="slcan"` puts the machine behind a simulated USB-CAN adapter
on a serial line (`simulator.slcan`), and `run_can_plant` makes that line a socat pty pair
whose other end the gateway opens with python-can's own `slcan` interface, as on a real site.
`python -m simulator.can_bus --gateway-tty PATH` runs it as a process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal as posix_signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import can
import cantools
from cantools.database.can import Database
from cantools.database.can import Message as DbcMessage

from simulator.ptypair import pty_pair
from simulator.slcan import SlcanAdapter

log = logging.getLogger(__name__)

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
        # "slcan" here means the adapter's side of the serial line `channel`; python-can's own
        # slcan bus is the host's side, which the gateway opens.
        self._bus: can.BusABC = (
            SlcanAdapter(channel)
            if interface == "slcan"
            else can.Bus(interface=interface, channel=channel)
        )

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

    @property
    def bus(self) -> can.BusABC:
        """The bus it sends on: a `SlcanAdapter` for `interface="slcan"` (statistics, garbage)."""
        return self._bus

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


async def run_can_plant(
    gateway_tty: Path,
    *,
    stop_event: asyncio.Event,
    dbc_path: Path = DEMO_DBC,
    plant_tty: Path | None = None,
    period_s: float | None = None,
    overheat_after_s: float | None = None,
) -> None:
    """Serve the CAN machine behind a simulated slcan adapter until `stop_event` is set.

    Makes a socat pty pair: the gateway opens `gateway_tty` with `interface: slcan`; the
    machine's adapter holds `plant_tty` (default: `<gateway_tty>.plant` beside it). Both links
    and socat are gone when this returns. `overheat_after_s`: from then on the winding
    temperature climbs 1 degC/s to 40 degC above normal (75 -> 115 degC at the default load),
    the demo's story for a threshold ticket.
    """
    plant_tty = plant_tty or gateway_tty.with_name(gateway_tty.name + ".plant")
    async with (
        pty_pair(plant_tty, gateway_tty),
        CanMachine(str(plant_tty), dbc_path, interface="slcan") as machine,
    ):
        log.info("CAN plant ready: gateway reads slcan on `%s`.", gateway_tty)
        async with asyncio.TaskGroup() as tasks:
            if overheat_after_s is not None:
                tasks.create_task(
                    _overheat(machine, overheat_after_s, stop_event), name="can-plant-overheat"
                )
            await machine.run(stop_event, period_s=period_s)


async def _overheat(machine: CanMachine, after_s: float, stop_event: asyncio.Event) -> None:
    """Raise the winding temperature offset 1 degC per second up to 40 degC, from `after_s`."""
    delay_s = after_s
    while machine.temperature_offset_c < 40.0:
        try:
            async with asyncio.timeout(delay_s):
                await stop_event.wait()
            return
        except TimeoutError:
            pass
        if machine.temperature_offset_c == 0.0:
            log.info("CAN plant: winding temperature starts climbing.")
        machine.temperature_offset_c += 1.0
        delay_s = 1.0


def _cycle_s(message: DbcMessage) -> float:
    return message.cycle_time / 1000.0 if message.cycle_time else _DEFAULT_CYCLE_S


def _page_count(message: DbcMessage) -> int:
    pages: set[int] = set()
    for signal in message.signals:
        pages.update(signal.multiplexer_ids or ())
    return max(1, len(pages))


def main(argv: list[str] | None = None) -> int:
    """`python -m simulator.can_bus --gateway-tty PATH`: the CAN plant as a process of its own."""
    parser = argparse.ArgumentParser(prog="python -m simulator.can_bus", description=main.__doc__)
    parser.add_argument("--gateway-tty", type=Path, required=True, help="link the gateway opens")
    parser.add_argument("--plant-tty", type=Path, help="link the adapter holds")
    parser.add_argument("--dbc", type=Path, default=DEMO_DBC)
    parser.add_argument("--period-s", type=float, help="send every message at this period")
    parser.add_argument("--overheat-after-s", type=float, help="winding starts overheating")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)-7s %(name)s: %(message)s")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (posix_signal.SIGINT, posix_signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_can_plant(
            args.gateway_tty,
            stop_event=stop,
            dbc_path=args.dbc,
            plant_tty=args.plant_tty,
            period_s=args.period_s,
            overheat_after_s=args.overheat_after_s,
        )

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
