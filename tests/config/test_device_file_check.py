"""check-config on one device file (issue 15): with the site above it, with `--site`, or alone;
warnings printed without failing; named files resolved as the daemon resolves them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from gateway.config.check import check_config, find_site, is_device_file
from gateway.config.loader import load_config, load_device_alone
from gateway.core.errors import ConfigError
from gateway.core.exit_codes import EX_CONFIG, EX_OK, EX_USAGE

SITE = "site: plant-a\ngateway_id: edge-01\ndevices:\n  - devices/*.yaml\n"
PUMP = """\
id: {id}
connection: {{protocol: modbus_tcp, host: 10.0.0.5, port: {port}}}
points:
  - {{name: temp, address: {address}}}
"""


def _run(path: Path | str, site: str | None = None) -> tuple[int, list[str], list[str]]:
    out, err = io.StringIO(), io.StringIO()
    status = check_config(str(path), out, err, site=site)
    return status, out.getvalue().splitlines(), err.getvalue().splitlines()


def _site(root: Path) -> Path:
    (root / "devices").mkdir(parents=True)
    (root / "gateway.yaml").write_text(SITE)
    (root / "devices" / "pump-1.yaml").write_text(PUMP.format(id="pump-1", port=502, address=0))
    return root


def test_a_device_file_is_told_from_a_site_file(tmp_path: Path) -> None:
    site = _site(tmp_path / "site")
    assert is_device_file(site / "devices" / "pump-1.yaml")
    assert not is_device_file(site / "gateway.yaml")
    assert not is_device_file(site)
    renamed = tmp_path / "plant.yaml"
    renamed.write_text(SITE)  # a site file under another name is still a site
    assert not is_device_file(renamed)


def test_the_site_is_the_nearest_gateway_yaml_above(tmp_path: Path) -> None:
    site = _site(tmp_path / "site")
    nested = site / "devices" / "line-2"
    nested.mkdir()
    (nested / "press.yaml").write_text("id: x\n")
    assert find_site(nested / "press.yaml") == site / "gateway.yaml"
    assert find_site(tmp_path / "elsewhere.yaml") is None


def test_a_device_file_alone_passes_with_a_note_and_keeps_its_own_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("draft.yaml").write_text(PUMP.format(id="pump-9", port=502, address=0))
    status, out, err = _run("draft.yaml")
    assert (status, err) == (EX_OK, [])
    assert out == [
        "OK: 1 device, 1 tag, 0 rules in draft.yaml (checked on its own: no gateway.yaml"
        " above it; name the site with --site)"
    ]
    Path("bad.yaml").write_text(PUMP.format(id="pump-9", port='"502"', address=0))
    status, out, err = _run("bad.yaml")
    assert (status, out) == (EX_CONFIG, [])
    assert err == [
        "bad.yaml:2: connection.port: input should be a valid integer, got '502';"
        " write 502 without quotes"
    ]


def test_a_device_file_is_checked_against_the_site_named_with_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _site(tmp_path / "site")
    monkeypatch.chdir(tmp_path)
    Path("draft.yaml").write_text(PUMP.format(id="pump-1", port=502, address=0))
    status, out, err = _run("draft.yaml", site="site")
    assert (status, out) == (EX_CONFIG, [])
    assert err == [
        "draft.yaml:1: id: duplicate device id `pump-1` (first at site/devices/pump-1.yaml:1)",
        "draft.yaml:2: connection: resource `modbus_tcp 10.0.0.5:502 unit 1` claimed twice:"
        " also by device `pump-1` at site/devices/pump-1.yaml:2",
    ]
    # The same file alone knows no other device: nothing to clash with.
    assert _run("draft.yaml")[0] == EX_OK


def test_site_option_is_refused_for_a_site(tmp_path: Path) -> None:
    site = _site(tmp_path / "site")
    status, out, err = _run(site, site=str(site))
    assert (status, out) == (EX_USAGE, [])
    assert err == [f"--site applies to a device file; {site} is a site"]


def test_warnings_are_kept_by_a_loaded_config_and_carried_by_an_error(tmp_path: Path) -> None:
    site = _site(tmp_path / "site")
    modicon = site / "devices" / "pump-2.yaml"
    modicon.write_text(PUMP.format(id="pump-2", port=503, address=40001))
    loaded = load_config(site)
    assert [w.path for w in loaded.warnings] == ["points.0.address"]
    assert ": warning: address 40001 (`temp`) looks like Modicon notation" in str(
        loaded.warnings[0]
    )
    (site / "devices" / "pump-3.yaml").write_text("id: [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(site)
    assert len(caught.value.problems) == 1 and not caught.value.problems[0].is_warning
    assert [w.path for w in caught.value.warnings] == ["points.0.address"]


def test_opcua_files_resolve_against_the_device_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from protocols.opcua.plugin import resolved_connection

    folder = tmp_path / "devices"
    (tmp_path / "pki").mkdir()
    folder.mkdir()
    for name in ("cert.der", "key.pem", "pw"):
        (tmp_path / "pki" / name).write_text("x")
    (tmp_path / "pki" / "trusted").mkdir()
    (tmp_path / "pki" / "trusted" / "server.der").write_text("x")
    device = folder / "press.yaml"
    device.write_text(
        "id: press\n"
        "connection: {protocol: opcua, endpoint: 'opc.tcp://h:4840', security_policy:"
        " Basic256Sha256, security_mode: Sign, certificate: ../pki/cert.der, private_key:"
        " ../pki/key.pem, trust_list: ../pki/trusted, login: {method: username, username: u,"
        " password_file: ../pki/pw}}\n"
        "nodes:\n  - {name: t, node_id: 'ns=2;s=T'}\n"
    )
    monkeypatch.chdir(tmp_path / "pki")  # anywhere but the device file's folder
    loaded = load_device_alone(device)
    [(path, config)] = loaded.devices
    connection = resolved_connection(config.spec(path))
    assert connection.certificate == str(tmp_path / "pki" / "cert.der")
    assert connection.private_key == str(tmp_path / "pki" / "key.pem")
    assert connection.trust_list == str(tmp_path / "pki" / "trusted")
    assert connection.login.password_file == str(tmp_path / "pki" / "pw")  # type: ignore[union-attr]


def test_opcua_default_timeout_fits_the_poll_period_only_when_nodes_are_polled() -> None:
    from protocols.opcua.config import OpcUaConnection

    default = OpcUaConnection.model_validate({"protocol": "opcua", "endpoint": "opc.tcp://h"})
    assert default.request_timeout_s() == 4.0  # subscriptions: no period to fit in
    assert default.request_timeout_s(polled_every_s=1.0) == 0.5
    assert default.request_timeout_s(polled_every_s=30.0) == 4.0
    written = OpcUaConnection.model_validate(
        {"protocol": "opcua", "endpoint": "opc.tcp://h", "timeout_s": 3}
    )
    assert written.request_timeout_s(polled_every_s=1.0) == 3  # as written (check-config errs)
