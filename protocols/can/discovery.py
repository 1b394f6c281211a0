"""`edge-gateway import-dbc FILE.dbc [--message NAME...]`: a CAN device file drafted from a DBC.

Every signal of the chosen messages (all by default) becomes an entry of `signals`, named in
snake case after the DBC signal, with the unit, scaling, range, cycle time and value labels
the DBC gives written as comments: the device file takes the unit and cycle time from the DBC
itself, so they are not repeated as settings. A multiplexer switch (the signal that selects a
page) is left out: it is not a measurement. Pure apart from reading the DBC (through
`protocols.can.dbc`, the cantools home).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.core.plugins import DeviceDraft, DiscoveryCommand, Option
from gateway.core.yaml_text import comment, flow_mapping, scalar

if TYPE_CHECKING:  # without importing cantools when the CLI starts
    from protocols.can.dbc import DbcMessageInfo, DbcSignalInfo


def snake_case(name: str) -> str:
    """`SpeedRpm` -> `speed_rpm`, `BearingTempDE` -> `bearing_temp_de`, `DC-Link V` ->
    `dc_link_v`: a tag name the device file accepts."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return text or "signal"


def device_id_for(path: Path) -> str:
    text = re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-_")
    return text if text and text[0].isalnum() else f"can-{text or 'device'}"


def select_messages(
    messages: Sequence[DbcMessageInfo], wanted: Sequence[str]
) -> list[DbcMessageInfo]:
    """The messages named (by name or frame id, `0x100`), in the DBC's order; all when none
    is named. Raises ValueError naming what the DBC has for a name it does not."""
    if not wanted:
        return list(messages)
    chosen: list[DbcMessageInfo] = []
    for reference in wanted:
        found = _find(messages, reference)
        if found is None:
            known = ", ".join(m.name for m in messages)
            raise ValueError(f"the DBC has no message `{reference}`; it has: {known}")
        if found not in chosen:
            chosen.append(found)
    order = {m.name: i for i, m in enumerate(messages)}
    return sorted(chosen, key=lambda m: order[m.name])


def _find(messages: Sequence[DbcMessageInfo], reference: str) -> DbcMessageInfo | None:
    for message in messages:
        if message.name == reference:
            return message
    try:
        frame_id = int(reference, 0)
    except ValueError:
        return None
    return next((m for m in messages if m.frame_id == frame_id), None)


def draft_from_dbc(
    messages: Sequence[DbcMessageInfo],
    *,
    dbc_reference: str,
    device_id: str,
    interface: str,
    channel: str,
    bitrate: int | None,
    command: str,
) -> DeviceDraft:
    """The device file: a connection naming the DBC as `dbc_reference`, and the signals."""
    entries: list[tuple[str, DbcMessageInfo, DbcSignalInfo]] = []
    skipped: list[str] = []
    for message in messages:
        for signal in message.signals:
            if signal.is_multiplexer:
                skipped.append(f"{message.name}.{signal.name}")
                continue
            entries.append((snake_case(signal.name), message, signal))
    if not entries:
        raise ValueError("the chosen messages hold no signal to read")
    names = _unique_names(entries)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Drafted by `{comment(command)}` on {when}:",
        f"# {_count(len(entries), 'signal')} of {_count(len(messages), 'DBC message')}."
        " Units and cycle times come from the DBC",
        "# (the comments show them). Review the names and the connection, add rules, then run",
        "# `edge-gateway check-config` and `edge-gateway probe` on this file.",
        f"id: {scalar(device_id)}",
        "connection:",
        "  protocol: can",
        f"  interface: {scalar(interface)}",
        f"  channel: {scalar(channel)}",
    ]
    if bitrate is not None:
        lines.append(f"  bitrate: {bitrate}")
    lines += [f"  dbc: {scalar(dbc_reference)}", "signals:"]
    current: str | None = None
    for (_, message, signal), name in zip(entries, names, strict=True):
        if message.name != current:
            current = message.name
            lines.append(f"  # {_message_text(message)}")
        entry = flow_mapping({"name": name, "message": message.name, "signal": signal.name})
        lines.append(f"  - {entry}  # {_signal_text(signal)}")
    notes = [f"The multiplexer switch {s} is not a measurement; left out." for s in skipped]
    return DeviceDraft(device_id, "\n".join(lines) + "\n", tuple(notes))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _unique_names(entries: Sequence[tuple[str, DbcMessageInfo, DbcSignalInfo]]) -> list[str]:
    """Snake-case names; a name two messages share gets its message as a prefix."""
    counts: dict[str, int] = {}
    for name, _, _ in entries:
        counts[name] = counts.get(name, 0) + 1
    names = []
    taken: set[str] = set()
    for name, message, _ in entries:
        chosen = name if counts[name] == 1 else f"{snake_case(message.name)}_{name}"
        base, number = chosen, 2
        while chosen in taken:
            chosen, number = f"{base}_{number}", number + 1
        taken.add(chosen)
        names.append(chosen)
    return names


