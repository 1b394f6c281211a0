"""What `edge-gateway browse` found on an OPC UA server, and the device file drafted from it.

Pure: the driver (the asyncua home) browses and hands over these plain values. Numeric scalar
variables become nodes; one-dimensional numeric arrays are waveform candidates, drafted as
waveform nodes when a sibling variable holds their sample rate (`...SampleRate`) and left
commented out otherwise (a waveform needs its rate); other variables (text, dates,
structures) are listed as comments, since the gateway reads numbers and arrays of numbers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.core.plugins import DeviceDraft
from gateway.core.yaml_text import comment, flow_mapping, scalar

NUMERIC_TYPES = frozenset(
    {"Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
     "Float", "Double", "Number", "Integer", "UInteger"}
)  # fmt: skip
# Arrays shorter than this are vectors (a position, three phases), not sampled signals.
MIN_WAVEFORM_LENGTH = 64
_RATE_NAME = re.compile(r"sampl(e|ing)_?rate", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class OfferedEndpoint:
    """One endpoint a server offers (GetEndpoints): security and the user logins it takes."""

    url: str
    policy: str  # None, Basic256Sha256, ...
    mode: str  # None, Sign, SignAndEncrypt
    logins: tuple[str, ...]  # Anonymous, UserName, Certificate


@dataclass(frozen=True, slots=True)
class BrowsedVariable:
    node_id: str
    name: str  # browse name, without the namespace index
    path: tuple[str, ...]  # browse names from the start node to the parent
    parent: str  # NodeId of the parent
    data_type: str  # Double, Int32, String, ns=3;i=3002 for a server-defined type
    array_length: int | None  # None for a scalar
    writable: bool
    value: str  # the current value, shortened, for the comment
    unit: str  # EngineeringUnits display name, if the server gives one


@dataclass(frozen=True, slots=True)
class BrowseResult:
    endpoints: tuple[OfferedEndpoint, ...]
    variables: tuple[BrowsedVariable, ...]
    objects: int
    truncated: bool  # stopped at the node limit


def snake_case(name: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return text or "node"


def is_numeric(variable: BrowsedVariable) -> bool:
    return variable.data_type in NUMERIC_TYPES


def sample_rate_node(variable: BrowsedVariable, siblings: Sequence[BrowsedVariable]) -> str | None:
    """A numeric scalar beside the array whose name says it holds a sample rate."""
    for other in siblings:
        if (
            other.parent == variable.parent
            and other.array_length is None
            and is_numeric(other)
            and _RATE_NAME.search(other.name.replace(" ", ""))
        ):
            return other.node_id
    return None


def offered_text(endpoints: Sequence[OfferedEndpoint]) -> list[str]:
    """`None/None (Anonymous)`, `Basic256Sha256 SignAndEncrypt (Anonymous, UserName)`, ..."""
    texts = []
    for e in dict.fromkeys(endpoints):
        security = "no security" if e.mode == "None" else f"{e.mode} with {e.policy}"
        texts.append(f"{security} ({', '.join(e.logins) or 'no login'})")
    return list(dict.fromkeys(texts))


def draft_from_browse(
    result: BrowseResult,
    *,
    endpoint: str,
    device_id: str,
    connection_lines: Sequence[str],
    command: str,
) -> DeviceDraft:
    """The device file. `connection_lines` are the connection's keys after `protocol` and
    `endpoint` (security and login, when browsing used them)."""
    drafted, commented, notes = _entries(result.variables)
    if not drafted:
        raise ValueError(
            f"no numeric variable found ({len(result.variables)} variables in all): nothing "
            "to draft; start elsewhere with --node, or browse deeper with --depth"
        )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Drafted by `{comment(command)}` on {when}:",
        f"# {_count(len(result.variables), 'variable')} under"
        f" {_count(result.objects, 'object')}; {len(drafted)} drafted as nodes,"
        f" {len(commented)} left as comments.",
        "# The server offers: " + "; ".join(offered_text(result.endpoints)),
        "# Review names and units, add rules, then run `edge-gateway check-config` and",
        "# `edge-gateway probe` on this file.",
        f"id: {scalar(device_id)}",
        "connection:",
        "  protocol: opcua",
        f"  endpoint: {scalar(endpoint)}",
        *connection_lines,
        "nodes:",
    ]
    lines += drafted + commented
    if result.truncated:
        notes.append("the node limit was reached (--max-nodes): the server has more nodes.")
    if any(e.mode != "None" for e in result.endpoints) and not connection_lines:
        notes.append(
            "the server also offers signed and encrypted endpoints: on a plant network prefer "
            "SignAndEncrypt (security_policy, security_mode, certificate, private_key, "
            "trust_list; see protocols/opcua/README.md)."
        )
    return DeviceDraft(device_id, "\n".join(lines) + "\n", tuple(notes))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _entries(variables: Sequence[BrowsedVariable]) -> tuple[list[str], list[str], list[str]]:
    drafted: list[str] = []
    commented: list[str] = []
    notes: list[str] = []
    names = _names(variables)
    for variable, name in zip(variables, names, strict=True):
        where = "/".join((*variable.path, variable.name))
        extra = f"; writable on the server (the gateway only reads); {where}" if (
            variable.writable
        ) else f"; {where}"  # fmt: skip
        entry: dict[str, object] = {"name": name, "node_id": variable.node_id}
        if variable.unit:
            entry["unit"] = variable.unit
        if not is_numeric(variable):
            commented.append(
                f"  # - {flow_mapping(entry)}  # {comment(variable.data_type)}: not a number,"
                f" the gateway reads numbers and arrays of numbers{comment(extra)}"
            )
            continue
        if variable.array_length is None:
            drafted.append(
                f"  - {flow_mapping(entry)}  # {variable.data_type}, read"
                f" {comment(variable.value)}{comment(extra)}"
            )
            continue
        shape = f"{variable.data_type}[{variable.array_length}]"
        if variable.array_length < MIN_WAVEFORM_LENGTH:
            commented.append(
                f"  # - {flow_mapping(entry)}  # {shape}: too short for a waveform; the gateway"
                f" reads scalars and waveforms{comment(extra)}"
            )
            continue
        rate = sample_rate_node(variable, variables)
        entry["kind"] = "waveform"
        if rate is None:
            entry["sample_rate"] = 1000.0
            commented.append(
                f"  # - {flow_mapping(entry)}  # {shape}: waveform candidate; set its"
                f" sample_rate (Hz) or sample_rate_node, then uncomment{comment(extra)}"
            )
            notes.append(f"`{name}` ({shape}) is a waveform candidate: set its sample rate.")
            continue
        entry["sample_rate_node"] = rate
        drafted.append(
            f"  - {flow_mapping(entry)}  # {shape}: waveform candidate, rate from {rate}"
            f"{comment(extra)}"
        )
    return drafted, commented, notes


def _names(variables: Sequence[BrowsedVariable]) -> list[str]:
    counts: dict[str, int] = {}
    for variable in variables:
        counts[snake_case(variable.name)] = counts.get(snake_case(variable.name), 0) + 1
    names: list[str] = []
    taken: set[str] = set()
    for variable in variables:
        name = snake_case(variable.name)
        if counts[name] > 1 and variable.path:
            name = f"{snake_case(variable.path[-1])}_{name}"
        base, number = name, 2
        while name in taken:
            name, number = f"{base}_{number}", number + 1
        taken.add(name)
        names.append(name)
    return names


def device_id_for(endpoint: str) -> str:
    """The last path segment of the endpoint URL (`.../edge-gateway/pump` -> `pump`), else
    the host, as a device id."""
    rest = endpoint.split("://", 1)[-1]
    host, _, path = rest.partition("/")
    if path.strip("/"):
        segment = path.rstrip("/").rsplit("/", 1)[-1]
    else:
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host
        # A host name's first label (press-3.plant.local -> press-3); an address as it is.
        segment = name if re.fullmatch(r"[\d.\[\]:a-fA-F]+", name) else name.split(".")[0]
    text = re.sub(r"[^A-Za-z0-9_-]+", "-", segment).strip("-_")
    return text if text and text[0].isalnum() else f"opcua-{text or 'server'}"
