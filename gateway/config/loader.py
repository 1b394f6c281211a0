"""Load `gateway.yaml` and the device files it names, reporting every problem at once.

`load_config` is the one entry point: the daemon, `edge-gateway check-config` and systemd's
pre-start check all run it (DESIGN.md section 4). It reads every file, validates each against
its pydantic model, cross-checks the lot, and only then either returns a `LoadedConfig` or
raises one `ConfigError` listing every problem as `file:line: dotted.path: message`, sorted by
file then line, so an engineer fixes a whole site in one edit.

File names in problems are relative to the working directory when the file is under it (what
an engineer typing `check-config configs/` expects to see), otherwise as given.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from detectors import RULES
from gateway.config.crosscheck import CheckedDevice, cross_check
from gateway.config.files import named_file_problems, read_password
from gateway.config.models import DeviceConfig, GatewayConfig, device_model
from gateway.config.pydantic_errors import problem_for_non_mapping, validation_problems
from gateway.config.yaml_marks import MarkedDocument, parse_yaml, without_data
from gateway.core.errors import ConfigError, ConfigProblem, Severity
from gateway.core.plugins import NamedFile, PluginTable, ProtocolPlugin, RulePlugin
from gateway.ticketing.knowledge import KnowledgeBase
from protocols import PROTOCOLS

GATEWAY_FILE_NAME = "gateway.yaml"
_GLOB_CHARACTERS = frozenset("*?[")

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ConfigSummary:
    devices: int
    tags: int
    rules: int

    def __str__(self) -> str:
        return ", ".join(
            _count(n, noun)
            for n, noun in ((self.devices, "device"), (self.tags, "tag"), (self.rules, "rule"))
        )


STATE_DIRECTORY_ENV = "STATE_DIRECTORY"


def systemd_state_directory(environ: Mapping[str, str]) -> Path | None:
    """The unit's first `StateDirectory=` (systemd joins several with ':'), if it set one."""
    first = environ.get(STATE_DIRECTORY_ENV, "").split(":")[0]
    return Path(first) if first else None


