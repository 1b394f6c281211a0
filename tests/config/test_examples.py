"""Every shipped example site loads without a problem, so the examples cannot rot (issue 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.loader import load_config
from gateway.config.schema import device_schema
from protocols import PROTOCOLS as PROTOCOL_TABLE

REPO = Path(__file__).resolve().parents[2]
SITES = [REPO / "configs", *sorted((REPO / "configs" / "examples").glob("*/"))]
# Every protocol of the table ships in at least one example site.
PROTOCOLS = set(PROTOCOL_TABLE.names)


@pytest.mark.parametrize("site", SITES, ids=lambda p: p.name)
def test_example_site_loads_without_problems(site: Path) -> None:
    loaded = load_config(site)
    assert loaded.devices, f"{site} has no device"


def test_examples_cover_every_protocol_and_the_schema_knows_them() -> None:
    used = {d.connection.protocol for site in SITES for _, d in load_config(site).devices}
    assert used == PROTOCOLS
    schema_text = str(device_schema())
    assert all(protocol in schema_text for protocol in PROTOCOLS)


def test_demo_site_decodes_with_the_dbc_the_simulated_drive_sends() -> None:
    """The demo only works while the site's DBC (the gateway's copy) and the simulator's (the
    drive's) are the same file."""
    from simulator.can_bus import DEMO_DBC

    site_dbc = REPO / "configs" / "devices" / "demo_machine.dbc"
    assert site_dbc.read_bytes() == DEMO_DBC.read_bytes()


def test_shipped_example_sites_are_the_checkout_configs() -> None:
    """What `edge-gateway example` and the demo find through the package is `configs/`."""
    from gateway.config.examples import example_sites

    found = {site.name: site.path.resolve() for site in example_sites()}
    assert found == {"demo": (REPO / "configs").resolve()} | {
        p.name: p.resolve() for p in sorted((REPO / "configs" / "examples").glob("*/"))
    }
@pytest.mark.parametrize("site", SITES, ids=lambda p: p.name)
def test_example_site_builds_its_drivers(site: Path) -> None:
    """Every endpoint's driver (or line) can be built from the example, text points and all,
    without connecting: a wiring mistake shows here, not when the daemon starts polling."""
    from gateway.assembly.plant import configured_devices, endpoints
    from gateway.core.clock import SystemClock
    from gateway.core.plugins import SharedLineEndpoint

    loaded = load_config(site)
    devices = configured_devices(loaded.devices, loaded.protocols)
    built = []
    for endpoint in endpoints(devices, SystemClock()):
        if isinstance(endpoint, SharedLineEndpoint):
            built += [tag.id for tag in endpoint.line_factory().tags()]
        else:
            built += [tag.id for tag in endpoint.driver_factory().tags()]
    assert sorted(built) == sorted(tag.id for device in devices for tag in device.tags)
