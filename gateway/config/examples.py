"""The example sites and JSON Schema files that ship inside the package.

They are package data (`gateway/config/sites/`, a link to `configs/` in the checkout), found
through `importlib.resources`, so `edge-gateway demo`, `edge-gateway example` and the schema
files work the same from an installed wheel as from the checkout. The demo site is the folder
itself; the other examples are its `examples/*/` folders.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from gateway.config.loader import GATEWAY_FILE_NAME

DEMO_SITE = "demo"
SCHEMA_FOLDER = "schema"
_EXAMPLES_FOLDER = "examples"
# A site is its top-level YAML (gateway.yaml, knowledge.yaml) and its devices/ folder (YAML
# and DBC files); nothing else of the folder is copied, in particular no state left by a run.
_TOP_LEVEL_FILES = ("*.yaml", "*.md")
_DEVICE_FILES = ("*.yaml", "*.dbc")
_DEVICES_FOLDER = "devices"


@dataclass(frozen=True, slots=True)
class ExampleSite:
    name: str
    path: Path  # the folder holding gateway.yaml
    summary: str  # the first comment line of its gateway.yaml, or ""


def sites_root() -> Path:
    """The shipped `sites/` folder. The gateway is installed as plain files (pip always does),
    so the resource is a real directory that `load_config` and `shutil` can read."""
    root = files("gateway.config").joinpath("sites")
    if not isinstance(root, Path) or not root.is_dir():
        raise FileNotFoundError(
            f"the example sites are not installed with the package (looked in `{root}`)"
        )
    # In a checkout the folder is a link to configs/: show the path an engineer edits.
    return root.resolve()


def schema_dir() -> Path:
    """The installed copies of `gateway.schema.json`, `device.schema.json` and
    `config.schema.json` (the same text `edge-gateway schema` prints)."""
    return sites_root() / SCHEMA_FOLDER


def example_sites() -> list[ExampleSite]:
    """The demo site first, then the other examples by name."""
    root = sites_root()
    folders = [(DEMO_SITE, root)] + [
        (folder.name, folder)
        for folder in sorted((root / _EXAMPLES_FOLDER).iterdir())
        if (folder / GATEWAY_FILE_NAME).is_file()
    ]
    return [ExampleSite(name, path, _summary(path / GATEWAY_FILE_NAME)) for name, path in folders]


def example_site(name: str) -> ExampleSite:
    """The example called `name`; `KeyError` naming the known ones otherwise."""
    sites = {site.name: site for site in example_sites()}
    if name not in sites:
        raise KeyError(f"no example site `{name}` (known: {', '.join(sites)})")
    return sites[name]


def copy_site(site: ExampleSite, target: Path) -> list[Path]:
    """Copy `site` into `target` with the schema files its editor comments refer to
    (`schema/`); return the files written. `target` may exist (tmpfiles.d creates
    /etc/edge-gateway), but no file in it is overwritten: if one would be, nothing is copied."""
    plan = [
        *_matching(site.path, _TOP_LEVEL_FILES, target),
        *_matching(site.path / _DEVICES_FOLDER, _DEVICE_FILES, target / _DEVICES_FOLDER),
        *_matching(schema_dir(), ("*.json",), target / SCHEMA_FOLDER),
    ]
    present = [str(destination) for _, destination in plan if destination.exists()]
    if present:
        raise FileExistsError(f"would overwrite {', '.join(present)}; nothing copied")
    for source, destination in plan:
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    return [destination for _, destination in plan]


def _matching(folder: Path, patterns: tuple[str, ...], target: Path) -> list[tuple[Path, Path]]:
    if not folder.is_dir():
        return []
    return [
        (path, target / path.name)
        for path in sorted(folder.iterdir())
        if path.is_file() and any(path.match(pattern) for pattern in patterns)
    ]


def _summary(gateway_yaml: Path) -> str:
    for line in gateway_yaml.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""
