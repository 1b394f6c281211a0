"""Secured endpoints: Sign and SignAndEncrypt work with a trusted server certificate, and an
untrusted one fails closed with an error naming it (issue 3, OPC UA security; DESIGN.md 9)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from gateway.core.errors import BadResponse, DriverError
from gateway.core.records import Quality
from tests.support.opcua import Pki, ThreadedServer, make_driver, make_pki, next_matching, node


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), machine="Mixer")


@pytest.fixture(scope="module")
def plant(pki: Pki) -> Iterator[ThreadedServer]:
    server = ThreadedServer(machine="Mixer", security=pki.server_security()).start()
    yield server
    server.stop()


def secured(pki: Pki, trust_list: Path, policy: str, mode: str) -> dict[str, Any]:
    return {
        "security_policy": policy,
        "security_mode": mode,
        "certificate": str(pki.client.certificate),
        "private_key": str(pki.client.private_key),
        "trust_list": str(trust_list),
    }


@pytest.mark.parametrize(
    ("policy", "mode"),
    [
        ("Basic256Sha256", "SignAndEncrypt"),
        ("Basic256Sha256", "Sign"),
        ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"),
        ("Aes256_Sha256_RsaPss", "SignAndEncrypt"),
    ],
)
async def test_secured_session_with_a_trusted_server_reads_and_subscribes(
    plant: ThreadedServer, pki: Pki, policy: str, mode: str
) -> None:
    sim = plant.sim
    temp = node(name="temp", node_id=sim.node_id("Temperature"))
    driver = make_driver(
        sim.endpoint, [temp], device_id="mixer", **secured(pki, pki.trusting, policy, mode)
    )
    async with driver, aclosing(driver.records()) as stream:
        (read,) = await driver.read()
        await plant.call(sim.set_value("Temperature", 45.0))
        streamed = await next_matching(stream, lambda r: r.value == 45.0)
    assert read.quality is Quality.GOOD and streamed.quality is Quality.GOOD
    assert sim.mutating_requests() == {}


async def test_untrusted_server_fails_closed_naming_its_certificate(
    plant: ThreadedServer, pki: Pki
) -> None:
    sim = plant.sim
    sessions = sim.requests["create_session"]
    thumbprint = hashlib.sha1(pki.server.certificate.read_bytes()).hexdigest().upper()
    driver = make_driver(
        sim.endpoint,
        [node(name="temp", node_id=sim.node_id("Temperature"))],
        device_id="mixer",
        **secured(pki, pki.empty_trust, "Basic256Sha256", "SignAndEncrypt"),
    )
    with pytest.raises(BadResponse) as caught:
        async with driver:
            pass
    message = str(caught.value)
    assert "CN=mixer-server" in message
    assert thumbprint in message
    assert "not trusted" in message and str(pki.empty_trust) in message
    # Fail closed: no session was ever created on the untrusted server.
    assert sim.requests["create_session"] == sessions


async def test_missing_trust_list_is_a_driver_error_not_a_silent_trust(
    plant: ThreadedServer, pki: Pki, tmp_path: Path
) -> None:
    sim = plant.sim
    driver = make_driver(
        sim.endpoint,
        [node(name="temp", node_id=sim.node_id("Temperature"))],
        **secured(pki, tmp_path / "absent", "Basic256Sha256", "Sign"),
    )
    with pytest.raises(DriverError, match="Trust list"):
        async with driver:
            pass


async def test_server_under_test_offers_no_unsecured_endpoint(plant: ThreadedServer) -> None:
    """What makes the secured tests above meaningful: no session without security here."""
    sim = plant.sim
    driver = make_driver(sim.endpoint, [node(name="temp", node_id=sim.node_id("Temperature"))])
    with pytest.raises(BadResponse, match="No matching endpoints"):
        async with driver:
            pass
