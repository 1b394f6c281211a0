"""Checks that need more than one field or more than one file (DESIGN.md section 4).

They run after every device file has passed its schema, on the validated models, and locate
each problem through the file's YAML marks. Each check is a small function yielding problems;
`cross_check` runs them all so that every problem is reported in one run.

What only one protocol or rule kind knows is asked of its plugin (`check`); the generic checks
read the connection models: a connection that owns an exclusive resource (a Modbus TCP unit, a
serial line, a CAN channel) says so through a `resource_claims()` method, and a connection with
a per-request timeout has a `timeout_s` field. New protocols and rule kinds join these checks
with no change here. So do files a connection names (`named_files()`), and a connection that
is not polled at the device's period says so with `timeout_within_poll_period = False`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.config.files import named_file_problems
from gateway.config.models import DeviceConfig
from gateway.config.yaml_marks import MarkedDocument
from gateway.core.errors import ConfigProblem, Severity
from gateway.core.plugins import DeviceSpec, PluginTable, ProtocolPlugin, RulePlugin


@dataclass(frozen=True, slots=True)
class CheckedDevice:
    """A device file that passed its schema: the model and where its keys were written."""

    document: MarkedDocument
    config: DeviceConfig
    path: Path

    @property
    def spec(self) -> DeviceSpec:
        return self.config.spec(self.path)

    def problem(
        self, path: str, message: str, severity: Severity = Severity.ERROR
    ) -> ConfigProblem:
        line = self.document.line_of(path)
        return ConfigProblem(self.document.file, line, path, message, severity)

    def where(self, path: str) -> str:
        line = self.document.line_of(path)
        return f"{self.document.file}:{line}" if line is not None else self.document.file


def cross_check(
    devices: Sequence[CheckedDevice],
    protocols: PluginTable[ProtocolPlugin],
    rules: PluginTable[RulePlugin],
    *,
    some_files_invalid: bool = False,
) -> list[ConfigProblem]:
    """Every cross-check over `devices`.

    `some_files_invalid` says that device files failed their schema and are missing from
    `devices`; a rule naming a tag of a device we could not read is then not reported, since
    the fault is the broken file, already reported, not the rule.
    """
    checks: list[Callable[[Sequence[CheckedDevice]], Iterable[ConfigProblem]]] = [
        _duplicate_device_ids,
        _duplicate_tag_ids,
        _duplicate_rule_names,
        _assets_described_once,
        lambda ds: _dependencies_known(ds, some_files_invalid),
        lambda ds: _rule_signals(ds, some_files_invalid),
        _timeouts_shorter_than_poll_period,
        _resources_claimed_once,
        _named_files_readable,
        lambda ds: _protocol_checks(ds, protocols),
        lambda ds: _rule_checks(ds, rules),
    ]
    return [problem for check in checks for problem in check(devices)]


def _duplicate_device_ids(devices: Sequence[CheckedDevice]) -> Iterator[ConfigProblem]:
    first: dict[str, CheckedDevice] = {}
    for device in devices:
        device_id = device.config.id
        if device_id in first:
            yield device.problem(
                "id", f"duplicate device id `{device_id}` (first at {first[device_id].where('id')})"
            )
        else:
            first[device_id] = device


def _dependencies_known(
    devices: Sequence[CheckedDevice], some_files_invalid: bool
) -> Iterator[ConfigProblem]:
    """`asset.depends_on` names assets of this site: a typo would silently name no root cause
    (a device file that failed its schema may hold the asset, so then nothing is reported).
    A warning, not an error: a site may list an upstream asset it does not monitor yet."""
    if some_files_invalid:
        return
    assets = {device.config.asset_id for device in devices}
    for device in devices:
        for index, upstream in enumerate(device.config.asset.depends_on):
            if upstream == device.config.asset_id:
                yield device.problem(
                    f"asset.depends_on.{index}", f"asset `{upstream}` cannot depend on itself"
                )
            elif upstream not in assets:
                yield device.problem(
                    f"asset.depends_on.{index}",
                    f"`{upstream}` is not an asset of this site (known: "
                    f"{', '.join(sorted(assets))}); it can name no root cause",
                    Severity.WARNING,
                )


def _duplicate_tag_ids(devices: Sequence[CheckedDevice]) -> Iterator[ConfigProblem]:
    # Ids and point names cannot contain dots, so tag ids collide only inside one device
    # (or between devices sharing an id, which is reported once, above).
    for device in devices:
        field = device.config.values_field
        first_index: dict[str, int] = {}
        for index, name in enumerate(device.config.value_names):
            if name in first_index:
                first_line = device.document.line_of(f"{field}.{first_index[name]}.name")
                yield device.problem(
                    f"{field}.{index}.name",
                    f"duplicate tag id `{device.config.tag_id(name)}` (first at line {first_line})",
                )
            else:
                first_index[name] = index


# Asset fields that route a ticket; a value left empty (or the default class) is not a claim.
_ROUTING_FIELDS = ("name", "asset_class", "area", "line", "business_line", "region", "skill")
_UNSET_ROUTING = ("", "generic")


def _assets_described_once(devices: Sequence[CheckedDevice]) -> Iterator[ConfigProblem]:
    """Devices of one asset (a pump's Modbus PLC and its vibration sensor) must not describe
    it differently: its tickets would be routed by whichever file happened to load first."""
    first: dict[tuple[str, str], tuple[object, CheckedDevice]] = {}
    for device in devices:
        asset, info = device.config.asset_id, device.config.asset
        claims: dict[str, object] = {
            field: getattr(info, field)
            for field in _ROUTING_FIELDS
            if getattr(info, field) not in _UNSET_ROUTING
        }
        if info.run_signal:
            # Relative names belong to the device that declares them.
            run_signal = info.run_signal
            claims["run_signal"] = (
                run_signal if "." in run_signal else device.config.tag_id(run_signal),
                info.run_above,
            )
        for field, value in claims.items():
            known = first.get((asset, field))
            key = "class" if field == "asset_class" else field
            if known is None:
                first[(asset, field)] = (value, device)
            elif known[0] != value:
                yield device.problem(
                    f"asset.{key}",
                    f"asset `{asset}` is described differently here than at "
                    f"{known[1].where(f'asset.{key}')} ({key}: {_shown(value)} vs "
                    f"{_shown(known[0])}); "
                    + (
                        "give the run signal in one of the asset's files"
                        if key == "run_signal"
                        else f"give every file of one asset the same {key}"
                    ),
                )


def _shown(value: object) -> str:
    if isinstance(value, tuple):  # (run tag, run_above)
        return f"`{value[0]}` above {value[1]:g}"
    return f"`{value}`"


def _duplicate_rule_names(devices: Sequence[CheckedDevice]) -> Iterator[ConfigProblem]:
    # The rule name is part of the detector identity, hence of the ticket dedup key.
    for device in devices:
        first_index: dict[str, int] = {}
        for index, rule in enumerate(device.config.rules):
            if rule.name in first_index:
                first_line = device.document.line_of(f"rules.{first_index[rule.name]}.name")
                yield device.problem(
                    f"rules.{index}.name",
                    f"duplicate rule name `{rule.name}` in device `{device.config.id}` "
                    f"(first at line {first_line})",
                )
            else:
                first_index[rule.name] = index


def _rule_signals(
    devices: Sequence[CheckedDevice], some_files_invalid: bool
) -> Iterator[ConfigProblem]:
    """A signal is a point name of the same device or a full tag id `device.point`."""
    all_tags = {d.config.tag_id(name) for d in devices for name in d.config.value_names}
    known_devices = {d.config.id for d in devices}
    for device in devices:
        own_points = device.config.value_names
        for index, rule in enumerate(device.config.rules):
            signal = getattr(rule, "signal", None)
            if signal is None or signal in own_points or signal in all_tags:
                continue
            owner = signal.split(".", 1)[0] if "." in signal else device.config.id
            if some_files_invalid and owner not in known_devices:
                continue
            close = difflib.get_close_matches(signal, [*own_points, *all_tags], n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            if "." in signal:
                reason = f"no tag `{signal}` in any device"
            else:
                reason = f"device `{device.config.id}` has no point `{signal}`"
            yield device.problem(
                f"rules.{index}.signal",
                f"rule `{rule.name}` names signal `{signal}`, which does not exist "
                f"({reason}){hint}",
            )


def _timeouts_shorter_than_poll_period(
    devices: Sequence[CheckedDevice],
) -> Iterator[ConfigProblem]:
    # A request that may outlast the period would overlap the next poll (DESIGN.md sec. 3).
    for device in devices:
        connection = device.config.connection
        if not getattr(type(connection), "timeout_within_poll_period", True):
            continue  # a connection that is not polled at the period (OPC UA subscriptions)
        timeout = getattr(connection, "timeout_s", None)
        if timeout is None or timeout < device.config.poll_period_s:
            continue
        timeout_note = "" if "timeout_s" in connection.model_fields_set else ", the default"
        period_note = "" if "poll_period_s" in device.config.model_fields_set else ", the default"
        yield device.problem(
            "connection.timeout_s",
            f"timeout_s ({timeout:g} s{timeout_note}) must be shorter than poll_period_s "
            f"({device.config.poll_period_s:g} s{period_note})",
        )


def _resources_claimed_once(devices: Sequence[CheckedDevice]) -> Iterator[ConfigProblem]:
    """Two devices polling the same exclusive resource would fight over it (vector's check)."""
    owner: dict[str, CheckedDevice] = {}
    for device in devices:
        claims = getattr(device.config.connection, "resource_claims", None)
        if claims is None:
            continue
        for resource in claims():
            first = owner.get(resource)
            if first is None:
                owner[resource] = device
                continue
            yield device.problem(
                "connection",
                f"resource `{resource}` claimed twice: also by device `{first.config.id}` "
                f"at {first.where('connection')}",
            )


def _named_files_readable(devices: Sequence[CheckedDevice]) -> Iterator[ConfigProblem]:
    """Certificates, keys, trust lists, password files and DBCs named by a connection
    (`named_files()`) exist and are readable, relative to the device file's folder."""
    for device in devices:
        named = getattr(device.config.connection, "named_files", None)
        if named is None:
            continue
        for file in named():
            for severity, message in named_file_problems(file, device.path.parent):
                yield device.problem(f"connection.{file.key}", message, severity)


def _protocol_checks(
    devices: Sequence[CheckedDevice], protocols: PluginTable[ProtocolPlugin]
) -> Iterator[ConfigProblem]:
    """What only a protocol knows (read plans, line settings, DBC contents), per protocol."""
    by_protocol: dict[str, list[CheckedDevice]] = {}
    for device in devices:
        by_protocol.setdefault(device.config.protocol, []).append(device)
    for name, members in by_protocol.items():
        for issue in protocols.get(name).check([member.spec for member in members]):
            if isinstance(issue, ConfigProblem):
                yield issue
            else:
                yield members[issue.device].problem(issue.path, issue.message, issue.severity)


def _rule_checks(
    devices: Sequence[CheckedDevice], rules: PluginTable[RulePlugin]
) -> Iterator[ConfigProblem]:
    for device in devices:
        spec = device.spec
        for index, rule in enumerate(device.config.rules):
            for issue in rules.get(rule.kind).check(rule, spec):
                path = f"rules.{index}" + (f".{issue.path}" if issue.path else "")
                yield device.problem(path, issue.message)
