"""OPC UA configuration models. Pydantic only: no asyncua import here (STYLE.md).

A device file names one server (`connection`) and the variables read from it (`nodes`). Values
are read through subscriptions by default; `mode: poll` reads a node with the Read service at
the device's poll period instead, for servers that sample badly or not at all.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from gateway.core.plugins import NamedFile

DEFAULT_TIMEOUT_S = 4.0


class Strict(BaseModel):
    # strict: as strict as the shipped JSON Schema (`port: "502"` or `unit_id: true` is an
    # error, not a silent conversion); enum fields opt out (`strict=False`) because YAML gives
    # their values as text.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# A NodeId in the OPC UA string form (Part 6, 5.3.1.10) with an explicit namespace index:
# ns=2;s=Pump.Temp, ns=3;i=1001, ns=2;g=<guid>, ns=2;b=<base64>. `ns=0` may be left out.
NODE_ID_PATTERN = (
    r"^(?:ns=\d{1,5};)?"
    r"(?:i=\d{1,10}|s=.+|g=[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"|b=[A-Za-z0-9+/]+={0,2})$"
)
_NODE_ID_RE = re.compile(NODE_ID_PATTERN)


def is_node_id(text: str) -> bool:
    """The string form, with the namespace index a UInt16 and a numeric id a UInt32."""
    if _NODE_ID_RE.match(text) is None:
        return False
    namespace, _, identifier = text.partition(";") if text.startswith("ns=") else ("", "", text)
    if namespace and int(namespace[3:]) > 0xFFFF:
        return False
    return not identifier.startswith("i=") or int(identifier[2:]) <= 0xFFFF_FFFF


def _node_id(text: str) -> str:
    if not is_node_id(text):
        raise ValueError(f"`{text}` is not a NodeId such as ns=2;s=Pump.Temp or ns=3;i=1001")
    return text


NodeIdText = Annotated[str, AfterValidator(_node_id)]


class SecurityPolicy(enum.StrEnum):
    """Security policies asyncua implements that are not deprecated (Basic128Rsa15 and Basic256
    use SHA-1 and are refused on purpose)."""

    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"
    AES128_SHA256_RSAOAEP = "Aes128_Sha256_RsaOaep"
    AES256_SHA256_RSAPSS = "Aes256_Sha256_RsaPss"


class SecurityMode(enum.StrEnum):
    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class AnonymousLogin(Strict):
    method: Literal["anonymous"] = Field("anonymous", description="anonymous: no user login.")


class UsernameLogin(Strict):
    method: Literal["username"] = Field(description="username: user name and password.")
    username: str = Field(min_length=1, description="User name on the server.")
    password_file: str = Field(description="File holding the password; never logged.")


class CertificateLogin(Strict):
    """User identity by X.509 certificate (ActivateSession with an X509IdentityToken)."""

    method: Literal["certificate"] = Field(description="certificate: an X.509 user identity.")
    certificate: str = Field(description="User certificate, DER or PEM.")
    private_key: str = Field(description="Private key of the user certificate, PEM or DER.")


Login = Annotated[AnonymousLogin | UsernameLogin | CertificateLogin, Field(discriminator="method")]


class OpcUaConnection(Strict):
    """One OPC UA server endpoint and how the gateway authenticates to it."""

    protocol: Literal["opcua"] = Field(
        description="opcua: an OPC UA server (selects this connection type)."
    )
    endpoint: str = Field(
        pattern=r"^opc\.tcp://[^/\s:]+(?::\d{1,5})?(?:/\S*)?$",
        description="Server endpoint URL, for example opc.tcp://10.0.0.5:4840.",
    )
    security_policy: SecurityPolicy = Field(
        SecurityPolicy.NONE,
        strict=False,
        description="None, or a policy without SHA-1 (Basic256Sha256...).",
    )
    security_mode: SecurityMode = Field(
        SecurityMode.NONE, strict=False, description="None, Sign or SignAndEncrypt."
    )
    certificate: str | None = Field(
        None, description="The gateway's application instance certificate (DER or PEM)."
    )
    private_key: str | None = Field(None, description="Private key of `certificate` (PEM or DER).")
    trust_list: str | None = Field(
        None,
        description="Folder of trusted server certificates or CA certificates (DER or PEM). "
        "A server whose certificate is not trusted is refused.",
    )
    application_uri: str | None = Field(
        None, description="Defaults to the URI in the certificate's subjectAltName."
    )
    login: Login = Field(
        default_factory=AnonymousLogin,
        description="User identity: anonymous, username or certificate.",
    )
    timeout_s: float | None = Field(
        None,
        gt=0,
        description="Per-request timeout. Default 4 s; with nodes in `mode: poll`, at most"
        " half the device's poll period, so that the defaults never contradict each other.",
    )
    session_timeout_s: float = Field(
        60.0, gt=0, description="Requested session timeout; the server may revise it."
    )
    watchdog_interval_s: float = Field(
        1.0, gt=0, description="How often a silent connection is probed; bounds loss detection."
    )
    publishing_interval_ms: float = Field(
        500.0, gt=0, description="Subscription publishing interval."
    )
    reconnect_min_s: float = Field(1.0, gt=0, description="First reconnect delay after a loss.")
    reconnect_max_s: float = Field(60.0, gt=0, description="Cap of the reconnect backoff.")

    # Subscriptions are not polled: the generic "timeout shorter than the poll period" check
    # does not apply; the plugin checks it for `mode: poll` nodes (gateway/config/crosscheck.py).
    timeout_within_poll_period: ClassVar[bool] = False

    def request_timeout_s(self, polled_every_s: float | None = None) -> float:
        """`timeout_s` as written; unset, 4 s, or half the poll period when nodes are polled
        every `polled_every_s` (a Read that may outlast the period would skip polls)."""
        if self.timeout_s is not None:
            return self.timeout_s
        if polled_every_s is None:
            return DEFAULT_TIMEOUT_S
        return min(DEFAULT_TIMEOUT_S, polled_every_s / 2)

    def named_files(self) -> tuple[NamedFile, ...]:
        """Certificates, keys, the trust list and the password file, for `check-config`."""
        files = [
            NamedFile(key, name, what, folder=key == "trust_list")
            for key, name, what in (
                ("certificate", self.certificate, "application instance certificate"),
                ("private_key", self.private_key, "private key"),
                ("trust_list", self.trust_list, "trust list folder"),
            )
            if name is not None
        ]
        login = self.login
        if isinstance(login, UsernameLogin):
            files.append(NamedFile("login.password_file", login.password_file, "password file"))
        elif isinstance(login, CertificateLogin):
            files.append(NamedFile("login.certificate", login.certificate, "user certificate"))
            files.append(NamedFile("login.private_key", login.private_key, "user private key"))
        return tuple(files)

    def with_paths_resolved(self, resolve: Callable[[str], Path]) -> OpcUaConnection:
        """A copy whose file names are absolute, resolved as the device file's folder says
        (`DeviceSpec.resolve`), so the driver does not depend on the working directory."""
        update: dict[str, object] = {
            key: str(resolve(name))
            for key in ("certificate", "private_key", "trust_list")
            if (name := getattr(self, key)) is not None
        }
        login = self.login
        if isinstance(login, UsernameLogin):
            update["login"] = login.model_copy(
                update={"password_file": str(resolve(login.password_file))}
            )
        elif isinstance(login, CertificateLogin):
            update["login"] = login.model_copy(
                update={
                    "certificate": str(resolve(login.certificate)),
                    "private_key": str(resolve(login.private_key)),
                }
            )
        return self.model_copy(update=update)

    @model_validator(mode="after")
    def _security_is_consistent(self) -> OpcUaConnection:
        secured = self.security_mode is not SecurityMode.NONE
        if secured != (self.security_policy is not SecurityPolicy.NONE):
            raise ValueError(
                "security_policy and security_mode must both be None or both be set "
                f"(got policy {self.security_policy}, mode {self.security_mode})"
            )
        if secured:
            missing = [
                name
                for name in ("certificate", "private_key", "trust_list")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"security mode {self.security_mode} needs {', '.join(missing)} "
                    "(the server certificate is checked against the trust list)"
                )
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be smaller than reconnect_min_s")
        return self


class NodeMode(enum.StrEnum):
    SUBSCRIBE = "subscribe"
    POLL = "poll"


class NodeKind(enum.StrEnum):
    SCALAR = "scalar"
    WAVEFORM = "waveform"


class DeadbandType(enum.StrEnum):
    NONE = "none"
    ABSOLUTE = "absolute"
    PERCENT = "percent"  # of the node's EURange; servers without EURange refuse it


class Deadband(Strict):
    type: DeadbandType = Field(
        DeadbandType.NONE,
        strict=False,
        description="none, absolute, or percent of the node's EURange.",
    )
    value: float = Field(0.0, ge=0, description="Deadband in the node's units, or in percent.")

    @model_validator(mode="after")
    def _percent_in_range(self) -> Deadband:
        if self.type is DeadbandType.PERCENT and self.value > 100:
            raise ValueError(f"a percent deadband must be 0..100, got {self.value}")
        return self


class OpcUaNode(Strict):
    """One variable read from the server."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$", description="Tag name, unique in the device."
    )
    node_id: NodeIdText = Field(
        pattern=NODE_ID_PATTERN, description="NodeId, for example ns=2;s=Pump.Temp."
    )
    mode: NodeMode = Field(
        NodeMode.SUBSCRIBE,
        strict=False,
        description="subscribe (monitored item), or poll (Read every poll_period_s).",
    )
    sampling_interval_ms: float | None = Field(
        None, ge=0, description="Server-side sampling; default: the publishing interval."
    )
    queue_size: int = Field(1, ge=1, le=10_000, description="Server-side queue per monitored item.")
    deadband: Deadband = Field(
        Deadband(type=DeadbandType.NONE, value=0.0),
        description="Server-side data change filter of a subscribed node.",
    )
    unit: str = Field("", description="Engineering unit, for example degC or mm/s.")
    scale: float = Field(1.0, description="Engineering value = raw * scale + offset.")
    offset: float = Field(0.0, description="Added after scale.")
    kind: NodeKind = Field(
        NodeKind.SCALAR,
        strict=False,
        description="scalar, or waveform for an array node of samples.",
    )
    sample_rate: float | None = Field(None, gt=0, description="Waveform sample rate in Hz.")
    sample_rate_node: NodeIdText | None = Field(
        None, pattern=NODE_ID_PATTERN, description="Node holding the waveform sample rate in Hz."
    )

    @model_validator(mode="after")
    def _waveform_has_one_rate(self) -> OpcUaNode:
        has_rate = (self.sample_rate is not None, self.sample_rate_node is not None)
        if self.kind is NodeKind.WAVEFORM and sum(has_rate) != 1:
            raise ValueError(
                "a waveform node needs exactly one of sample_rate and sample_rate_node"
            )
        if self.kind is NodeKind.SCALAR and any(has_rate):
            raise ValueError("sample_rate and sample_rate_node apply to waveform nodes only")
        if self.kind is NodeKind.WAVEFORM and self.deadband.type is not DeadbandType.NONE:
            raise ValueError("a deadband applies to scalar nodes only")
        return self
