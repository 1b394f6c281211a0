"""Detector state kept across restarts (for example the vibration baseline).

One small JSON file per detector in `<state dir>/detectors/`, replaced atomically (write a
temporary file, fsync, rename), so a crash leaves either the old or the new state, never half
of one. A file that cannot be read is reported and ignored: the detector then learns again.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.core.errors import StoreError

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class DetectorSnapshots:
    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def _path(self, detector: str) -> Path:
        return self._directory / f"{_UNSAFE.sub('_', detector)}.json"

    def load(self, detector: str) -> dict[str, Any] | None:
        path = self._path(detector)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("Detector state `%s` unreadable (%s); it will be learnt again.", path, exc)
            return None
        try:
            state = json.loads(text)
        except json.JSONDecodeError as exc:
            log.warning("Detector state `%s` is corrupt (%s); it will be learnt again.", path, exc)
            return None
        if not isinstance(state, dict):
            log.warning("Detector state `%s` is not an object; it will be learnt again.", path)
            return None
        return state

    def save(self, detector: str, state: Mapping[str, Any]) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        path = self._path(detector)
        tmp = path.with_suffix(".json.tmp")
        try:
            with tmp.open("w", encoding="utf-8") as handle:
                json.dump(state, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(path)
        except (OSError, TypeError, ValueError) as exc:
            raise StoreError(f"cannot save detector state `{path}`: {exc}") from exc
