"""Topology inhibition (issue 5): a lost Modbus gateway, RTU line, OPC UA session or CAN bus
suppresses the findings of every device behind it and raises one `comm.lost` for the parent.

A link counts as lost when the newest sample of every tag behind it is BAD (the source task
turns a failed endpoint into BAD samples of all its tags, DESIGN.md section 3), and as restored
when any of them is GOOD or UNCERTAIN again. Pure: samples in, link changes out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.core.records import Quality, Sample


@dataclass(frozen=True, slots=True)
class Link:
    """One parent: an endpoint that several devices (assets) sit behind."""

    id: str  # e.g. `rtu-line-1`, `modbus-tcp-10.0.0.5-502`, `can-can0`
    kind: str  # modbus_tcp | modbus_rtu | opcua | can
    assets: frozenset[str]
    tags: frozenset[str]


@dataclass(frozen=True, slots=True)
class LinkChange:
    link: Link
    lost: bool
    ts: float
    reason: str


class LinkWatcher:
    def __init__(self, links: Iterable[Link]) -> None:
        self._links = {link.id: link for link in links}
        self._link_of_tag = {tag: link.id for link in self._links.values() for tag in link.tags}
        self._bad: dict[str, set[str]] = {link_id: set() for link_id in self._links}
        self._lost: set[str] = set()

    def observe(self, samples: Iterable[Sample]) -> list[LinkChange]:
        changes: list[LinkChange] = []
        for sample in samples:
            link_id = self._link_of_tag.get(sample.tag)
            if link_id is None:
                continue
            link = self._links[link_id]
            bad = self._bad[link_id]
            if sample.quality is Quality.BAD:
                bad.add(sample.tag)
                if bad >= link.tags and link_id not in self._lost:
                    self._lost.add(link_id)
                    changes.append(LinkChange(link, True, sample.ts, sample.reason or "no answer"))
            else:
                bad.discard(sample.tag)
                if link_id in self._lost:
                    self._lost.discard(link_id)
                    changes.append(LinkChange(link, False, sample.ts, "answering again"))
        return changes

    def resume_lost(self, link_id: str) -> None:
        """A link whose `comm.lost` condition was active when the gateway stopped: lost until
        a good sample says otherwise, so that its restoration is reported after a restart."""
        if link_id in self._links:
            self._lost.add(link_id)

    def inhibiting(self, asset: str) -> Link | None:
        """The lost link this asset sits behind, if any."""
        for link_id in self._lost:
            link = self._links[link_id]
            if asset in link.assets:
                return link
        return None

    @property
    def lost(self) -> Mapping[str, Link]:
        return {link_id: self._links[link_id] for link_id in sorted(self._lost)}

    def is_link(self, asset: str) -> bool:
        return asset in self._links
