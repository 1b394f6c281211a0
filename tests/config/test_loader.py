"""load_config: what a good config yields, how files are named, what is read despite errors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from gateway.config.check import check_config
from gateway.config.loader import ConfigSummary, display_path, load_config
from gateway.core.errors import ConfigError

GOOD = Path(__file__).parent / "golden" / "good_minimal"
REPO = Path(__file__).resolve().parents[2]

DEVICE = """\
id: {id}
connection: {{protocol: modbus_tcp, host: 127.0.0.1, port: {port}, timeout_s: 0.5}}
points:
  - {{name: temp, address: 0}}
"""


def _site(root: Path, gateway_yaml: str, devices: dict[str, str]) -> Path:
    (root / "devices").mkdir(parents=True)
    (root / "gateway.yaml").write_text(gateway_yaml)
    for name, text in devices.items():
        (root / "devices" / name).write_text(text)
    return root


def _problems(path: str | Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.problems]


def test_good_config_gives_models_absolute_paths_and_summary() -> None:
    loaded = load_config(GOOD / "gateway.yaml")
    assert loaded.gateway.site == "plant-a"
    assert loaded.base_dir == GOOD.resolve()
    assert loaded.gateway_file == GOOD.resolve() / "gateway.yaml"
    [(device_path, device)] = loaded.devices
    assert device_path == GOOD.resolve() / "devices" / "pump-1.yaml"
    assert device.id == "pump-1"
    assert [p.name for p in device.points] == [
        "bearing_temp",
        "discharge_pressure",
        "speed",
        "run_hours",
    ]
    assert loaded.summary == ConfigSummary(devices=1, tags=4, rules=1)
    assert str(loaded.summary) == "1 device, 4 tags, 1 rule"


def test_folder_path_loads_the_gateway_yaml_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOOD.parent)
    loaded = load_config("good_minimal")
    assert loaded.gateway_display == os.path.join("good_minimal", "gateway.yaml")
    assert loaded.summary.tags == 4


def test_summary_counts_and_plurals(tmp_path: Path) -> None:
    gateway = "site: s\ngateway_id: g\n"
    _site(
        tmp_path,
        gateway,
        {f"p{i}.yaml": DEVICE.format(id=f"p{i}", port=5020 + i) for i in range(2)},
    )
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(tmp_path), out, err) == 0
    assert out.getvalue() == f"OK: 2 devices, 2 tags, 0 rules in {tmp_path / 'gateway.yaml'}\n"
    assert err.getvalue() == ""


def test_file_names_are_relative_under_cwd_and_as_given_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = DEVICE.format(id="p1", port=5020)
    site = _site(tmp_path / "site", "site: s\ngateway_id: g\ncolour: red\n", {"p1.yaml": device})
    monkeypatch.chdir(tmp_path)
    assert _problems("site")[0] == "site/gateway.yaml:3: colour: unknown key `colour`"
    assert _problems(site.resolve())[0].startswith("site/gateway.yaml:3: ")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert _problems("../site")[0].startswith("../site/gateway.yaml:3: ")
    assert _problems(site)[0].startswith(f"{site}/gateway.yaml:3: ")
    assert display_path(Path("./a/../b.yaml")) == "b.yaml"


def test_a_file_named_twice_or_matched_twice_is_loaded_once(tmp_path: Path) -> None:
    gateway = "site: s\ngateway_id: g\ndevices:\n  - devices/p1.yaml\n  - devices/*.yaml\n"
    _site(tmp_path, gateway, {"p1.yaml": DEVICE.format(id="p1", port=5020)})
    assert load_config(tmp_path).summary.devices == 1


def test_device_files_are_checked_even_when_gateway_yaml_is_invalid(tmp_path: Path) -> None:
    _site(tmp_path, "site: s\n", {"p1.yaml": "id: p1\n"})
    problems = _problems(tmp_path / "gateway.yaml")
    assert [p.split(": ", 1)[1] for p in problems] == [
        "connection: field required",
        "gateway_id: field required",
    ]


def test_rule_naming_a_device_whose_file_is_broken_is_not_reported_twice(
    tmp_path: Path,
) -> None:
    rule = "rules:\n  - {name: r, signal: p2.temp, hi: 1}\n"
    _site(
        tmp_path,
        "site: s\ngateway_id: g\n",
        {
            "p1.yaml": DEVICE.format(id="p1", port=5020) + rule,
            "p2.yaml": "id: p2\npoints: [\n",
        },
    )
    problems = _problems(tmp_path)
    assert len(problems) == 1
    assert "invalid YAML" in problems[0]


def test_folder_named_as_device_file_and_non_utf8_file(tmp_path: Path) -> None:
    gateway = "site: s\ngateway_id: g\ndevices:\n  - devices\n  - devices/*.yaml\n"
    _site(tmp_path, gateway, {"p1.yaml": "id: p1\n"})
    (tmp_path / "devices" / "p1.yaml").write_bytes(b"id: p1\nname: caf\xe9\n")
    problems = [p.split(": ", 1)[1] for p in _problems(tmp_path)]
    assert problems == [
        "<root>: the file is not UTF-8 text",
        "devices.0: included path devices is a folder; name files or a glob such as devices/*.yaml",
    ]


def test_missing_gateway_file_is_one_problem_without_line(tmp_path: Path) -> None:
    problems = _problems(tmp_path / "nope.yaml")
    assert problems == [f"{tmp_path / 'nope.yaml'}: <root>: file not found"]


def test_example_site_in_configs_loads_without_problems() -> None:
    # configs/gateway.yaml and configs/devices/*.yaml are what the demo and the README use.
    loaded = load_config(REPO / "configs" / "gateway.yaml")
    assert loaded.summary.devices >= 1
    assert loaded.summary.tags >= 1


def test_equal_texts_and_numbers_of_the_devices_are_kept_once_with_their_sign(
    tmp_path: Path,
) -> None:
    # 500 devices x 30 points repeat the same names, units and scales: one object each
    # (issue 17, memory), and a scale of -0.0 stays -0.0 although it equals 0.0.
    point = "  - {{name: {name}, address: {address}, unit: bar, scale: {scale}}}\n"
    device = DEVICE.split("points:")[0] + "points:\n"
    devices = {
        f"p{n}.yaml": device.format(id=f"p{n}", port=5020 + n)
        + point.format(name="temp", address=0, scale=0.25)
        + point.format(name="zero", address=1, scale="-0.0" if n else "0.0")
        for n in range(2)
    }
    _site(tmp_path, "site: s\ngateway_id: g\ndevices:\n  - devices/*.yaml\n", devices)
    (a, b) = [config.points for _, config in load_config(tmp_path).devices]
    assert a[0].name is b[0].name and a[0].unit is b[0].unit and a[0].scale is b[0].scale
    assert a[0].scale == 0.25 and a[0].unit == "bar"
    assert str(a[1].scale) == "0.0" and str(b[1].scale) == "-0.0"


def test_equal_points_and_rules_of_the_devices_are_one_model_each(tmp_path: Path) -> None:
    # A plant's devices of one kind list the same points and rules, and each driver holds
    # its points for the whole run: an equal frozen model is kept once for the site (issue
    # 17, memory). A point that differs in one value, in a sign, in a bit against an integer,
    # or only in which fields were written, is its own model.
    device = DEVICE.split("points:")[0] + "points:\n"
    points = (
        "  - {name: temp, address: 0, unit: bar, scale: 0.25}\n"
        "  - {name: zero, address: 1, scale: %s}\n"
        "  - {name: flag, address: 2, %s}\n"
        "  - {name: run, address: 3, type: uint16, enum: {0: stopped, 1: running}}\n"
        "rules:\n  - {name: hot, signal: temp, hi: 80.0}\n"
    )
    variants = [("0.0", "type: uint16"), ("0.0", "type: uint16"), ("-0.0", "")]
    devices = {
        f"p{n}.yaml": device.format(id=f"p{n}", port=5020 + n) + points % variant
        for n, variant in enumerate(variants)
    }
    _site(tmp_path, "site: s\ngateway_id: g\ndevices:\n  - devices/*.yaml\n", devices)
    (a, b, c) = [config for _, config in load_config(tmp_path).devices]
    assert all(x is y for x, y in zip(a.points, b.points, strict=True))
    assert a.rules[0] is b.rules[0] is c.rules[0]
    assert a.points[0] is c.points[0] and a.points[3] is c.points[3]
    assert a.points[1] is not c.points[1] and str(c.points[1].scale) == "-0.0"
    # `type: uint16` written or left to its default: equal values, other fields set.
    assert a.points[2] == c.points[2] and a.points[2] is not c.points[2]
    assert "type" in a.points[2].model_fields_set and "type" not in c.points[2].model_fields_set
    assert a.points[3].enum == {0: "stopped", 1: "running"}
    assert [d.connection.port for d in (a, b, c)] == [5020, 5021, 5022]
