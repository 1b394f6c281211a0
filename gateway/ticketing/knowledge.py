"""The knowledge base (`configs/knowledge.yaml`): fault code and asset class select
recommended actions, attached to the ticket at birth.

    entries:
      - fault_code: bearing.outer_race     # exact code, or a family such as `bearing.*`
        asset_class: pump                  # optional; absent or `*` matches every class
        actions: [Check lubrication ..., Plan bearing replacement ...]
        references: [SKF bearing damage guide]   # optional

Entries are matched most specific first (exact code and class, then family, then any class).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.core.errors import ConfigError, ConfigProblem

ANY = "*"


@dataclass(frozen=True, slots=True)
class KnowledgeEntry:
    fault_code: str
    asset_class: str
    actions: tuple[str, ...]
    references: tuple[str, ...] = ()

    def matches(self, fault_code: str, asset_class: str) -> bool:
        if self.asset_class not in (ANY, asset_class):
            return False
        if self.fault_code.endswith(".*"):
            return fault_code.startswith(self.fault_code[:-1])
        return self.fault_code == fault_code

    @property
    def specificity(self) -> int:
        return (0 if self.fault_code.endswith(".*") else 2) + (0 if self.asset_class == ANY else 1)

    def as_attachment(self) -> dict[str, Any]:
        return {
            "fault_code": self.fault_code,
            "asset_class": self.asset_class,
            "actions": list(self.actions),
            "references": list(self.references),
        }


class KnowledgeBase:
    def __init__(self, entries: Sequence[KnowledgeEntry] = ()) -> None:
        self.entries = tuple(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def recommend(self, fault_code: str, asset_class: str, limit: int = 3) -> list[dict[str, Any]]:
        found = [e for e in self.entries if e.matches(fault_code, asset_class)]
        found.sort(key=lambda e: -e.specificity)
        return [e.as_attachment() for e in found[:limit]]

    @classmethod
    def from_document(cls, document: Any, file: str = "knowledge.yaml") -> KnowledgeBase:
        """Validate a parsed document; every problem is reported at once as a `ConfigError`."""
        problems: list[ConfigProblem] = []
        if not isinstance(document, Mapping) or not isinstance(document.get("entries"), list):
            raise ConfigError([ConfigProblem(file, None, "entries", "must be a list of entries")])
        entries = []
        for index, raw in enumerate(document["entries"]):
            path = f"entries.{index}"
            if not isinstance(raw, Mapping):
                problems.append(ConfigProblem(file, None, path, "must be a mapping"))
                continue
            # One problem per unknown key, at the key's own path, as for the other config
            # files: `check-config` then points at the line of the misspelt key.
            unknown = set(map(str, raw)) - {"fault_code", "asset_class", "actions", "references"}
            problems.extend(
                ConfigProblem(file, None, f"{path}.{key}", f"unknown key `{key}`")
                for key in sorted(unknown)
            )
            fault_code = raw.get("fault_code")
            actions = raw.get("actions")
            references = raw.get("references", [])
            asset_class = raw.get("asset_class", ANY)
            if not isinstance(fault_code, str) or not fault_code:
                problems.append(ConfigProblem(file, None, f"{path}.fault_code", "is required"))
                continue
            if not isinstance(asset_class, str) or not asset_class:
                problems.append(ConfigProblem(file, None, f"{path}.asset_class", "must be text"))
                continue
            if not _texts(actions):
                problems.append(
                    ConfigProblem(file, None, f"{path}.actions", "must be a non-empty text list")
                )
                continue
            if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
                problems.append(ConfigProblem(file, None, f"{path}.references", "must be texts"))
                continue
            entries.append(
                KnowledgeEntry(fault_code, asset_class, tuple(actions or ()), tuple(references))
            )
        if problems:
            raise ConfigError(problems)
        return cls(entries)

    @classmethod
    def load(cls, path: Path) -> KnowledgeBase:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError([ConfigProblem(str(path), None, "", f"cannot read: {exc}")]) from exc
        return cls.from_document(document, str(path))


def _texts(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