def _message_text(message: DbcMessageInfo) -> str:
    kind = "extended" if message.extended else "standard"
    cycle = f", every {message.cycle_ms:g} ms" if message.cycle_ms else ", no cycle time in the DBC"
    sender = f", from {', '.join(message.senders)}" if message.senders else ""
    about = f": {message.comment}" if message.comment else ""
    return comment(f"{message.name} ({kind} id {message.frame_id:#x}, {message.length} bytes"
                   f"{cycle}{sender}){about}")  # fmt: skip


def _signal_text(signal: DbcSignalInfo) -> str:
    parts = [signal.unit or "no unit"]
    if signal.scale != 1 or signal.offset != 0:
        parts.append(f"x{signal.scale:.10g} {signal.offset:+.10g}")
    if signal.minimum is not None and signal.maximum is not None:
        parts.append(f"{signal.minimum:.10g}..{signal.maximum:.10g}")
    if signal.pages:
        parts.append(f"page {', '.join(str(p) for p in signal.pages)}")
    if signal.labels:
        labels = ", ".join(f"{value} {label}" for value, label in signal.labels.items())
        parts.append(f"labels {labels}")
    if signal.comment:
        parts.append(signal.comment)
    return comment("; ".join(parts))


# --- the command -------------------------------------------------------------------------


async def _draft(options: Mapping[str, Any], folder: Path | None) -> DeviceDraft:
    return await asyncio.to_thread(_draft_from_file, options, folder)


def _draft_from_file(options: Mapping[str, Any], folder: Path | None) -> DeviceDraft:
    from protocols.can.dbc import describe_dbc  # cantools, only when the command runs

    path = Path(options["file"])
    if not path.is_file():
        raise FileNotFoundError(f"DBC file {path} not found")
    messages = select_messages(describe_dbc(path), options["message"] or [])
    absolute = path.resolve()
    # The device file names the DBC relative to itself; without a folder (standard output)
    # the only reference that works wherever the text lands is the absolute path.
    reference = str(absolute)
    if folder is not None:
        relative = os.path.relpath(absolute, folder.resolve())
        if not relative.startswith(os.path.join(os.pardir, os.pardir)):
            reference = relative  # beside the draft, or one folder up: keep the site movable
    wanted = " ".join(f"--message {m}" for m in options["message"] or [])
    return draft_from_dbc(
        messages,
        dbc_reference=reference,
        device_id=options["id"] or device_id_for(path),
        interface=options["interface"],
        channel=options["channel"],
        bitrate=options["bitrate"],
        command=options.get("command_line") or f"edge-gateway import-dbc {path} {wanted}".strip(),
    )


IMPORT_DBC = DiscoveryCommand(
    name="import-dbc",
    help="draft a CAN device file from a DBC: its signals with units, scaling and cycle times",
    options=(
        Option(("file",), "the DBC file", metavar="FILE.dbc"),
        Option(("--message",), "only this message (name or frame id); repeat for more",
               multiple=True, metavar="NAME"),
        Option(("--interface",), "python-can interface of the channel (default socketcan)",
               default="socketcan"),
        Option(("--channel",), "CAN channel, for example can0 or /dev/ttyACM0 (default can0)",
               default="can0"),
        Option(("--bitrate",), "bit rate in bit/s, where the interface sets it", type=int),
        Option(("--id",), "device id (default: from the DBC's file name)"),
    ),
    draft=_draft,
)
