"""An OPC UA server for one simulated machine, on loopback (asyncua server side).

The namespace `urn:edge-gateway:simulator:<machine>:points` (index 2) holds, with string NodeIds
`ns=2;s=<Machine>.<Point>`:

    Temperature          Double, degC
    Speed                Double, rpm
    RunState             Int32, 0 stopped / 1 running / 2 faulted
    Pressure             Double, bar
    Vibration            Double[4096], acceleration in g, refreshed by `refresh_waveform()`
    VibrationSampleRate  Double, Hz
    Setpoint             Double, writable (so that a write would have something to hit)
    Reset()              a method (so that a call would have something to hit)
    Bench.<i>            Double, `bench_nodes` of them, for benchmarks

Any point can be given a Bad or Uncertain status with `set_status()`. Every service request a
client session makes is counted in `requests`, so tests can prove the gateway stays read-only.
`restart()` drops every connection and session and serves again on
the same port, like a server that was power-cycled.

Security: pass `ServerSecurity` with a certificate and key to offer Sign and SignAndEncrypt
endpoints; `make_certificate()` creates self-signed application certificates for tests and the
demo.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from asyncua import Server, ua
from asyncua.crypto import cert_gen, uacrypto
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

log = logging.getLogger(__name__)

WAVEFORM_LENGTH = 4096
DEFAULT_SAMPLE_RATE_HZ = 12_800.0

# Session services that change something in the server. The gateway must never send these.
MUTATING_SERVICES = frozenset(
    {
        "write",
        "call",
        "history_update",
        "add_nodes",
        "delete_nodes",
        "add_references",
        "delete_references",
    }
)
_RECORDED_SERVICES = (
    *sorted(MUTATING_SERVICES),
    "read",
    "browse",
    "create_subscription",
    "create_monitored_items",
    "delete_subscriptions",
)

_SECURE_POLICIES = (
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
)


@dataclass(frozen=True, slots=True)
class ServerSecurity:
    """The server's application instance certificate; `allow_none` also keeps the None endpoint."""

    certificate: Path
    private_key: Path
    allow_none: bool = False


@dataclass(frozen=True, slots=True)
class CertificatePair:
    certificate: Path  # DER
    private_key: Path  # PEM
    application_uri: str


