"""Every protocol folder carries its docs and a sample device file beside its code, as a plugin
does: the sample loads through the real loader, and the README names every key of the
protocol's connection and value models, so neither can drift from the code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config.loader import load_config
from protocols import PROTOCOLS
from tests.support.site import REPO


def folder_of(name: str) -> Path:
    module = PROTOCOLS.entries[name].partition(":")[0]  # protocols.modbus.plugin
    return REPO.joinpath(*module.split(".")[:-1])


FOLDERS = sorted({folder_of(name) for name in PROTOCOLS.names})
# Every subpackage of `protocols/` is a protocol's folder.
PACKAGES = sorted(init.parent for init in (REPO / "protocols").glob("*/__init__.py"))


def test_every_protocol_folder_is_in_the_table_and_every_table_line_has_its_folder():
    assert FOLDERS == PACKAGES


def test_every_protocol_of_the_table_has_a_folder_with_readme_and_example():
    for folder in FOLDERS:
        assert (folder / "README.md").is_file() and (folder / "example.yaml").is_file()


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_the_example_loads_and_uses_its_folders_protocol(folder: Path, tmp_path: Path):
    gateway = {"site": "s", "gateway_id": "g", "devices": [str(folder / "example.yaml")]}
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(gateway))
    loaded = load_config(tmp_path / "gateway.yaml")
    [(_, device)] = loaded.devices
    assert folder_of(device.protocol) == folder
    assert device.values and device.rules


@pytest.mark.parametrize("name", PROTOCOLS.names)
def test_the_readme_names_every_key_of_the_connection_and_the_values(name: str):
    plugin = PROTOCOLS.get(name)
    readme = (folder_of(name) / "README.md").read_text(encoding="utf-8")
    keys = set(plugin.connection_model.model_fields) | set(plugin.value_model.model_fields)
    missing = sorted(key for key in keys if f"`{key}`" not in readme)
    assert missing == []
