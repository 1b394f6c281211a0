"""Files a configuration names must exist and be readable when it is checked.

Certificates, keys, trust lists, password files and DBC files are read only when a device
connects or the uplink starts; a typo found then is a device that never connects and a
`comm.lost` ticket to the central system. `check-config` (and therefore systemd's pre-start
check, run as the service user) finds it first. Relative names resolve against the folder of
the file that names them, as the daemon resolves them.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.core.errors import Severity
from gateway.core.plugins import NamedFile

CERTIFICATE_SUFFIXES = (".der", ".pem", ".crt", ".cer")


def _shown_path(path: Path) -> str:
    """Relative to the working directory when under it (as check-config names files)."""
    absolute = os.path.abspath(path)
    cwd = os.getcwd()
    if absolute.startswith(cwd.rstrip(os.sep) + os.sep):
        return os.path.relpath(absolute, cwd)
    return os.path.normpath(absolute)


def named_file_problems(named: NamedFile, base_dir: Path) -> list[tuple[Severity, str]]:
    """What is wrong with one named file (empty when nothing is)."""
    path = Path(named.name)
    resolved = path if path.is_absolute() else base_dir / path
    shown = f"{named.what} `{named.name}`"
    where = _shown_path(resolved)
    if where != named.name:
        shown += f" ({where})"
    try:
        exists = resolved.exists()
        is_dir = resolved.is_dir()
    except OSError as exc:  # a component that is not a folder, a name too long
        return [(Severity.ERROR, f"{shown} cannot be looked up: {exc.strerror or exc}")]
    if not exists:
        return [(Severity.ERROR, f"{shown} not found")]
    if named.folder:
        if not is_dir:
            return [(Severity.ERROR, f"{shown} is a file, not a folder")]
        if not os.access(resolved, os.R_OK | os.X_OK):
            return [(Severity.ERROR, f"{shown} cannot be read by this user (permission denied)")]
        try:
            certificates = [
                entry
                for entry in resolved.iterdir()
                if entry.suffix.lower() in CERTIFICATE_SUFFIXES and entry.is_file()
            ]
        except OSError as exc:
            return [(Severity.ERROR, f"{shown} cannot be listed: {exc.strerror or exc}")]
        if not certificates:
            suffixes = ", ".join(CERTIFICATE_SUFFIXES)
            return [
                (
                    Severity.WARNING,
                    f"{shown} holds no certificate file ({suffixes}): every server "
                    "certificate will be refused",
                )
            ]
        return []
    if is_dir:
        return [(Severity.ERROR, f"{shown} is a folder, not a file")]
    if not os.access(resolved, os.R_OK):
        return [(Severity.ERROR, f"{shown} cannot be read by this user (permission denied)")]
    return []


def read_password(path: Path) -> str:
    """The password a password file holds: its text without the white space around it (an
    editor's final newline is not part of the password). Raises `OSError` when the file cannot
    be read, `ValueError` when it is not UTF-8 text or holds nothing: an empty password would
    be a page anyone can open while its log says a password protects it."""
    try:
        password = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not password:
        raise ValueError("is empty")
    return password
