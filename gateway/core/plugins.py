"""The seams of the plugins: protocols and rule kinds (DESIGN.md section 1).

A protocol folder (`protocols/modbus`, ...) and a detector kind (`detectors/threshold`, ...)
each expose one small object that builds everything the composition root needs from it: the
tags of a device, the endpoint to run, the topology link, its own configuration checks, or
the detector of a rule. The root finds them in a name -> "module:object" table
(`PluginTable`, loaded lazily, as python-can keeps its backends) and never looks inside.

Plugins receive plain values (`DeviceSpec`), not the configuration package's models, so that
`protocols/` and `detectors/` depend on `gateway.core` only.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from gateway.core.clock import Clock
from gateway.core.errors import ConfigProblem, Severity
from gateway.core.interfaces import Detector, PollingDriver, SharedLine, StreamingDriver
from gateway.core.records import Tag

T = TypeVar("T")


def load_object(spec: str) -> Any:
    """The object named by "package.module:attribute", importing the module on first use."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"`{spec}` is not of the form package.module:object")
    return getattr(importlib.import_module(module_name), attribute)


class Lazy(Generic[T]):
    """An object imported only when first needed, so that a site without OPC UA never loads
    asyncua, one without CAN never loads python-can or cantools (about 50 MB of RSS)."""

    __slots__ = ("_spec", "_value")

    def __init__(self, spec: str) -> None:
        self._spec = spec
        self._value: T | None = None

    def get(self) -> T:
        if self._value is None:
            self._value = load_object(self._spec)
        return self._value


