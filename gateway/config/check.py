"""`edge-gateway check-config PATH [--site SITE]`: the same loading the daemon does, nothing
started.

PATH is a site (gateway.yaml or its folder) or one device file. Problems go to stderr, one per
line as `FILE:LINE: dotted.path: message`; warnings read `FILE:LINE: dotted.path: warning:
message` and are printed with them but do not fail the check. The exit status is 78
(EX_CONFIG, sysexits.h) when there is an error, which systemd's unit treats as "do not
restart". A good config prints one summary line to stdout and exits 0, so scripts can tell the
two apart by stream and status.

A device file is checked with the site it belongs to: `--site`, else the nearest gateway.yaml
in its folder or above. Problems in the site's other files are counted, not listed. A device
file the site's `devices:` does not include (a draft from `browse`, `scan` or `import-dbc`) is
checked as if it were, with a warning. With no site at all it is checked on its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from gateway.config.loader import (
    GATEWAY_FILE_NAME,
    ConfigSummary,
    LoadedConfig,
    display_path,
    load_config,
    load_device_alone,
    summarize,
)
from gateway.config.yaml_marks import parse_yaml
from gateway.core.errors import ConfigError, ConfigProblem, Severity
from gateway.core.exit_codes import EX_CONFIG, EX_OK, EX_USAGE

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

# Keys only gateway.yaml has: a file holding one of them is a site, not a device.
_SITE_KEYS = frozenset({"site", "gateway_id"})
# How far up from a device file a gateway.yaml is looked for.
_SITE_SEARCH_DEPTH = 8

if TYPE_CHECKING:
    from _typeshed import SupportsWrite


@dataclass(frozen=True, slots=True)
class DeviceCheck:
    """What checking one device file found."""

    loaded: LoadedConfig | None  # None when there are errors
    errors: list[ConfigProblem]  # in the device file
    warnings: list[ConfigProblem]  # in the device file
    other_errors: int  # in the rest of the site
    site: Path | None  # the gateway.yaml it was checked with


def check_config(
    path: str, out: TextIO, err: SupportsWrite[str], *, site: str | None = None
) -> int:
    """Validate `path` (a site or one device file); print the verdict; return the exit status."""
    target = Path(path)
    if is_device_file(target):
        return _check_device(target, Path(site) if site is not None else None, out, err)
    if site is not None:
        print(f"--site applies to a device file; {path} is a site", file=err)
        return EX_USAGE
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        _print_problems([*exc.problems, *exc.warnings], err)
        return EX_CONFIG
    _print_problems(list(loaded.warnings), err)
    warned = _noted(loaded.warnings)
    print(f"OK: {loaded.summary} in {loaded.gateway_display}{f' ({warned})' if warned else ''}",
          file=out)  # fmt: skip
    return EX_OK


def is_device_file(path: Path) -> bool:
    """A file that is not gateway.yaml and does not hold the site's keys. A folder is a site."""
    if path.is_dir() or path.name == GATEWAY_FILE_NAME:
        return False
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return True  # reported as a device file that cannot be read
    document = parse_yaml(text, str(path)).document
    data = document.data if document is not None else None
    return not (isinstance(data, dict) and _SITE_KEYS & data.keys())


def find_site(device_file: Path) -> Path | None:
    """The nearest gateway.yaml in the device file's folder or above it."""
    folder = Path(os.path.abspath(device_file)).parent
    for candidate in [folder, *folder.parents][:_SITE_SEARCH_DEPTH]:
        gateway = candidate / GATEWAY_FILE_NAME
        if gateway.is_file():
            return gateway
    return None


def check_device_file(device_file: Path, site: Path | None = None) -> DeviceCheck:
    """Check one device file with its site (`site`, else found above it), or alone."""
    site = site if site is not None else find_site(device_file)
    loaded: LoadedConfig | None
    if site is None:
        try:
            loaded = load_device_alone(device_file)
        except ConfigError as exc:
            return DeviceCheck(None, exc.problems, exc.warnings, 0, None)
        return DeviceCheck(loaded, [], list(loaded.warnings), 0, None)
    try:
        loaded = load_config(site, extra_devices=[device_file])
        problems, warnings = [], list(loaded.warnings)
    except ConfigError as exc:
        loaded, problems, warnings = None, exc.problems, exc.warnings
    shown = display_path(device_file)
    key = os.path.realpath(device_file)
    mine = [p for p in problems if os.path.realpath(p.file) == key]
    my_warnings = [p for p in warnings if os.path.realpath(p.file) == key]
    if loaded is not None and loaded.not_included:
        my_warnings.insert(
            0,
            ConfigProblem(
                shown,
                None,
                "",
                f"not included by `devices:` in {display_path(site)}; the daemon does not "
                "read it until it is (checked as if it were)",
                Severity.WARNING,
            ),
        )
    return DeviceCheck(
        loaded if not mine else None, mine, my_warnings, len(problems) - len(mine), site
    )


def _check_device(
    device_file: Path, site: Path | None, out: TextIO, err: SupportsWrite[str]
) -> int:
    if site is not None and site.is_dir():
        site = site / GATEWAY_FILE_NAME
    result = check_device_file(device_file, site)
    _print_problems([*result.errors, *result.warnings], err)
    shown = display_path(device_file)
    if result.other_errors:
        # The file may be right, but the site it belongs to does not load.
        where = display_path(result.site) if result.site else "the site"
        noun = "problem" if result.other_errors == 1 else "problems"
        print(
            f"{result.other_errors} {noun} in other files of {where} (not shown; run "
            f"`edge-gateway check-config {where}`)",
            file=err,
        )
    if result.errors or result.loaded is None:
        return EX_CONFIG
    if result.site is None:
        context = "checked on its own: no gateway.yaml above it; name the site with --site"
        summary = result.loaded.summary
    else:
        context = f"checked with the site {display_path(result.site)}"
        summary = _summary_of(result.loaded, device_file)
    warned = _noted(result.warnings)
    print(f"OK: {summary} in {shown} ({context}{'; ' + warned if warned else ''})", file=out)
    return EX_OK


def _summary_of(loaded: LoadedConfig, device_file: Path) -> ConfigSummary:
    key = os.path.realpath(device_file)
    return summarize(config for path, config in loaded.devices if os.path.realpath(path) == key)


def _noted(warnings: Sequence[ConfigProblem]) -> str:
    count = len(warnings)
    if not count:
        return ""
    return f"{count} warning{'s' if count != 1 else ''}"


def _print_problems(problems: list[ConfigProblem], err: SupportsWrite[str]) -> None:
    for problem in sorted(problems, key=lambda p: (p.file, p.line if p.line is not None else 0)):
        print(problem, file=err)