def make_certificate(
    directory: Path, name: str, application_uri: str, *, server: bool, days: int = 30
) -> CertificatePair:
    """A self-signed OPC UA application certificate (Part 6, 6.2.2) with the URI and the
    loopback names in subjectAltName, written as `<name>.der` and `<name>.key.pem`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        common_name=name,
        names={"organizationName": "edge-gateway simulator"},
        subject_alt_names=[
            x509.UniformResourceIdentifier(application_uri),
            x509.DNSName("localhost"),
            x509.DNSName(socket.gethostname()),
        ],
        extended=[usage],
        days=days,
    )
    pair = CertificatePair(
        certificate=directory / f"{name}.der",
        private_key=directory / f"{name}.key.pem",
        application_uri=application_uri,
    )
    pair.certificate.write_bytes(uacrypto.der_from_x509(cert))
    pair.private_key.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return pair


class _PasswordUsers(UserManager):
    """Username/password check for the simulator; anonymous sessions stay allowed."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None:
            return User(role=UserRole.User)
        if self._users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class OpcUaMachineServer:
    """One machine's OPC UA server. Use `run_opcua_server()` or `start()` / `stop()`."""

    def __init__(
        self,
        machine: str = "Pump",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        security: ServerSecurity | None = None,
        users: Mapping[str, str] | None = None,
        bench_nodes: int = 0,
        sample_rate_hz: float = DEFAULT_SAMPLE_RATE_HZ,
    ) -> None:
        self.machine = machine
        self.host = host
        self.port = port or _free_loopback_port(host)
        self.application_uri = f"urn:edge-gateway:simulator:{machine.lower()}"
        self.namespace_uri = f"urn:edge-gateway:simulator:{machine.lower()}:points"
        self.security = security
        self.users = dict(users) if users else None
        self.bench_nodes = bench_nodes
        self.sample_rate_hz = sample_rate_hz
        # Every service request of every client session, by service name (`read`, `write`, ...).
        self.requests: Counter[str] = Counter()
        self._server: Server | None = None
        self._sessions: list[InternalSession] = []  # client sessions, closed on stop
        self._variables: dict[str, Any] = {}  # point name -> asyncua Node
        self._rng = np.random.default_rng(7)

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/edge-gateway/{self.machine.lower()}"

    def node_id(self, point: str) -> str:
        """The string NodeId of a point, as a device file names it."""
        return f"ns=2;s={self.machine}.{point}"

    def mutating_requests(self) -> dict[str, int]:
        return {name: n for name, n in self.requests.items() if name in MUTATING_SERVICES}

    async def start(self) -> None:
        if self._server is not None:
            return
        server = Server(user_manager=_PasswordUsers(self.users) if self.users else None)
        await server.init()
        # The server clock task sleeps a whole second on stop; the simulator needs fast stops.
        server.disable_clock(True)
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"edge-gateway simulator {self.machine}")
        await server.set_application_uri(self.application_uri)
        if self.security is not None:
            await server.load_certificate(str(self.security.certificate))
            await server.load_private_key(str(self.security.private_key))
            policies = list(_SECURE_POLICIES)
            if self.security.allow_none:
                policies.insert(0, ua.SecurityPolicyType.NoSecurity)
            server.set_security_policy(policies)
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        tokens: list[type] = [ua.AnonymousIdentityToken]
        if self.users:
            tokens.append(ua.UserNameIdentityToken)
        server.set_identity_tokens(tokens)
        await self._build_namespace(server)
        self._record_client_sessions(server.iserver)
        await server.start()
        self._server = server
        log.info("OPC UA simulator `%s` listening on `%s`.", self.machine, self.endpoint)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        await server.stop()
        # asyncua leaves the sessions of cut connections (and their timers and subscriptions)
        # alive after stop; a power-cycled device forgets them.
        sessions, self._sessions = self._sessions, []
        for session in sessions:
            await session.close_session(delete_subs=True)
        self._variables.clear()
        log.info("OPC UA simulator `%s` stopped.", self.machine)

    async def restart(self) -> None:
        """Power-cycle: every session and subscription is lost, the port stays the same."""
        await self.stop()
        await self.start()

    async def set_value(
        self,
        point: str,
        value: float | int | bool | Sequence[float],
        *,
        status: str = "Good",
        source_ts: float | None = None,
    ) -> None:
        """Write a point's value from the device side, with its status and source timestamp."""
        node = self._variable(point)
        variant_type = await node.read_data_type_as_variant_type()
        stamp = (
            dt.datetime.fromtimestamp(source_ts, dt.UTC)
            if source_ts is not None
            else dt.datetime.now(dt.UTC)
        )
        data_value = ua.DataValue(
            ua.Variant(value, variant_type),
            StatusCode=ua.StatusCode(getattr(ua.StatusCodes, status)),
            # ua.DateTime is how asyncua spells datetime in its annotations.
            SourceTimestamp=cast(ua.DateTime, stamp),
            ServerTimestamp=cast(ua.DateTime, dt.datetime.now(dt.UTC)),
        )
        await self._require_server().write_attribute_value(node.nodeid, data_value)

    async def set_status(self, point: str, status: str) -> None:
        """Keep the point's value but give it another status (for example BadSensorFailure)."""
        value = await self._variable(point).read_value()
        await self.set_value(point, value, status=status)

    async def bump_bench_nodes(self, value: float) -> None:
        """Give every `Bench.<i>` point a new value at once (for benchmarks: no type lookup)."""
        server = self._require_server()
        now = cast(ua.DateTime, dt.datetime.now(dt.UTC))
        for i in range(self.bench_nodes):
            data_value = ua.DataValue(
                ua.Variant(value + i, ua.VariantType.Double),
                SourceTimestamp=now,
                ServerTimestamp=now,
            )
            await server.write_attribute_value(self._variables[f"Bench.{i}"].nodeid, data_value)

    async def refresh_waveform(self, speed_hz: float = 24.75, unbalance_g: float = 0.4) -> None:
        """A new block of synthetic vibration: 1x running speed, its harmonics and noise."""
        t = np.arange(WAVEFORM_LENGTH) / self.sample_rate_hz
        phase = self._rng.uniform(0, 2 * math.pi)
        block = (
            unbalance_g * np.sin(2 * math.pi * speed_hz * t + phase)
            + 0.1 * np.sin(2 * math.pi * 2 * speed_hz * t)
            + 0.05 * np.sin(2 * math.pi * 3 * speed_hz * t)
            + self._rng.normal(0.0, 0.02, WAVEFORM_LENGTH)
        )
        await self.set_value("Vibration", block.tolist())

    async def run_waveform_refresh(self, period_s: float, speed_hz: float = 24.75) -> None:
        """Refresh the vibration block every `period_s` until cancelled."""
        while True:
            await self.refresh_waveform(speed_hz)
            await asyncio.sleep(period_s)

    async def _build_namespace(self, server: Server) -> None:
        ns = await server.register_namespace(self.namespace_uri)
        if ns != 2:  # node_id() and the device files assume index 2
            raise RuntimeError(f"namespace `{self.namespace_uri}` got index {ns}, expected 2")
        machine = await server.nodes.objects.add_object(
            ua.NodeId.from_string(f"ns=2;s={self.machine}"), ua.QualifiedName(self.machine, ns)
        )

        async def scalar(point: str, value: Any, variant: ua.VariantType) -> None:
            node = await machine.add_variable(
                ua.NodeId.from_string(self.node_id(point)),
                ua.QualifiedName(point, ns),
                ua.Variant(value, variant),
            )
            self._variables[point] = node

        await scalar("Temperature", 41.5, ua.VariantType.Double)
        await scalar("Speed", 1485.0, ua.VariantType.Double)
        await scalar("RunState", 1, ua.VariantType.Int32)
        await scalar("Pressure", 4.2, ua.VariantType.Double)
        await scalar("VibrationSampleRate", self.sample_rate_hz, ua.VariantType.Double)
        await scalar("Vibration", [0.0] * WAVEFORM_LENGTH, ua.VariantType.Double)
        await scalar("Setpoint", 40.0, ua.VariantType.Double)
        await self._variables["Setpoint"].set_writable(True)
        for i in range(self.bench_nodes):
            await scalar(f"Bench.{i}", 0.0, ua.VariantType.Double)

        async def reset(parent: ua.NodeId) -> list[ua.Variant]:
            log.info("OPC UA simulator `%s`: Reset() called.", self.machine)
            return []

        await machine.add_method(
            ua.NodeId.from_string(self.node_id("Reset")),
            ua.QualifiedName("Reset", ns),
            reset,
            [],
            [],
        )

    def _record_client_sessions(self, iserver: InternalServer) -> None:
        """Count every service request of every client session (the server's own internal
        session, used by `set_value`, is not a client and is not counted)."""
        create_session = iserver.create_session
        requests = self.requests
        sessions = self._sessions

        def counting(service: str, method: Callable[..., Any]) -> Callable[..., Any]:
            def counted(*args: Any, **kwargs: Any) -> Any:
                requests[service] += 1
                return method(*args, **kwargs)

            return counted

        def create_recorded_session(name: str, *args: Any, **kwargs: Any) -> InternalSession:
            session = create_session(name, *args, **kwargs)
            if kwargs.get("external"):
                requests["create_session"] += 1
                sessions.append(session)
                for service in _RECORDED_SERVICES:
                    setattr(session, service, counting(service, getattr(session, service)))
            return session

        iserver.create_session = create_recorded_session  # type: ignore[method-assign]

    def _variable(self, point: str) -> Any:
        try:
            return self._variables[point]
        except KeyError:
            raise KeyError(f"no point `{point}` in simulator `{self.machine}`") from None

    def _require_server(self) -> Server:
        if self._server is None:
            raise RuntimeError(f"OPC UA simulator `{self.machine}` is not running")
        return self._server


@asynccontextmanager
async def run_opcua_server(
    machine: str = "Pump",
    *,
    port: int = 0,
    security: ServerSecurity | None = None,
    users: Mapping[str, str] | None = None,
    bench_nodes: int = 0,
    waveform_period_s: float | None = None,
) -> AsyncIterator[OpcUaMachineServer]:
    """Serve one machine until the block exits; optionally refresh the waveform periodically."""
    server = OpcUaMachineServer(
        machine, port=port, security=security, users=users, bench_nodes=bench_nodes
    )
    await server.start()
    refresher: asyncio.Task[None] | None = None
    try:
        await server.refresh_waveform()
        if waveform_period_s is not None:
            refresher = asyncio.create_task(
                server.run_waveform_refresh(waveform_period_s),
                name=f"opcua-simulator[{machine}].waveform",
            )
        yield server
    finally:
        if refresher is not None:
            refresher.cancel()
            await _wait_cancelled(refresher)
        await server.stop()


async def _wait_cancelled(task: Awaitable[None]) -> None:
    with suppress(asyncio.CancelledError):
        await task


def _free_loopback_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
