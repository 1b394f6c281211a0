"""Topology inhibition: a lost Modbus gateway, RTU line, OPC UA session or CAN bus
suppresses the findings of every device behind it and raises one `comm.lost` for the parent.

A link counts as lost when the newest sample of every tag behind it is BAD (the source task
turns a failed endpoint into BAD samples of all its tags, DESIGN.md section 3), and as restored
when any of them is GOOD or UNCERTAIN again. Pure: samples in, link changes out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

from gateway.core.records import Poll, Quality, Sample, SampleBatch

_QUALITY = attrgetter("quality")


@dataclass(frozen=True, slots=True)
class Link:
    """One parent: an endpoint that several devices (assets) sit behind."""

    id: str  # e.g. `rtu-line-1`, `modbus-tcp-10.0.0.5-502`, `can-can0`
    kind: str  # modbus_tcp | modbus_rtu | opcua | can
    assets: frozenset[str]
    # A tuple from the assembly: 500 endpoints x 30 tags held 1.1 MB as frozensets, and
    # the watcher needs only which link a tag is behind and how many tags a link has.
    tags: Collection[str]


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
        # Tags behind each link: `_bad` holds only tags of its own link, so a link is lost
        # when as many of its tags are BAD as it has.
        self._size = {link_id: len(set(link.tags)) for link_id, link in self._links.items()}
        self._bad: dict[str, set[str]] = {link_id: set() for link_id in self._links}
        self._bad_tags = 0  # in all the sets of `_bad`
        self._lost: set[str] = set()

    def observe(self, samples: Iterable[Sample]) -> list[LinkChange]:
        changes: list[LinkChange] = []
        batch = samples if isinstance(samples, SampleBatch) else None
        if not self._bad_tags and not self._lost:
            # All is well and stays so unless a sample is BAD (a `Poll` is all GOOD): one
            # pass in C over the rest (`in` compares identity first).
            rest = batch.loose() if batch is not None else samples
            if isinstance(rest, Sequence) and Quality.BAD not in map(_QUALITY, rest):
                return changes
        if batch is None:
            for sample in samples:
                self._observe_one(sample, changes)
            return changes
        for part in batch.parts:
            if not isinstance(part, Poll):
                self._observe_one(part, changes)
            elif self._bad_tags or self._lost:
                for tag in part.tags:
                    self._good(tag, part.ts, changes)
        return changes

    def _observe_one(self, sample: Sample, changes: list[LinkChange]) -> None:
        if sample.quality is not Quality.BAD:
            self._good(sample.tag, sample.ts, changes)
            return
        link_id = self._link_of_tag.get(sample.tag)
        if link_id is None:
            return
        bad = self._bad[link_id]
        if sample.tag not in bad:
            bad.add(sample.tag)
            self._bad_tags += 1
        if len(bad) == self._size[link_id] and link_id not in self._lost:
            self._lost.add(link_id)
            changes.append(
                LinkChange(self._links[link_id], True, sample.ts, sample.reason or "no answer")
            )

    def _good(self, tag: str, ts: float, changes: list[LinkChange]) -> None:
        """A usable sample of `tag`: its link answers."""
        if not self._bad_tags and not self._lost:
            return  # all is well: a usable sample changes nothing (the usual case)
        link_id = self._link_of_tag.get(tag)
        if link_id is None:
            return
        bad = self._bad[link_id]
        if tag in bad:
            bad.discard(tag)
            self._bad_tags -= 1
        if link_id in self._lost:
            self._lost.discard(link_id)
            changes.append(LinkChange(self._links[link_id], False, ts, "answering again"))

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


class Dependencies:
    """Process topology: `depends_on` in the device YAML (this asset is fed by or
    driven by that one) and the links assets are read through. Names the root cause of a storm
    by topology: an asset upstream of the members, rather than whichever alarm came first.
    Static after start, so the closure of each asset is computed once and a lookup costs the
    depth of the topology, never the size of a storm."""

    def __init__(self, depends_on: Mapping[str, Iterable[str]], links: Iterable[Link] = ()) -> None:
        direct: dict[str, set[str]] = {a: set(up) for a, up in depends_on.items()}
        links = tuple(links)
        self._links = frozenset(link.id for link in links)
        for link in links:
            for asset in link.assets:
                direct.setdefault(asset, set()).add(link.id)
        self._direct = direct
        self._closure: dict[str, frozenset[str]] = {}
        self.upstream_assets = frozenset(a for ups in direct.values() for a in ups)

    def upstream(self, asset: str) -> frozenset[str]:
        """Every asset this one is fed or driven by, directly or through others (a cycle in
        the YAML is cut where it closes)."""
        known = self._closure.get(asset)
        if known is not None:
            return known
        seen: set[str] = set()
        todo = list(self._direct.get(asset, ()))
        while todo:
            parent = todo.pop()
            if parent in seen or parent == asset:
                continue
            seen.add(parent)
            todo.extend(self._direct.get(parent, ()))
        closure = frozenset(seen)
        self._closure[asset] = closure
        return closure

    def is_upstream(self, asset: str) -> bool:
        return asset in self.upstream_assets

    def is_link(self, asset: str) -> bool:
        return asset in self._links