# --- what a plugin is given ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One configured device as plain values: what a protocol or rule plugin needs.

    `connection` and `values` are the protocol's own models (a Modbus connection and its
    points...); relative paths written in the device file resolve against `file`'s folder.
    """

    id: str
    asset: str
    file: Path
    connection: Any
    values: Sequence[Any]
    poll_period_s: float
    # Engineering unit of every tag of the site by tag id (a rule may watch another device's
    # tag), as the protocols declare them; filled in once every device's tags are known.
    units: Mapping[str, str] = field(default_factory=dict)

    def tag_id(self, value_name: str) -> str:
        # Interned: the tags of a device are built more than once (for the configured device
        # and for each driver), and the id keys the evidence window, the topology, the
        # detectors' routing...: one string per tag (about 0.9 MB at 15 000 tags),
        # and the lookups by a sample's tag find the very key object.
        return sys.intern(f"{self.id}.{value_name}")

    def signal_tag(self, signal: str) -> str:
        """A rule's signal: a value of this device, or a full tag id of any device."""
        return signal if "." in signal else self.tag_id(signal)

    def unit_of(self, signal: str) -> str:
        """The unit of a rule's signal, "" when the configuration gives none."""
        return self.units.get(self.signal_tag(signal), "")

    @property
    def value_names(self) -> list[str]:
        return [value.name for value in self.values]

    def resolve(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else (self.file.parent / path).resolve()


# --- what a protocol plugin returns ----------------------------------------------------------


# Whether an endpoint that failed is reachable again, without a protocol request (a TCP
# connect, a serial port present): lets a source retry as soon as it is back instead of at the
# end of a long backoff step (`gateway.pipeline.supervision.Recovery`).
Probe = Callable[[], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class PollingEndpoint:
    """Polled at a fixed period by one task; `timeout_s` bounds a whole connect or poll."""

    key: str
    driver_factory: Callable[[], PollingDriver]
    period_s: float
    timeout_s: float
    probe: Probe | None = None


@dataclass(frozen=True, slots=True)
class StreamingEndpoint:
    """An endpoint that pushes its records (OPC UA subscriptions, a CAN channel).

    `silence_limit_s`: a few of the endpoint's periods (publishing interval, cycle times);
    a configured point that delivers nothing at all that long after the first connection is
    reported as never delivering (None: the source's default)."""

    key: str
    driver_factory: Callable[[], StreamingDriver]
    probe: Probe | None = None
    # First and longest delay between reconnects, when the device file sets them.
    reconnect_s: tuple[float, float] | None = None
    silence_limit_s: float | None = None


@dataclass(frozen=True, slots=True)
class SharedLineEndpoint:
    """Several devices behind one medium (an RS-485 line), one request at a time."""

    key: str
    line_factory: Callable[[], SharedLine]
    periods_s: Mapping[str, float]
    probe: Probe | None = None


Endpoint = PollingEndpoint | StreamingEndpoint | SharedLineEndpoint


@dataclass(frozen=True, slots=True)
class LinkKey:
    """The communication link a device depends on (a TCP endpoint, a serial line, an OPC UA
    session, a CAN channel): when it is lost, every device behind it is (topology)."""

    kind: str
    id: str

    @classmethod
    def named(cls, kind: str, prefix: str, name: str) -> LinkKey:
        """`prefix-name` with everything but letters, digits, `_.-` turned into dashes, so
        the id reads well in a ticket and a topic (`modbus-tcp-10.0.0.5-502`)."""
        return cls(kind, f"{prefix}-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-"))


@dataclass(frozen=True, slots=True)
class NamedFile:
    """A file or folder a configuration names (a certificate, a key, a trust list, a password
    file, a DBC). `check-config` requires it to exist and be readable, so that a typo is a
    configuration error instead of a lost connection, and a `comm.lost` ticket, at run time.

    Connection models list theirs in a `named_files()` method; `key` is the dotted path of the
    key inside the model (`login.password_file`), `name` the path as written (relative paths
    resolve against the folder of the file that names them)."""

    key: str
    name: str
    what: str  # "client certificate", for the message
    folder: bool = False


@dataclass(frozen=True, slots=True)
class DeviceIssue:
    """A configuration problem found by a plugin: `device` indexes the devices it was given,
    `path` is a dotted path inside that device file (`points.3.address`)."""

    device: int
    path: str
    message: str
    severity: Severity = Severity.ERROR


class ProtocolPlugin(Protocol):
    """One protocol (or one transport of it): `modbus_tcp`, `opcua`, ..."""

    @property
    def name(self) -> str:
        """The `connection.protocol` value that selects it."""
        ...

    @property
    def connection_model(self) -> type[Any]:
        """Pydantic model of `connection:`, with `protocol: Literal[name]`."""
        ...

    @property
    def values_field(self) -> str:
        """The device-file key listing what it reads: `points`, `nodes`, `signals`."""
        ...

    @property
    def value_model(self) -> type[Any]:
        """Pydantic model of one entry of that list."""
        ...

    @property
    def values_description(self) -> str:
        """What the list is, for the JSON Schema (`Modbus devices: the registers to read.`)."""
        ...

    def tags(self, device: DeviceSpec) -> list[Tag]: ...

    def endpoints(self, devices: Sequence[DeviceSpec], clock: Clock) -> list[Endpoint]:
        """The tasks to run for every device of this protocol (lines group several)."""
        ...

    def link(self, device: DeviceSpec) -> LinkKey: ...

    def check(self, devices: Sequence[DeviceSpec]) -> Iterable[DeviceIssue | ConfigProblem]:
        """Checks only this protocol knows (read plans, line settings, DBC contents);
        a `ConfigProblem` is a problem located in another file (inside a DBC)."""
        ...


# --- commissioning: drafting device files ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceDraft:
    """A device file drafted from what a device or a description file offers: YAML the loader
    accepts as it is (with comments saying what was found), and notes for the engineer."""

    device_id: str
    text: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Option:
    """One command-line option of a discovery command, as data (the CLI builds the parser):
    `flags` such as ("--unit",) or ("target",) for a positional argument."""

    flags: tuple[str, ...]
    help: str
    type: Callable[[str], Any] = str
    default: Any = None
    multiple: bool = False  # may be given several times (a list)
    choices: tuple[str, ...] | None = None
    metavar: str | None = None


@dataclass(frozen=True, slots=True)
class DiscoveryCommand:
    """A command a protocol adds to `edge-gateway` to draft device files: `browse` (OPC UA),
    `import-dbc` (CAN), `scan modbus` (a command shared by protocols: `scan`, with `target`
    naming this one).

    `draft(options, folder)` gets the options by name (and `command_line`, the command as
    typed, for the draft's header) and the folder the draft will be written to (None:
    standard output, so paths it names are written absolute). It raises
    `ValueError` for options that make no sense, `FileNotFoundError` for a missing input
    file, `ConfigError` for an input file that cannot be read as what it should be, and a
    `DriverError` when the device cannot be reached. It only reads from devices."""

    name: str
    help: str
    options: tuple[Option, ...]
    draft: Callable[[Mapping[str, Any], Path | None], Coroutine[Any, Any, DeviceDraft]]
    target: str | None = None


def discovery_commands(protocols: Iterable[Any]) -> list[DiscoveryCommand]:
    """The discovery commands the protocols of a table offer (their optional `discovery`)."""
    return [command for plugin in protocols for command in getattr(plugin, "discovery", ())]


# --- what a rule plugin is -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleIssue:
    """A problem in one rule, at a dotted path inside the rule (`hi`, `bearing`)."""

    path: str
    message: str


class RulePlugin(Protocol):
    """One rule kind (`threshold`, `vibration`): its model and the detector it builds."""

    @property
    def kind(self) -> str: ...

    @property
    def rule_model(self) -> type[Any]:
        """Pydantic model of the rule, with `kind: Literal[kind]` and a `signal` field."""
        ...

    def detector(self, rule: Any, device: DeviceSpec) -> Detector: ...

    def check(self, rule: Any, device: DeviceSpec) -> Iterable[RuleIssue]: ...


# --- the tables --------------------------------------------------------------------------------

P = TypeVar("P")


@dataclass(frozen=True)
class PluginTable(Generic[P]):
    """name -> "module:object", each object imported on first use and kept.

    `with_entries` makes an extended copy (a test registering a small extra protocol), so the
    shipped table is never mutated."""

    what: str  # "protocol", "rule kind": for messages
    entries: Mapping[str, str]
    _loaded: dict[str, P] = field(default_factory=dict, compare=False, repr=False)

    @property
    def names(self) -> list[str]:
        """In the table's order, which is the order of the config schema's unions."""
        return list(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def get(self, name: str) -> P:
        plugin = self._loaded.get(name)
        if plugin is None:
            if name not in self.entries:
                known = ", ".join(self.names)
                raise KeyError(f"unknown {self.what} `{name}` (known: {known})")
            plugin = load_object(self.entries[name])
            self._loaded[name] = plugin
        return plugin

    def __iter__(self) -> Iterator[P]:
        return (self.get(name) for name in self.names)

    def with_entries(self, more: Mapping[str, str]) -> PluginTable[P]:
        return PluginTable(self.what, {**self.entries, **more})

    def key(self) -> tuple[tuple[str, str], ...]:
        """Identity of the table's content (models built from it are cached by it)."""
        return tuple(self.entries.items())