@dataclass(frozen=True, slots=True)
class StateLocation:
    path: Path  # absolute
    origin: str  # where the choice came from, for the log and error messages

    def missing(self, file_name: str) -> str:
        """What to tell someone looking for `file_name` here that is not there."""
        text = f"no {file_name} in `{self.path}` ({self.origin}): has the gateway run yet?"
        if self.origin.startswith("default"):
            text += (
                " The systemd service keeps its state in its StateDirectory "
                "(/var/lib/edge-gateway): give that folder as `STATE_DIRECTORY=...` to this "
                "command, or set `storage.directory` in gateway.yaml so that the service and "
                "the commands agree."
            )
        return text


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A configuration that passed every check.

    Paths are absolute; `gateway_display` is the gateway file as shown to the engineer.
    """

    gateway_file: Path
    gateway_display: str
    base_dir: Path
    gateway: GatewayConfig
    devices: tuple[tuple[Path, DeviceConfig], ...]
    summary: ConfigSummary
    protocols: PluginTable[ProtocolPlugin] = PROTOCOLS
    rules: PluginTable[RulePlugin] = RULES
    knowledge: KnowledgeBase = field(default_factory=KnowledgeBase)
    # Problems that do not stop the configuration (printed by check-config, logged at start).
    warnings: tuple[ConfigProblem, ...] = ()
    # A device file checked without its site (no gateway.yaml found): gateway settings are
    # placeholders and cross-file checks saw only this file.
    standalone: bool = False
    # `extra_devices` that gateway.yaml's `devices:` does not name.
    not_included: tuple[Path, ...] = ()

    def resolve(self, name: str) -> Path:
        """A path written in gateway.yaml: absolute as written, else relative to its folder."""
        path = Path(name)
        return path if path.is_absolute() else self.base_dir / path

    @property
    def state_directory(self) -> Path:
        """Where state.db and telemetry.db live; see `state_location`."""
        return self.state_location().path

    def state_location(self, environ: Mapping[str, str] | None = None) -> StateLocation:
        """The state directory and why, first match wins:

        1. `storage.directory` written in gateway.yaml (relative to it): the engineer asked;
        2. `$STATE_DIRECTORY`, set by systemd from the unit's `StateDirectory=` (the first
           entry when it lists several), so the service writes to /var/lib/edge-gateway and
           never beside gateway.yaml, which is read-only under `ProtectSystem=strict`;
        3. otherwise, for a run outside a service manager,
           `$XDG_STATE_HOME/edge-gateway/<site>-<gateway_id>` (`~/.local/state/...` by default),
           so that a run of a checkout's `configs/` does not write into the checkout.
        """
        env = os.environ if environ is None else environ
        written = self.gateway.storage.directory
        if written is not None:
            return StateLocation(self.resolve(written), "storage.directory in gateway.yaml")
        systemd = systemd_state_directory(env)
        if systemd is not None:
            origin = f"${STATE_DIRECTORY_ENV} (systemd StateDirectory=)"
            return StateLocation(systemd, origin)
        xdg = env.get("XDG_STATE_HOME", "")
        # The XDG spec ignores a relative XDG_STATE_HOME.
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"
        folder = f"{self.gateway.site}-{self.gateway.gateway_id}"
        return StateLocation(
            base / "edge-gateway" / folder, "default for a run outside a service manager"
        )


def load_config(
    path: str | Path,
    *,
    protocols: PluginTable[ProtocolPlugin] = PROTOCOLS,
    rules: PluginTable[RulePlugin] = RULES,
    extra_devices: Sequence[Path] = (),
) -> LoadedConfig:
    """Load `path` (gateway.yaml or the folder holding it); raise `ConfigError` if invalid.

    `protocols` and `rules` are the plugin tables the device files are read with (the
    shipped ones unless a test or an embedding program extends them). `extra_devices` are
    device files checked with the site as if gateway.yaml named them (a draft not included
    yet; `check-config DEVICE_FILE`); they come last, so that a clash with a device of the
    site is reported in them."""
    given = Path(path)
    gateway_path = given / GATEWAY_FILE_NAME if given.is_dir() else given
    problems: list[ConfigProblem] = []

    document, _ = _read_yaml(gateway_path, problems)
    gateway = _validate(GatewayConfig, document, "gateway settings", problems)
    device_paths: list[Path] = []
    if document is not None:
        entries = _device_entries(gateway, document)
        if entries is not None:
            device_paths = _resolve_device_files(entries, gateway_path.parent, document, problems)
    if gateway is not None and document is not None:
        problems.extend(_gateway_file_problems(gateway, document, gateway_path.parent))
    named = {os.path.realpath(p) for p in device_paths}
    not_included = tuple(
        Path(os.path.abspath(p)) for p in extra_devices if os.path.realpath(p) not in named
    )
    device_paths = _with_extra_last(device_paths, extra_devices)

    checked = _read_devices(device_paths, device_model(protocols, rules), problems)
    some_invalid = len(checked) < len(device_paths)
    problems.extend(cross_check(checked, protocols, rules, some_files_invalid=some_invalid))
    knowledge = (
        _read_knowledge(gateway, gateway_path.parent, problems)
        if gateway is not None
        else KnowledgeBase()
    )
    loaded = _result(
        problems, gateway, gateway_path, checked, protocols, rules, knowledge, standalone=False
    )
    return dataclasses.replace(loaded, not_included=not_included) if not_included else loaded


def load_device_alone(
    path: str | Path,
    *,
    protocols: PluginTable[ProtocolPlugin] = PROTOCOLS,
    rules: PluginTable[RulePlugin] = RULES,
) -> LoadedConfig:
    """One device file without its site: every check that needs only this file (the schema,
    named files, read plans, the DBC, rules naming this device's points). Rules naming a tag
    of another device, and clashes with other devices, need the site and are not checked."""
    device_path = Path(path)
    problems: list[ConfigProblem] = []
    checked = _read_devices([device_path], device_model(protocols, rules), problems)
    # As if the site's other files were unreadable: their tags are not reported missing.
    problems.extend(cross_check(checked, protocols, rules, some_files_invalid=True))
    placeholder = GatewayConfig.model_validate(
        {"site": "unchecked", "gateway_id": "unchecked", "devices": []}
    )
    return _result(
        problems,
        placeholder,
        device_path.parent / GATEWAY_FILE_NAME,
        checked,
        protocols,
        rules,
        KnowledgeBase(),
        standalone=True,
    )


def _read_devices(
    paths: Sequence[Path], model: type[DeviceConfig], problems: list[ConfigProblem]
) -> list[CheckedDevice]:
    checked: list[CheckedDevice] = []
    shared = _Shared()
    for device_path in paths:
        device_doc, text = _read_yaml(device_path, problems)
        device = _validate(model, device_doc, "device", problems)
        if device is not None and device_doc is not None:
            _share_fields_sets(device, shared)
            marks = without_data(device_doc, text)
            checked.append(CheckedDevice(marks, device, Path(os.path.abspath(device_path))))
    return checked


def _result(
    problems: list[ConfigProblem],
    gateway: GatewayConfig | None,
    gateway_path: Path,
    checked: Sequence[CheckedDevice],
    protocols: PluginTable[ProtocolPlugin],
    rules: PluginTable[RulePlugin],
    knowledge: KnowledgeBase,
    *,
    standalone: bool,
) -> LoadedConfig:
    errors = _sorted([p for p in problems if not p.is_warning])
    warnings = _sorted([p for p in problems if p.is_warning])
    if errors or gateway is None:
        raise ConfigError(errors, warnings)
    devices = tuple((d.path, d.config) for d in checked)
    return LoadedConfig(
        gateway_file=Path(os.path.abspath(gateway_path)),
        gateway_display=display_path(gateway_path),
        base_dir=Path(os.path.abspath(gateway_path.parent)),
        gateway=gateway,
        devices=devices,
        summary=summarize(config for _, config in devices),
        protocols=protocols,
        rules=rules,
        knowledge=knowledge,
        warnings=tuple(warnings),
        standalone=standalone,
    )


def summarize(devices: Iterable[DeviceConfig]) -> ConfigSummary:
    listed = list(devices)
    return ConfigSummary(
        devices=len(listed),
        tags=sum(len(d.value_names) for d in listed),
        rules=sum(len(d.rules) for d in listed),
    )


def _with_extra_last(paths: Sequence[Path], extra: Sequence[Path]) -> list[Path]:
    """`paths` without the extra files, then the extra files (each once)."""
    extra_keys = {os.path.realpath(p) for p in extra}
    ordered = [p for p in paths if os.path.realpath(p) not in extra_keys]
    seen: set[str] = set()
    for candidate in extra:
        key = os.path.realpath(candidate)
        if key not in seen:
            seen.add(key)
            ordered.append(candidate)
    return ordered


def _gateway_file_problems(
    gateway: GatewayConfig, document: MarkedDocument, base_dir: Path
) -> list[ConfigProblem]:
    """The uplink's password and TLS files and the site page's password file exist and can be
    read (relative to gateway.yaml); the site page's holds a password."""
    problems = []
    sections = (("uplink", gateway.uplink.named_files()),
                ("site_page", gateway.site_page.named_files()))  # fmt: skip
    for section, named_files in sections:
        for named in named_files:
            path = f"{section}.{named.key}"
            found = named_file_problems(named, base_dir)
            if not found and section == "site_page":
                found = _password_problems(named, base_dir)
            for severity, message in found:
                problems.append(
                    ConfigProblem(document.file, document.line_of(path), path, message, severity)
                )
    return problems


def _password_problems(named: NamedFile, base_dir: Path) -> list[tuple[Severity, str]]:
    """The page reads its password at start and stays off without one (assembly/site.py):
    an empty or garbled file is found here, before the page is missed on site."""
    path = Path(named.name)
    try:
        read_password(path if path.is_absolute() else base_dir / path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return [(Severity.ERROR, f"{named.what} `{named.name}` {reason}")]
    return []


def display_path(path: Path) -> str:
    """`path` relative to the working directory when under it, otherwise as given."""
    absolute = os.path.abspath(path)
    cwd = os.getcwd()
    if absolute == cwd or absolute.startswith(cwd.rstrip(os.sep) + os.sep):
        return os.path.relpath(absolute, cwd)
    return str(path)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _read_yaml(path: Path, problems: list[ConfigProblem]) -> tuple[MarkedDocument | None, str]:
    """Read and parse one file; record why not when it cannot be. Returns the document
    (None when unreadable) and the text."""
    shown = display_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        problems.append(ConfigProblem(shown, None, "", "file not found"))
        return None, ""
    except OSError as exc:
        problems.append(ConfigProblem(shown, None, "", f"cannot read the file: {exc.strerror}"))
        return None, ""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        problems.append(ConfigProblem(shown, line, "", "the file is not UTF-8 text"))
        return None, ""
    parsed = parse_yaml(text, shown)
    problems.extend(parsed.problems)
    return parsed.document, text


@dataclass
class _Shared:
    """Equal values met in the device models, kept once (see `_share_fields_sets`)."""

    fields_sets: dict[frozenset[str], set[str]] = field(default_factory=dict)
    # By value and sign: -0.0 == 0.0, but a scale of -0.0 is not one of 0.0.
    floats: dict[tuple[float, float], float] = field(default_factory=dict)
    # Frozen models by type, field values and fields set (`_model_key`).
    models: dict[tuple[Any, ...], BaseModel] = field(default_factory=dict)


def _share_fields_sets(model: BaseModel, pool: _Shared) -> None:
    """Let `model` and the models inside it share one `model_fields_set` per distinct set,
    one object per equal text or number, and one model per equal frozen model.

    Pydantic gives every instance its own set of the fields written in the YAML; for a
    Modbus point that set (about 730 bytes) is larger than the point's values, and 500 devices
    x 30 points held 11 MB of identical sets. The config models are frozen, so
    pydantic never adds to the set of a validated instance (copies get a copy of it). Each
    text and float read from YAML is its own object too: at 500 x 30 points the same names,
    units and scales held 2.2 MB; texts are interned, floats pooled. A plant's devices of one
    kind list the same points and rules: each such model (about 640 bytes for a Modbus point,
    held by its driver for the whole run) is kept once for the site, not once per device
    (9.6 MB at 500 devices x 30 points).
    """
    if not model.model_config.get("frozen"):
        return  # an assignment would add to a set other instances share
    own = model.__pydantic_fields_set__
    shared = pool.fields_sets.setdefault(frozenset(own), own)
    if shared is not own:
        object.__setattr__(model, "__pydantic_fields_set__", shared)
    values = model.__dict__
    for name, value in values.items():
        # The same value in the same slot: the frozen model is not changed, only deduplicated.
        values[name] = _shared_value(value, pool)


def _shared_value(value: Any, pool: _Shared) -> Any:
    """`value`, or an equal object already met (texts, floats and frozen models)."""
    kind = type(value)
    if kind is str:
        return sys.intern(value)
    if kind is float:
        return pool.floats.setdefault((value, math.copysign(1.0, value)), value)
    if isinstance(value, BaseModel):
        _share_fields_sets(value, pool)
        key = _model_key(value)
        return value if key is None else pool.models.setdefault(key, value)
    if kind is list:
        value[:] = [_shared_value(item, pool) for item in value]
    elif kind is tuple:
        return tuple(_shared_value(item, pool) for item in value)
    elif kind is dict:
        for name, item in value.items():
            value[name] = _shared_value(item, pool)
    return value


def _model_key(model: BaseModel) -> tuple[Any, ...] | None:
    """What makes two frozen models interchangeable: their type, their fields set and each
    field's value (inner models already shared, so by identity); None when the model is not
    frozen or holds a value this does not compare."""
    if not model.model_config.get("frozen") or model.__pydantic_private__:
        return None
    try:
        fields = tuple(_value_key(v) for v in model.__dict__.values())
    except TypeError:
        return None
    return (type(model), id(model.__pydantic_fields_set__), fields)


def _value_key(value: Any) -> Any:
    kind = type(value)
    if kind is float:  # -0.0 and 0.0 are equal but not interchangeable
        return (kind, value, math.copysign(1.0, value))
    if isinstance(value, BaseModel):
        return (kind, id(value))  # shared already: equal inner models are one object
    if kind is list or kind is tuple:
        return (kind, tuple(_value_key(v) for v in value))
    if kind is dict:
        return (kind, tuple((_value_key(k), _value_key(v)) for k, v in value.items()))
    hash(value)  # TypeError for what cannot be compared this way (the model is kept as is)
    return (kind, value)  # the type too: True == 1, but a bit is not an integer


def _validate(
    model: type[M], document: MarkedDocument | None, what: str, problems: list[ConfigProblem]
) -> M | None:
    if document is None:
        return None
    if not isinstance(document.data, dict):
        problems.append(problem_for_non_mapping(document, what))
        return None
    try:
        return model.model_validate(document.data)
    except ValidationError as exc:
        problems.extend(validation_problems(exc, model, document))
        return None


def _device_entries(gateway: GatewayConfig | None, document: MarkedDocument) -> list[str] | None:
    """The `devices:` entries, even when another part of gateway.yaml is invalid.

    Reading the device files anyway lets one run report their problems too. None when the
    entries themselves are unusable (already reported by the schema).
    """
    if gateway is not None:
        return gateway.devices
    data = document.data
    if not isinstance(data, dict):
        return None
    if "devices" not in data:
        return list(GatewayConfig.model_fields["devices"].get_default(call_default_factory=True))
    entries = data["devices"]
    if isinstance(entries, list) and all(isinstance(e, str) for e in entries):
        return entries
    return None


def _resolve_device_files(
    entries: Sequence[str], base: Path, document: MarkedDocument, problems: list[ConfigProblem]
) -> list[Path]:
    """Device files named by `entries` (paths or globs relative to gateway.yaml), in order.

    A file named twice, or matched by two patterns, is loaded once.
    """
    written = isinstance(document.data, dict) and "devices" in document.data
    found: list[Path] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        path = f"devices.{index}" if written else "devices"
        default_note = "" if written else " (the default)"
        line = document.line_of(path)
        if _GLOB_CHARACTERS.intersection(entry):
            matches = [
                Path(m)
                for m in sorted(glob.glob(str(base / entry), recursive=True))
                if Path(m).is_file()
            ]
            if not matches:
                problems.append(
                    ConfigProblem(
                        document.file,
                        line,
                        path,
                        f"included pattern {entry} matches no file{default_note}",
                    )
                )
        else:
            candidate = base / entry
            matches = [candidate] if candidate.is_file() else []
            if candidate.is_dir():
                message = f"included path {entry} is a folder; name files or a glob such as "
                message += f"{entry.rstrip('/')}/*.yaml"
                problems.append(ConfigProblem(document.file, line, path, message))
            elif not matches:
                problems.append(
                    ConfigProblem(document.file, line, path, f"included file {entry} not found")
                )
        for match in matches:
            key = os.path.realpath(match)
            if key not in seen:
                seen.add(key)
                found.append(match)
    return found


def knowledge_path(gateway: GatewayConfig, base_dir: Path) -> Path | None:
    """The knowledge base file (`ticketing.knowledge_file`, relative to gateway.yaml), or None
    when there is none to read: not configured, or the default name and no such file. A file
    named explicitly must exist."""
    cfg = gateway.ticketing
    if cfg.knowledge_file is None:
        return None
    path = Path(cfg.knowledge_file)
    path = path if path.is_absolute() else base_dir / path
    if not path.exists() and "knowledge_file" not in cfg.model_fields_set:
        return None
    return path


def _read_knowledge(
    gateway: GatewayConfig, base_dir: Path, problems: list[ConfigProblem]
) -> KnowledgeBase:
    """knowledge.yaml, read and validated once: `check-config` catches what would otherwise
    stop the daemon at start, and the ticket service uses what was read here. Problems get
    their lines from the file's YAML marks."""
    path = knowledge_path(gateway, base_dir)
    if path is None:
        return KnowledgeBase()
    document, _ = _read_yaml(path, problems)
    if document is None:
        return KnowledgeBase()
    try:
        return KnowledgeBase.from_document(document.data, document.file)
    except ConfigError as exc:
        problems.extend(
            ConfigProblem(p.file, document.line_of(p.path), p.path, p.message) for p in exc.problems
        )
        return KnowledgeBase()


def _sorted(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    # Stable: problems on the same line keep the order they were found in.
    return sorted(problems, key=lambda p: (p.file, p.line if p.line is not None else 0))
