"""The spectrum at the time a ticket opened: a small local-only file per ticket.

When a spectrum detector's finding opens a ticket, the view of the block that raised it (its
spectra reduced for drawing, the marked and matched lines, zone and features) is written to
`<state directory>/site/spectra/<ticket id>.json`, so the ticket page can show what the
gateway based the ticket on long after telemetry retention removed the waveform. The folder is
the site page's alone: the uplink reads state.db only, so nothing here is ever sent off-site.

Files are written whole (temporary file, then rename) and the oldest are removed beyond
`keep`, so the folder stays small (about 20 kB a ticket). A failed write is logged and costs
the snapshot, never the ticket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from gateway.core.errors import GatewayError
from gateway.core.interfaces import SpectrumDetector
from gateway.core.records import Finding, Ticket, Waveform
from gateway.core.spectrum_view import SpectrumView

log = logging.getLogger(__name__)

# Ticket ids are `T-<site>-<gateway>-<yyyymmdd>-<n>` with ids of [A-Za-z0-9_-]; anything else
# (a path, dots) is never turned into a file name.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,199}$")
KEEP = 500
MAX_FILE_BYTES = 512 * 1024


class SpectrumSnapshots:
    def __init__(self, directory: Path, keep: int = KEEP) -> None:
        self.directory = directory
        self.keep = keep
        self.written = 0
        self.failures = 0

    def path(self, ticket_id: str) -> Path | None:
        if not SAFE_ID.match(ticket_id):
            return None
        return self.directory / f"{ticket_id}.json"

    def has(self, ticket_id: str) -> bool:
        path = self.path(ticket_id)
        return path is not None and path.is_file()

    def save(self, ticket_id: str, view: SpectrumView) -> bool:
        """Write the snapshot of one ticket (blocking: call it from a worker thread)."""
        path = self.path(ticket_id)
        if path is None:
            return False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(view.to_dict(), separators=(",", ":")))
            os.replace(temporary, path)
            self._trim()
        except OSError as exc:
            self.failures += 1
            log.warning("Spectrum snapshot of ticket `%s` not kept: %s", ticket_id, exc)
            return False
        self.written += 1
        return True

    def load(self, ticket_id: str) -> SpectrumView | None:
        """The snapshot of one ticket; None when there is none or it cannot be read."""
        path = self.path(ticket_id)
        if path is None:
            return None
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                log.warning("Spectrum snapshot `%s` is too large to show; ignored.", path)
                return None
            return SpectrumView.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("Spectrum snapshot `%s` cannot be read: %s", path, exc)
            return None

    def _trim(self) -> None:
        files = sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in files[: max(0, len(files) - self.keep)]:
            old.unlink(missing_ok=True)


class SnapshotRecorder:
    """Keeps the spectrum of each ticket a spectrum detector's finding opens.

    Called after ticketing applied a finding, in the detector runner's task: the detector has
    not analysed another block since, so its last diagnosis is the one behind the finding, and
    the block (already in telemetry.db: it is stored before the detectors see it) is found by
    the finding's time."""

    def __init__(
        self,
        snapshots: SpectrumSnapshots,
        detectors: Sequence[SpectrumDetector],
        ticket_of: Callable[[Finding], Ticket | None],
        waveform_at: Callable[[str, float], Awaitable[Waveform | None]],
    ) -> None:
        self._snapshots = snapshots
        self._detectors = {d.name: d for d in detectors}
        self._ticket_of = ticket_of
        self._waveform_at = waveform_at

    async def after_finding(self, finding: Finding) -> None:
        detector = self._detectors.get(finding.detector)
        if detector is None or not finding.active:
            return
        ticket = self._ticket_of(finding)
        # Revision 1: opened by this episode and not changed since; a later re-trigger of an
        # older ticket is not the spectrum it opened on.
        if ticket is None or ticket.revision != 1 or self._snapshots.has(ticket.id):
            return
        try:
            waveform = await self._waveform_at(detector.tag_id, finding.ts)
        except GatewayError as exc:
            log.warning("Spectrum snapshot of ticket `%s` not kept: %s", ticket.id, exc)
            return
        if waveform is None:
            log.warning(
                "Spectrum snapshot of ticket `%s` not kept: no block of `%s` stored.",
                ticket.id, detector.tag_id,
            )  # fmt: skip
            return
        view = await asyncio.to_thread(detector.spectrum_view, waveform)
        if view is not None and await asyncio.to_thread(self._snapshots.save, ticket.id, view):
            log.info("Spectrum of ticket `%s` kept on site (`%s`).", ticket.id,
                     self._snapshots.path(ticket.id))  # fmt: skip
