"""`edge-gateway browse` (issue 15) against the asyncua simulator: variables with their data
types, the array as a waveform candidate, the security modes offered, read-only from the
server's side, and the draft passing check-config and probing GOOD; a secured server."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
import yaml

from protocols.opcua.browse import (
    BrowsedVariable,
    BrowseResult,
    OfferedEndpoint,
    device_id_for,
    draft_from_browse,
)
from tests.support.opcua import ThreadedServer, make_pki
from tests.support.site import REPO


async def cli(*args: str, cwd: Path = REPO) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    running = ThreadedServer().start()
    yield running
    running.stop()


async def test_browse_draft_check_config_and_probe_round_trip(server: ThreadedServer, tmp_path):
    sim = server.sim
    before = dict(sim.requests)
    draft = tmp_path / "pump.yaml"
    code, out, err = await cli("browse", sim.endpoint, "--output", str(draft))
    assert (code, out) == (0, ""), err
    during = {k: v - before.get(k, 0) for k, v in sim.requests.items()}
    assert sim.mutating_requests() == {}  # Browse and Read only
    assert during.get("browse", 0) > 0 and during.get("read", 0) > 0
    text = draft.read_text()
    document = yaml.safe_load(text)
    nodes = {n["name"]: n for n in document["nodes"]}
    assert set(nodes) == {"temperature", "speed", "run_state", "pressure",
                          "vibration_sample_rate", "vibration", "setpoint"}  # fmt: skip
    assert nodes["temperature"] == {"name": "temperature", "node_id": "ns=2;s=Pump.Temperature"}
    assert nodes["vibration"] == {
        "name": "vibration", "node_id": "ns=2;s=Pump.Vibration", "kind": "waveform",
        "sample_rate_node": "ns=2;s=Pump.VibrationSampleRate",
    }  # fmt: skip
    assert "Double[4096]: waveform candidate" in text
    assert "# Int32, read 1" in text  # data types as the server gives them
    assert "writable on the server (the gateway only reads)" in text  # Setpoint
    assert "# The server offers: no security (Anonymous)" in text
    assert "Reset" not in text  # a method is not a variable
    code, out, err = await cli("check-config", str(draft))
    assert code == 0, err
    code, out, _ = await cli("probe", str(draft), "--json")
    assert code == 0, out
    report = json.loads(out)
    assert {p["quality"] for p in report["points"]} == {"GOOD"}
    assert {p["name"]: p.get("value") for p in report["points"]}["pressure"] == 4.2
    assert sim.mutating_requests() == {}


async def test_browse_from_a_node_and_bad_options(server: ThreadedServer) -> None:
    sim = server.sim
    code, out, _ = await cli("browse", sim.endpoint, "--node", "ns=2;s=Pump", "--depth", "1")
    assert code == 0
    assert len(yaml.safe_load(out)["nodes"]) == 7
    code, _, err = await cli("browse", sim.endpoint, "--node", "Pump")
    assert code == 64 and "is not a NodeId" in err
    code, _, err = await cli("browse", "http://127.0.0.1:1")
    assert code == 64 and "endpoint" in err


async def test_an_unreachable_server_exits_69() -> None:
    from tests.support.modbus import unused_port

    code, out, err = await cli("browse", f"opc.tcp://127.0.0.1:{await unused_port()}")
    assert (code, out) == (69, "")
    assert "the device cannot be reached" in err


async def test_a_secured_server_says_what_it_offers_and_is_browsed_with_certificates(tmp_path):
    pki = make_pki(tmp_path / "pki")
    secured = ThreadedServer(security=pki.server_security()).start()
    try:
        endpoint = secured.sim.endpoint
        code, out, err = await cli("browse", endpoint)
        assert (code, out) == (64, "")
        assert "offers no endpoint with security None None" in err
        assert "SignAndEncrypt with Basic256Sha256 (Anonymous)" in err
        draft = tmp_path / "devices" / "pump.yaml"
        draft.parent.mkdir()
        code, out, err = await cli(
            "browse", endpoint, "--security-policy", "Basic256Sha256",
            "--security-mode", "SignAndEncrypt", "--certificate", str(pki.client.certificate),
            "--private-key", str(pki.client.private_key), "--trust-list", str(pki.trusting),
            "--output", str(draft),
        )  # fmt: skip
        assert code == 0, err
        connection = yaml.safe_load(draft.read_text())["connection"]
        assert connection["security_mode"] == "SignAndEncrypt"
        assert connection["certificate"] == "../pki/client/gateway.der"  # relative to the draft
        code, _, err = await cli("check-config", str(draft))
        assert code == 0, err
        code, out, _ = await cli("probe", str(draft))
        assert code == 0, out
        assert secured.sim.mutating_requests() == {}
    finally:
        secured.stop()


def test_non_numeric_and_short_arrays_are_comments_and_a_rate_less_array_a_candidate() -> None:
    def variable(name: str, data_type: str, length: int | None = None) -> BrowsedVariable:
        return BrowsedVariable(f"ns=3;s=M.{name}", name, ("Objects", "M"), "ns=3;s=M",
                               data_type, length, False, "x", "")  # fmt: skip

    result = BrowseResult(
        endpoints=(OfferedEndpoint("opc.tcp://h", "None", "None", ("Anonymous",)),),
        variables=(
            variable("Serial", "String"), variable("Phases", "Double", 3),
            variable("Accel", "Float", 2048), variable("Temp", "Float"),
            variable("Mode", "ns=3;i=3002"),
        ),
        objects=1,
        truncated=True,
    )
    draft = draft_from_browse(result, endpoint="opc.tcp://h", device_id="m",
                              connection_lines=[], command="browse")  # fmt: skip
    document = yaml.safe_load(draft.text)
    assert [n["name"] for n in document["nodes"]] == ["temp"]
    assert '# - {name: serial, node_id: "ns=3;s=M.Serial"}  # String: not a number' in draft.text
    assert "Double[3]: too short for a waveform" in draft.text
    assert "Float[2048]: waveform candidate; set its sample_rate" in draft.text
    assert "# - {name: mode" in draft.text  # a server-defined type: not read
    assert any("waveform candidate" in n for n in draft.notes)
    assert any("node limit" in n for n in draft.notes)


@pytest.mark.parametrize(
    ("endpoint", "device"),
    [("opc.tcp://10.0.0.5:4840/edge-gateway/pump", "pump"), ("opc.tcp://press-3.local:4840",
     "press-3"), ("opc.tcp://10.0.0.5:4840/", "10-0-0-5")],
)  # fmt: skip
def test_device_ids_from_the_endpoint(endpoint: str, device: str) -> None:
    assert device_id_for(endpoint) == device
