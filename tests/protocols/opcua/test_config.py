"""OPC UA config models: what an OT engineer may write, and what is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from protocols.opcua.config import (
    DeadbandType,
    NodeMode,
    OpcUaConnection,
    OpcUaNode,
    UsernameLogin,
    is_node_id,
)


def connection(**fields: object) -> OpcUaConnection:
    return OpcUaConnection.model_validate(
        {"protocol": "opcua", "endpoint": "opc.tcp://10.0.0.5:4840", **fields}
    )


def test_defaults_are_anonymous_unsecured_subscriptions() -> None:
    conn = connection()
    assert conn.login.method == "anonymous"
    assert (conn.security_policy.value, conn.security_mode.value) == ("None", "None")
    node = OpcUaNode.model_validate({"name": "temp", "node_id": "ns=2;s=Pump.Temp"})
    assert node.mode is NodeMode.SUBSCRIBE and node.deadband.type is DeadbandType.NONE


@pytest.mark.parametrize(
    "text",
    [
        "ns=2;s=Pump.Temp",
        "i=2258",
        "ns=3;i=1001",
        "ns=2;s=A;B",
        "ns=2;s=X;i=99999999999",
        "ns=1;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63",
        "ns=2;b=AAEC",
    ],
)
def test_node_ids_in_string_form_are_accepted(text: str) -> None:
    assert is_node_id(text)


@pytest.mark.parametrize(
    "text",
    [
        "ns=65536;s=a",
        "i=4294967296",
        "Pump.Temp",
        "ns=x;s=a",
        "ns=2;s=",
        "ns=2;i=abc",
        "nsu=urn:x;s=a",
        "ns=2;q=1",
    ],
)
def test_malformed_node_ids_are_refused(text: str) -> None:
    assert not is_node_id(text)
    with pytest.raises(ValidationError):
        OpcUaNode.model_validate({"name": "t", "node_id": text})


def test_secured_mode_needs_certificate_key_and_trust_list() -> None:
    with pytest.raises(ValidationError, match="needs certificate, private_key, trust_list"):
        connection(security_policy="Basic256Sha256", security_mode="SignAndEncrypt")


def test_policy_and_mode_must_agree() -> None:
    with pytest.raises(ValidationError, match="both be None or both be set"):
        connection(security_policy="Basic256Sha256")


def test_deprecated_sha1_policies_are_refused() -> None:
    with pytest.raises(ValidationError):
        connection(
            security_policy="Basic128Rsa15",
            security_mode="Sign",
            certificate="c",
            private_key="k",
            trust_list="t",
        )


def test_username_login_takes_the_password_from_a_file() -> None:
    conn = connection(login={"method": "username", "username": "op", "password_file": "/etc/gw/pw"})
    assert isinstance(conn.login, UsernameLogin)
    with pytest.raises(ValidationError):
        connection(login={"method": "username", "username": "op", "password": "secret"})


def test_unknown_keys_are_errors() -> None:
    with pytest.raises(ValidationError, match="extra"):
        connection(poll_rate=3)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "waveform"}, "exactly one of sample_rate and sample_rate_node"),
        ({"kind": "waveform", "sample_rate": 100, "sample_rate_node": "ns=2;s=R"}, "exactly one"),
        ({"sample_rate": 100}, "waveform nodes only"),
        (
            {"kind": "waveform", "sample_rate": 100, "deadband": {"type": "absolute", "value": 1}},
            "scalar nodes only",
        ),
        ({"deadband": {"type": "percent", "value": 150}}, "0..100"),
    ],
)
def test_node_rules(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        OpcUaNode.model_validate({"name": "v", "node_id": "ns=2;s=V", **fields})
