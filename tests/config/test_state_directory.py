"""Where state.db and telemetry.db go: storage.directory, then $STATE_DIRECTORY, then the XDG
state home (gateway/config/loader.py, `LoadedConfig.state_location`)."""

from __future__ import annotations

from pathlib import Path

from gateway.config.loader import load_config
from tests.support.site import REPO


def site(tmp_path: Path, storage: str = "") -> Path:
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "p.yaml").write_text(
        "id: p\nconnection: {protocol: modbus_tcp, host: 127.0.0.1}\n"
        "points: [{name: t, address: 0}]\n"
    )
    (tmp_path / "gateway.yaml").write_text(f"site: s1\ngateway_id: g1\n{storage}")
    return tmp_path


def test_storage_directory_written_in_gateway_yaml_wins_relative_to_the_file(tmp_path):
    loaded = load_config(site(tmp_path, "storage: {directory: data}\n"))
    location = loaded.state_location({"STATE_DIRECTORY": "/var/lib/edge-gateway"})
    assert location.path == tmp_path / "data"
    assert location.origin == "storage.directory in gateway.yaml"


def test_state_directory_from_systemd_when_storage_directory_is_not_set(tmp_path):
    loaded = load_config(site(tmp_path))
    # systemd joins several StateDirectory= entries with ':'; the first is ours.
    location = loaded.state_location(
        {"STATE_DIRECTORY": "/var/lib/edge-gateway:/var/lib/other", "XDG_STATE_HOME": "/x"}
    )
    assert location.path == Path("/var/lib/edge-gateway")
    assert location.origin.startswith("$STATE_DIRECTORY")


def test_outside_a_service_manager_the_xdg_state_home_per_site_and_gateway(tmp_path):
    loaded = load_config(site(tmp_path))
    location = loaded.state_location({"XDG_STATE_HOME": str(tmp_path / "xdg")})
    assert location.path == tmp_path / "xdg" / "edge-gateway" / "s1-g1"
    assert location.origin.startswith("default")


def test_a_relative_xdg_state_home_is_ignored_as_the_spec_says(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    loaded = load_config(site(tmp_path))
    location = loaded.state_location({"XDG_STATE_HOME": "relative/state"})
    assert location.path == tmp_path / "home" / ".local" / "state" / "edge-gateway" / "s1-g1"


def test_the_shipped_site_keeps_no_state_in_the_checkout(tmp_path, monkeypatch):
    """`run configs/gateway.yaml` used to write configs/var/ into the checkout."""
    monkeypatch.setenv("HOME", str(tmp_path))
    loaded = load_config(REPO / "configs")
    for environ in ({}, {"XDG_STATE_HOME": str(tmp_path / "xdg")}):
        path = loaded.state_location(environ).path
        assert not path.is_relative_to(REPO), path


def test_an_explicit_directory_beside_a_unit_state_directory_is_logged_as_a_warning(
    tmp_path, monkeypatch, caplog
):
    from gateway.runtime.lifecycle import _log_state_location

    caplog.set_level("INFO", logger="gateway")
    loaded = load_config(site(tmp_path, "storage: {directory: /srv/edge}\n"))
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edge-gateway")
    _log_state_location(loaded)
    warning = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warning) == 1 and "ReadWritePaths=" in warning[0].getMessage()
    caplog.clear()
    monkeypatch.setenv("STATE_DIRECTORY", "/srv/edge")
    _log_state_location(loaded)
    assert [r.levelname for r in caplog.records] == ["INFO"]
