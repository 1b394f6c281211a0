"""The dependency rules of DESIGN.md section 1, read from the import statements of the
production code (every `import`, also inside functions), so a change that breaks them fails
here instead of in a reviewer's head."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.site import REPO

PACKAGES = ("gateway", "protocols", "detectors", "uplink", "simulator")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


MODULES = modules()
IMPORTS = {module: set(imports_of(path)) for module, path in MODULES.items()}


def ours(names: set[str]) -> set[str]:
    """The imported names that are modules of ours (not `from x import name` attributes)."""
    return {name for name in names if name in MODULES}


def test_only_the_cli_entry_imports_the_composition_root():
    importers = sorted(m for m, names in IMPORTS.items() if "gateway.app" in names)
    assert importers == ["gateway.cli.main"]


def test_the_composition_root_names_no_protocol_rule_ticketing_or_uplink_detail():
    forbidden = ("protocols", "detectors", "gateway.ticketing", "uplink", "gateway.store")
    named = sorted(
        name for name in ours(IMPORTS["gateway.app"]) if any(within(name, f) for f in forbidden)
    )
    assert named == []


@pytest.mark.parametrize(
    ("layer", "may_import"),
    [
        ("gateway.core", ("gateway.core",)),
        ("protocols", ("gateway.core", "protocols")),
        ("detectors", ("gateway.core", "detectors")),
        ("uplink", ("gateway.core", "uplink")),
        ("gateway.store", ("gateway.core", "gateway.store")),
        ("gateway.ticketing", ("gateway.core", "gateway.ticketing")),
        ("gateway.pipeline", ("gateway.core", "gateway.pipeline")),
    ],
)
def test_layers_import_only_what_design_md_allows(layer: str, may_import: tuple[str, ...]):
    wrong = {
        module: sorted(
            name
            for name in ours(names)
            if not any(within(name, allowed) for allowed in may_import)
        )
        for module, names in IMPORTS.items()
        if within(module, layer)
    }
    assert {module: names for module, names in wrong.items() if names} == {}


# Each third-party library in one place (DESIGN.md section 1); the simulator may use the
# server side of the same libraries.
LIBRARY_HOMES = {
    "pymodbus": ("protocols.modbus.driver",),
    "asyncua": ("protocols.opcua.driver",),
    "can": ("protocols.can.driver",),
    "cantools": ("protocols.can.dbc",),
    "paho": ("uplink.mqtt",),
    "orjson": ("gateway.core.json_codec",),
    "aiosqlite": ("gateway.store",),
    "scipy": ("detectors",),
    "aiohttp": ("gateway.runtime.site.server",),
    "jinja2": ("gateway.runtime.site.server",),
    "markupsafe": ("gateway.runtime.site.server",),
}


@pytest.mark.parametrize("library", sorted(LIBRARY_HOMES))
def test_each_library_is_imported_in_its_one_place(library: str):
    homes = LIBRARY_HOMES[library]
    importers = sorted(
        module
        for module, names in IMPORTS.items()
        if any(within(name, library) for name in names)
        and not within(module, "simulator")
        and not any(within(module, home) for home in homes)
    )
    assert importers == []
