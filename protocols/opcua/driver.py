"""The OPC UA driver: the only module of `protocols` that imports asyncua (DESIGN.md section 1).

One driver talks to one server endpoint. It is both shapes of `gateway.core.interfaces`:

- a StreamingDriver: `records()` yields a record per data change of the subscribed nodes, and
  reads the `mode: poll` nodes itself at the device's poll period;
- a PollingDriver: `read()` reads every node once with one Read request.

What it promises (DESIGN.md section 9):

- Quality comes from the StatusCode: Good -> GOOD, Uncertain -> UNCERTAIN with the value, Bad ->
  a BAD sample whose reason is the status name. A value is never replaced by an error string.
- `Sample.source_ts` is the SourceTimestamp, else the ServerTimestamp when the server does not
  stamp at the source; `Sample.ts` is the gateway's clock.
- Secured endpoints (Sign, SignAndEncrypt) are used only after the server certificate is found
  in the trust list, by exact certificate or issuing CA; otherwise the connection fails closed
  with a `BadResponse` naming the certificate's subject and SHA-1 thumbprint.
- A lost session raises `DeviceUnreachable` out of `records()` / `read()`. The driver does not
  reconnect by itself (asyncua's auto-reconnect is off): the source task owns backoff, exits the
  driver and enters it again, which opens a new session and creates the subscription anew.
- Read-only: only session, Read, subscription and monitored-item services are used; never Write
  nor Call.
- Every asyncua failure becomes our `DriverError` family here; `__aexit__` is idempotent, never
  raises, and leaves no asyncua task behind.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import math
import os
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self, cast

from asyncua import Client, ua
from asyncua.common.subscription import (
    DataChangeEvent,
    OverflowPolicy,
    StatusChangeEvent,
    SubEvent,
    Subscription,
)
from asyncua.crypto import security_policies
from asyncua.crypto.truststore import TrustStore
from asyncua.ua import status_codes
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.core.clock import Clock
from gateway.core.errors import BadResponse, DeviceTimeout, DeviceUnreachable, DriverError
from gateway.core.interfaces import Record
from gateway.core.records import Quality, Sample, Tag
from protocols.opcua.browse import BrowsedVariable, BrowseResult, OfferedEndpoint
from protocols.opcua.config import (
    CertificateLogin,
    DeadbandType,
    NodeKind,
    NodeMode,
    OpcUaConnection,
    OpcUaNode,
    SecurityMode,
    SecurityPolicy,
    UsernameLogin,
)
from protocols.opcua.decode import (
    NodeReading,
    raw_text,
    sample_rate_of,
    scalar_record,
    waveform_record,
)
from protocols.opcua.quality import CODE_MASK, quality_of, status_label

log = logging.getLogger(__name__)


class _SessionLossNoise(logging.Filter):
    """When a server goes away, asyncua's publish loop logs "Publish iteration crashed" at ERROR
    with a traceback, and warns that the session cannot be closed. The driver reports the same
    loss itself (subscription status or watchdog, then one line from the source task), so these
    records are dropped; any other asyncua error still shows."""

    _DROPPED = ("Publish iteration crashed", "close_session was called but connection is closed")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._DROPPED)


# Filters do not pass down to child loggers: the session logs under its class's name.
for _name in ("asyncua.client.ua_session", "asyncua.client.ua_session.UaSession"):
    logging.getLogger(_name).addFilter(_SessionLossNoise())

# Failures asyncua lets out: transport (OSError, EOFError), protocol and status (UaError,
# which includes UaStatusCodeError and ServiceError) and a bad signature from the crypto layer.
_LIBRARY_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, ua.UaError, InvalidSignature)

_SESSION_LOST = frozenset(
    {
        ua.StatusCodes.BadCommunicationError,
        ua.StatusCodes.BadConnectionClosed,
        ua.StatusCodes.BadConnectionRejected,
        ua.StatusCodes.BadDisconnect,
        ua.StatusCodes.BadNotConnected,
        ua.StatusCodes.BadSecureChannelClosed,
        ua.StatusCodes.BadSecureChannelIdInvalid,
        ua.StatusCodes.BadServerHalted,
        ua.StatusCodes.BadServerNotConnected,
        ua.StatusCodes.BadSessionClosed,
        ua.StatusCodes.BadSessionIdInvalid,
        ua.StatusCodes.BadSessionNotActivated,
        ua.StatusCodes.BadShutdown,
        ua.StatusCodes.BadNoSubscription,
        ua.StatusCodes.BadSubscriptionIdInvalid,
    }
)
_TIMED_OUT = frozenset({ua.StatusCodes.BadTimeout, ua.StatusCodes.BadRequestTimeout})

_POLICIES: dict[SecurityPolicy, type[security_policies.SecurityPolicy]] = {
    SecurityPolicy.BASIC256SHA256: security_policies.SecurityPolicyBasic256Sha256,
    SecurityPolicy.AES128_SHA256_RSAOAEP: security_policies.SecurityPolicyAes128Sha256RsaOaep,
    SecurityPolicy.AES256_SHA256_RSAPSS: security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {
    SecurityMode.SIGN: ua.MessageSecurityMode.Sign,
    SecurityMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt,
}
_DEADBANDS = {
    DeadbandType.ABSOLUTE: ua.DeadbandType.Absolute,
    DeadbandType.PERCENT: ua.DeadbandType.Percent,
}

# Servers commonly cap the nodes per Read (OperationLimits.MaxNodesPerRead); stay well below.
_MAX_NODES_PER_READ = 500
# Iterator-mode subscription buffer. When the consumer (the source task, held back by the
# bounded pipeline queue) falls this far behind, the oldest notification is dropped: for
# process values the newest state matters most (DESIGN.md section 3: streams declare it).
_EVENT_BUFFER = 10_000


@dataclass(frozen=True, slots=True)
class OpcUaStatistics:
    connects: int
    data_changes: int
    reads: int
    bad_samples: int


@dataclass(frozen=True, slots=True)
class _Point:
    node: OpcUaNode
    tag: Tag
    node_id: ua.NodeId


class OpcUaDriver:
    """One OPC UA server. Enter connects (and subscribes), exit closes."""

    def __init__(
        self,
        device_id: str,
        connection: OpcUaConnection,
        nodes: Sequence[OpcUaNode],
        tags: Sequence[Tag],
        clock: Clock,
        *,
        poll_period_s: float = 1.0,
    ) -> None:
        if poll_period_s <= 0:
            raise ValueError(f"poll period must be positive, got {poll_period_s}")
        self._device_id = device_id
        self._conn = connection
        self._clock = clock
        self._poll_period_s = poll_period_s
        self._tags = list(tags)
        self._points = _bind_points(device_id, nodes, tags)
        self._polled = [p for p in self._points if p.node.mode is NodeMode.POLL]
        self._subscribed = [p for p in self._points if p.node.mode is NodeMode.SUBSCRIBE]
        self._timeout_s = connection.request_timeout_s(poll_period_s if self._polled else None)
        # Sample-rate nodes, shared between waveforms that name the same node.
        self._rate_node_ids = {
            p.node.sample_rate_node: ua.NodeId.from_string(p.node.sample_rate_node)
            for p in self._points
            if p.node.sample_rate_node is not None
        }
        self._rates: dict[str, float | None] = {}
        self._client: Client | None = None
        self._subscription: Subscription | None = None
        self._by_handle: dict[int, _Point | str] = {}  # client handle -> point or rate node
        self._pending: list[Record] = []  # BAD samples for nodes the server would not monitor
        self._lost: str | None = None
        self._connects = 0
        self._data_changes = 0
        self._reads = 0
        self._bad_samples = 0
        self._last_readings: dict[str, NodeReading] = {}  # tag id -> latest, for `probe`

    @property
    def endpoint(self) -> str:
        return self._conn.endpoint

    def tags(self) -> Sequence[Tag]:
        return self._tags

    def statistics(self) -> OpcUaStatistics:
        return OpcUaStatistics(
            connects=self._connects,
            data_changes=self._data_changes,
            reads=self._reads,
            bad_samples=self._bad_samples,
        )

    # --- Inspectable (edge-gateway probe) ------------------------------------------------

    def describe_plan(self) -> list[str]:
        conn = self._conn
        lines = [f"session to {conn.endpoint} (security {conn.security_mode}, "
                 f"{conn.security_policy}; timeout {self._timeout_s:g} s)"]  # fmt: skip
        if self._subscribed:
            lines.append(f"subscription, publishing every {conn.publishing_interval_ms:g} ms:")
            lines += [f"  {_node_text(p.node)}" for p in self._subscribed]
        if self._polled:
            lines.append(f"Read every {self._poll_period_s:g} s:")
            lines += [f"  {_node_text(p.node)}" for p in self._polled]
        return lines

    def raw_values(self) -> dict[str, str]:
        return {tag: raw_text(reading) for tag, reading in self._last_readings.items()}

    def state_labels(self) -> dict[str, dict[int, str]]:
        return {}  # OPC UA enumerations are not mapped to labels (yet)

    # --- browsing (edge-gateway browse) ------------------------------------------------------

    async def browse(self, start: str | None, depth: int, max_nodes: int) -> BrowseResult:
        """The variables under `start` (default: the Objects folder, without the server's own
        namespace-0 objects), `depth` levels down, at most `max_nodes` nodes visited. Uses
        only Browse and Read. Call inside `async with`."""
        client = self._require_client()
        with self._library_errors("browse"):
            return await _browse(client, start, depth, max_nodes)

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._client is not None:
            raise RuntimeError(f"OPC UA driver `{self._device_id}` is already connected")
        client = self._new_client()
        self._lost = None
        self._pending = []
        session_open = False
        try:
            with self._library_errors("connect"):
                await self._configure_security(client)
                await self._configure_login(client)
                await client.connect(auto_reconnect=False)
            session_open = True
            self._client = client
            self._connects += 1
            with self._library_errors("read the sample rates"):
                await self._refresh_rates(client)
            if self._subscribed:
                with self._library_errors("subscribe"):
                    self._subscription = await self._subscribe(client)
        except BaseException:
            self._client = None
            self._subscription = None
            await _close_quietly(client, session_open=session_open and self._lost is None)
            raise
        log.info(
            "OPC UA session to `%s` for `%s` open: %d subscribed and %d polled nodes.",
            self._conn.endpoint,
            self._device_id,
            len(self._subscribed),
            len(self._polled),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        self._subscription = None
        self._by_handle = {}
        if client is None:
            return
        await _close_quietly(client, session_open=self._lost is None)
        log.info("OPC UA session to `%s` for `%s` closed.", self._conn.endpoint, self._device_id)

    # --- PollingDriver ----------------------------------------------------------------------

    async def read(self) -> Sequence[Record]:
        """One Read of every node (subscribed ones too) and of the sample-rate nodes."""
        client = self._require_client()
        return await self._read_points(client, self._points)

    # --- StreamingDriver --------------------------------------------------------------------

    def records(self) -> AsyncGenerator[Record, None]:
        """Records as data changes arrive; close it (`aclose`) before leaving the driver."""
        return self._stream()

    async def _stream(self) -> AsyncGenerator[Record, None]:
        client = self._require_client()
        pending, self._pending = self._pending, []
        for record in pending:
            yield record
        loop = asyncio.get_running_loop()
        next_poll = loop.time() if self._polled else math.inf
        while True:
            self._raise_if_lost()
            now = loop.time()
            if now >= next_poll:
                for record in await self._read_points(client, self._polled):
                    yield record
                # Fixed rate; an overrun skips ticks instead of bunching them (DESIGN.md 3).
                next_poll += self._poll_period_s
                if next_poll <= loop.time():
                    behind = loop.time() - next_poll
                    next_poll += (behind // self._poll_period_s + 1) * self._poll_period_s
                continue
            # Wake at the next poll, and at least every watchdog interval to notice a loss.
            wake_at = min(next_poll, now + self._conn.watchdog_interval_s)
            event = await self._next_event(wake_at)
            if event is not None:
                changed = self._record_from_event(event)
                if changed is not None:
                    yield changed

    async def _next_event(self, wake_at: float) -> SubEvent | None:
        subscription = self._subscription
        if subscription is None:
            await asyncio.sleep(max(0.0, wake_at - asyncio.get_running_loop().time()))
            return None
        try:
            async with asyncio.timeout_at(wake_at):
                return await anext(subscription)
        except TimeoutError:
            return None
        except StopAsyncIteration:
            raise DeviceUnreachable(
                f"OPC UA subscription of `{self._device_id}` at `{self._conn.endpoint}` closed."
            ) from None

    def _record_from_event(self, event: SubEvent) -> Record | None:
        if isinstance(event, StatusChangeEvent):
            status = event.notification.Status
            code = status.value if status is not None else 0
            if quality_of(code) is Quality.BAD:
                self._lost = f"subscription status {_status_name(code)}"
                self._raise_if_lost()
            return None
        if not isinstance(event, DataChangeEvent):
            return None
        item = event.data.monitored_item
        target = self._by_handle.get(item.ClientHandle)
        if target is None:
            return None
        reading = _reading(item.Value)
        if isinstance(target, str):  # a sample-rate node
            self._rates[target] = sample_rate_of(reading)
            return None
        self._data_changes += 1
        return self._record(target, reading, self._clock.now())

    # --- connection -------------------------------------------------------------------------

    def _new_client(self) -> Client:
        conn = self._conn
        client = Client(
            conn.endpoint, timeout=self._timeout_s, watchdog_intervall=conn.watchdog_interval_s
        )
        client.name = f"edge-gateway {self._device_id}"
        client.description = client.name
        client.session_timeout = round(conn.session_timeout_s * 1000)
        if conn.application_uri is not None:
            client.application_uri = conn.application_uri
        client.connection_lost_callback = self._on_connection_lost
        return client

    async def _on_connection_lost(self, exc: Exception) -> None:
        """Called by asyncua's connection supervisor; `records()` and `read()` raise next."""
        if self._lost is None:
            self._lost = str(exc) or type(exc).__name__
            # Info only: the source task logs the state change for operators (STYLE.md).
            log.info(
                "OPC UA session to `%s` for `%s` lost: %s.",
                self._conn.endpoint,
                self._device_id,
                self._lost,
            )

    def _raise_if_lost(self) -> None:
        if self._lost is not None:
            raise DeviceUnreachable(
                f"OPC UA session of `{self._device_id}` to `{self._conn.endpoint}` lost: "
                f"{self._lost}"
            )

    def _require_client(self) -> Client:
        if self._client is None:
            raise RuntimeError(f"OPC UA driver `{self._device_id}` is not connected")
        self._raise_if_lost()
        return self._client

    async def _configure_security(self, client: Client) -> None:
        conn = self._conn
        if conn.security_mode is SecurityMode.NONE:
            return
        # The config model guarantees these for a secured mode.
        assert conn.certificate and conn.private_key and conn.trust_list
        policy = _POLICIES[conn.security_policy]
        mode = _MODES[conn.security_mode]
        own_certificate = _load_certificate(Path(conn.certificate), "client certificate")
        if conn.application_uri is None:
            uri = _application_uri(own_certificate)
            if uri is not None:
                client.application_uri = uri
        # GetEndpoints runs over an unsecured channel (Part 4, 5.4.4); nothing is trusted yet.
        endpoints = await client.connect_and_get_server_endpoints()
        endpoint = _matching_endpoint(endpoints, mode, policy.URI)
        if endpoint is None:
            offered = sorted(
                {
                    f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}"
                    for e in endpoints
                }
            )
            raise BadResponse(
                f"OPC UA server `{conn.endpoint}` offers no {conn.security_policy} "
                f"{conn.security_mode} endpoint; it offers {', '.join(offered) or 'nothing'}."
            )
        server_der = _first_certificate(endpoint.ServerCertificate)
        await self._check_trusted(server_der)
        # Pinning the checked certificate: asyncua refuses a different one in CreateSession.
        await client.set_security(
            policy,
            certificate=conn.certificate,
            private_key=conn.private_key,
            server_certificate=server_der,
            mode=mode,
        )

    async def _check_trusted(self, der: bytes) -> None:
        """Trusted when the exact certificate, or (for a CA-issued one) its issuer, is in the
        trust list, and it is within its validity period. Fails closed otherwise."""
        assert self._conn.trust_list is not None
        folder = Path(self._conn.trust_list)
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise BadResponse(
                f"OPC UA server `{self._conn.endpoint}` sent a certificate that does not parse: "
                f"{exc}; connection refused."
            ) from None
        named = (
            f"Server certificate `{certificate.subject.rfc4514_string()}` "
            f"(SHA-1 thumbprint {hashlib.sha1(der).hexdigest().upper()}) "
            f"of `{self._conn.endpoint}`"
        )
        now = dt.datetime.now(dt.UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise BadResponse(
                f"{named} is not valid now (valid {certificate.not_valid_before_utc:%Y-%m-%d} to "
                f"{certificate.not_valid_after_utc:%Y-%m-%d}); connection refused."
            )
        if der in self._trusted_certificates(folder):
            return
        if certificate.issuer != certificate.subject:
            store = TrustStore([folder], [])
            await store.load_trust()
            if store.is_trusted(certificate):
                return
        raise BadResponse(
            f"{named} is not trusted: neither it nor its issuer is in the trust list `{folder}`; "
            "connection refused. Check the thumbprint with the server's administrator, then "
            "copy the certificate into the trust list."
        )

    def _trusted_certificates(self, folder: Path) -> set[bytes]:
        """DER of every certificate in the trust list, read again on every connect so that a
        newly trusted server is accepted on the next retry."""
        trusted: set[bytes] = set()
        try:
            files = sorted(p for p in folder.iterdir() if p.is_file())
        except OSError as exc:
            raise DriverError(
                f"Trust list `{folder}` of `{self._device_id}` cannot be read: {exc.strerror}."
            ) from None
        for path in files:
            try:
                content = path.read_bytes()
                cert = (
                    x509.load_pem_x509_certificate(content)
                    if content.lstrip().startswith(b"-----BEGIN")
                    else x509.load_der_x509_certificate(content)
                )
            except (OSError, ValueError):
                log.warning("Trust list file `%s` is not a certificate; ignored.", path)
                continue
            trusted.add(cert.public_bytes(Encoding.DER))
        return trusted

    async def _configure_login(self, client: Client) -> None:
        login = self._conn.login
        if isinstance(login, UsernameLogin):
            client.set_user(login.username)
            client.set_password(_read_secret(Path(login.password_file), self._device_id))
        elif isinstance(login, CertificateLogin):
            try:
                await client.load_client_certificate(login.certificate)
                await client.load_private_key(Path(login.private_key))
            except (OSError, ValueError) as exc:
                raise DriverError(
                    f"User certificate or key of `{self._device_id}` cannot be loaded: {exc}."
                ) from None

    # --- reading ----------------------------------------------------------------------------

    async def _subscribe(self, client: Client) -> Subscription:
        subscription = await client.create_subscription(
            self._conn.publishing_interval_ms,
            handler=None,
            queue_maxsize=_EVENT_BUFFER,
            overflow=OverflowPolicy.DROP_OLDEST,
        )
        requests: list[ua.MonitoredItemCreateRequest] = []
        targets: list[_Point | str] = []
        for point in self._subscribed:
            requests.append(_monitor_request(len(requests) + 1, point.node_id, point.node))
            targets.append(point)
        # Keep waveform sample rates current while subscribed to the waveforms.
        for name in _rate_nodes(self._subscribed):
            requests.append(_monitor_request(len(requests) + 1, self._rate_node_ids[name], None))
            targets.append(name)
        results = await subscription.create_monitored_items(requests)
        now = self._clock.now()
        self._by_handle = {}
        for handle, (target, result) in enumerate(zip(targets, results, strict=True), start=1):
            if not isinstance(result, ua.StatusCode):
                self._by_handle[handle] = target
                continue
            reason = f"not monitored: {_status_name(result.value)}"
            if isinstance(target, str):
                log.warning("Sample-rate node `%s` of `%s` %s.", target, self._device_id, reason)
                continue
            log.warning("Node `%s` of `%s` %s.", target.node.node_id, self._device_id, reason)
            self._pending.append(Sample.bad(target.tag.id, now, reason))
            self._bad_samples += 1
        return subscription

    async def _refresh_rates(self, client: Client) -> None:
        if not self._rate_node_ids:
            return
        names = sorted(self._rate_node_ids)
        values = await self._read_values(client, [self._rate_node_ids[n] for n in names])
        for name, value in zip(names, values, strict=True):
            self._rates[name] = sample_rate_of(_reading(value))

    async def _read_points(self, client: Client, points: Sequence[_Point]) -> list[Record]:
        if not points:
            return []
        rate_names = _rate_nodes(points)
        node_ids = [p.node_id for p in points] + [self._rate_node_ids[n] for n in rate_names]
        with self._library_errors("read"):
            values = await self._read_values(client, node_ids)
        self._raise_if_lost()
        self._reads += 1
        for name, value in zip(rate_names, values[len(points) :], strict=True):
            self._rates[name] = sample_rate_of(_reading(value))
        now = self._clock.now()
        return [self._record(p, _reading(v), now) for p, v in zip(points, values, strict=False)]

    async def _read_values(
        self, client: Client, node_ids: Sequence[ua.NodeId]
    ) -> list[ua.DataValue]:
        values: list[ua.DataValue] = []
        for start in range(0, len(node_ids), _MAX_NODES_PER_READ):
            params = ua.ReadParameters()
            params.MaxAge = 0
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            params.NodesToRead = [
                ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value)
                for node_id in node_ids[start : start + _MAX_NODES_PER_READ]
            ]
            chunk = await client.uaclient.read(params)
            if len(chunk) != len(params.NodesToRead):
                raise BadResponse(
                    f"OPC UA server `{self._conn.endpoint}` answered {len(chunk)} values for "
                    f"{len(params.NodesToRead)} nodes read."
                )
            values.extend(chunk)
        return values

    def _record(self, point: _Point, reading: NodeReading, now: float) -> Record:
        self._last_readings[point.tag.id] = reading
        if point.node.kind is NodeKind.WAVEFORM:
            rate = point.node.sample_rate
            if point.node.sample_rate_node is not None:
                rate = self._rates.get(point.node.sample_rate_node)
            record = waveform_record(
                point.tag, reading, rate, now, point.node.scale, point.node.offset
            )
        else:
            record = scalar_record(point.tag, reading, now, point.node.scale, point.node.offset)
        if isinstance(record, Sample) and record.quality is Quality.BAD:
            self._bad_samples += 1
        return record

    # --- errors -----------------------------------------------------------------------------

    @contextmanager
    def _library_errors(self, action: str) -> Iterator[None]:
        """Turn asyncua's failures into our DriverError family (STYLE.md: at the boundary)."""
        try:
            yield
        except DriverError:
            raise
        except _LIBRARY_ERRORS as exc:
            raise self._translate(exc, action) from exc

    def _translate(self, exc: BaseException, action: str) -> DriverError:
        where = f"OPC UA server `{self._conn.endpoint}` of `{self._device_id}`"
        code = getattr(exc, "code", None)
        if isinstance(exc, ua.UaError) and isinstance(code, int):
            name = _status_name(code)
            if code & CODE_MASK in _SESSION_LOST:
                return DeviceUnreachable(f"{where} dropped the session during {action}: {name}.")
            if code & CODE_MASK in _TIMED_OUT:
                return DeviceTimeout(f"{where} timed out during {action}: {name}.")
            return BadResponse(f"{where} refused {action}: {name}.")
        if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is an OSError
            return DeviceTimeout(
                f"{where} did not answer {action} within {self._timeout_s:g} s."
            )
        if isinstance(exc, OSError | EOFError):
            # asyncio words a refusal "Connect call failed"; the errno says what happened.
            errno = getattr(exc, "errno", None)
            reason = os.strerror(errno).lower() if errno else str(exc) or type(exc).__name__
            return DeviceUnreachable(f"{where} unreachable during {action}: {reason}.")
        if isinstance(exc, InvalidSignature):
            return BadResponse(f"{where} failed the signature check during {action}.")
        return BadResponse(f"{where} failed {action}: {exc}.")


def _bind_points(device_id: str, nodes: Sequence[OpcUaNode], tags: Sequence[Tag]) -> list[_Point]:
    """Pair each node with its tag `<device>.<node name>`; a missing tag is a wiring bug."""
    by_id = {tag.id: tag for tag in tags}
    points = []
    for node in nodes:
        tag = by_id.get(f"{device_id}.{node.name}")
        if tag is None:
            raise ValueError(f"no tag `{device_id}.{node.name}` for OPC UA node `{node.node_id}`")
        points.append(_Point(node=node, tag=tag, node_id=ua.NodeId.from_string(node.node_id)))
    return points


def _node_text(node: OpcUaNode) -> str:
    text = f"{node.name} ({node.node_id}"
    if node.kind is NodeKind.WAVEFORM:
        rate = node.sample_rate_node or f"{node.sample_rate:g} Hz"
        text += f", waveform at {rate}"
    if node.sampling_interval_ms is not None:
        text += f", sampled every {node.sampling_interval_ms:g} ms"
    if node.deadband.type is not DeadbandType.NONE:
        text += f", deadband {node.deadband.type} {node.deadband.value:g}"
    return text + ")"


def _rate_nodes(points: Sequence[_Point]) -> list[str]:
    return sorted({p.node.sample_rate_node for p in points if p.node.sample_rate_node is not None})


def _monitor_request(
    handle: int, node_id: ua.NodeId, node: OpcUaNode | None
) -> ua.MonitoredItemCreateRequest:
    parameters = ua.MonitoringParameters()
    parameters.ClientHandle = handle
    # -1: sample at the publishing interval (Part 4, 5.12.1.2).
    sampling = node.sampling_interval_ms if node is not None else None
    parameters.SamplingInterval = -1.0 if sampling is None else sampling
    parameters.QueueSize = node.queue_size if node is not None else 1
    parameters.DiscardOldest = True
    if node is not None and node.deadband.type is not DeadbandType.NONE:
        data_filter = ua.DataChangeFilter()
        data_filter.Trigger = ua.DataChangeTrigger.StatusValue
        data_filter.DeadbandType = _DEADBANDS[node.deadband.type]
        data_filter.DeadbandValue = node.deadband.value
        parameters.Filter = data_filter
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value)
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = parameters
    return request


def _reading(value: ua.DataValue | None) -> NodeReading:
    if value is None:
        return NodeReading(None, ua.StatusCodes.BadNoData, "BadNoData", None, None)
    code = value.StatusCode.value if value.StatusCode is not None else ua.StatusCodes.Good
    return NodeReading(
        value=value.Value.Value if value.Value is not None else None,
        status_code=code,
        status_name=_status_name(code),
        source_ts=_epoch(value.SourceTimestamp),
        server_ts=_epoch(value.ServerTimestamp),
        data_type=value.Value.VariantType.name if value.Value is not None else None,
    )


def _status_name(code: int) -> str:
    masked = code & CODE_MASK
    if masked in status_codes.code_to_name_doc:
        return status_codes.get_name_and_doc(masked)[0]
    return status_label(code, None)


def _epoch(stamp: dt.datetime | None) -> float | None:
    if stamp is None:
        return None
    if stamp.tzinfo is None:  # OPC UA DateTime is UTC (Part 6, 5.2.2.5)
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def _matching_endpoint(
    endpoints: Sequence[ua.EndpointDescription], mode: ua.MessageSecurityMode, policy_uri: str
) -> ua.EndpointDescription | None:
    for endpoint in endpoints:
        if endpoint.SecurityMode == mode and endpoint.SecurityPolicyUri == policy_uri:
            return endpoint
    return None


def _first_certificate(der: bytes | None) -> bytes:
    """The server may send its certificate followed by its chain (Part 6, 6.2.3): keep the
    first DER SEQUENCE, whose length is in the two bytes after the 0x30 0x82 header."""
    if not der or len(der) < 4 or der[0] != 0x30 or der[1] != 0x82:
        raise BadResponse("OPC UA server sent no usable certificate with its endpoint.")
    return der[: int.from_bytes(der[2:4], "big") + 4]


def _load_certificate(path: Path, what: str) -> x509.Certificate:
    try:
        content = path.read_bytes()
        if content.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(content)
        return x509.load_der_x509_certificate(content)
    except (OSError, ValueError) as exc:
        raise DriverError(f"The {what} `{path}` cannot be loaded: {exc}.") from None


def _application_uri(certificate: x509.Certificate) -> str | None:
    """The OPC UA application URI lives in the certificate's subjectAltName (Part 6, 6.2.2)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _read_secret(path: Path, device_id: str) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise DriverError(
            f"Password file `{path}` of `{device_id}` cannot be read: {exc.strerror}."
        ) from None


async def _close_quietly(client: Client, *, session_open: bool) -> None:
    """Close the session if it may still be open, then the socket. Never raises: a failing
    close only means the server already forgot us."""
    try:
        if session_open:
            await client.disconnect()
        else:
            # The session is gone: stop asyncua's tasks without asking a dead server.
            try:
                await client.close_session()
            except _LIBRARY_ERRORS as exc:
                log.debug("Closing a lost OPC UA session raised %r; ignored.", exc)
            client.disconnect_socket()
    except _LIBRARY_ERRORS as exc:
        log.debug("Closing OPC UA client raised %r; ignored.", exc)


# --- browsing (edge-gateway browse) ----------------------------------------------------------

_OBJECTS_FOLDER = ua.NodeId(ua.Int32(ua.ObjectIds.ObjectsFolder))
_HAS_PROPERTY = ua.NodeId(ua.Int32(ua.ObjectIds.HasProperty))
_CURRENT_WRITE = ua.AccessLevel.CurrentWrite.mask
# A mask of node classes; asyncua types the parameter as one NodeClass.
_OBJECTS_AND_VARIABLES = cast(ua.NodeClass, ua.NodeClass.Object | ua.NodeClass.Variable)
_ATTRIBUTES = (
    ua.AttributeIds.DataType,
    ua.AttributeIds.ValueRank,
    ua.AttributeIds.ArrayDimensions,
    ua.AttributeIds.AccessLevel,
    ua.AttributeIds.Value,
)
_POLICY_NAMES = {
    "http://opcfoundation.org/UA/SecurityPolicy#None": "None",
    "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256": "Basic256Sha256",
    "http://opcfoundation.org/UA/SecurityPolicy#Aes128_Sha256_RsaOaep": "Aes128_Sha256_RsaOaep",
    "http://opcfoundation.org/UA/SecurityPolicy#Aes256_Sha256_RsaPss": "Aes256_Sha256_RsaPss",
    "http://opcfoundation.org/UA/SecurityPolicy#Basic128Rsa15": "Basic128Rsa15",
    "http://opcfoundation.org/UA/SecurityPolicy#Basic256": "Basic256",
}
_MODE_NAMES = {
    ua.MessageSecurityMode.None_: "None",
    ua.MessageSecurityMode.Sign: "Sign",
    ua.MessageSecurityMode.SignAndEncrypt: "SignAndEncrypt",
}


async def offered_endpoints(url: str, timeout_s: float) -> list[OfferedEndpoint]:
    """GetEndpoints on an unsecured channel (always allowed, Part 4, 5.4.4): what security
    modes and logins the server offers. Raises our DriverError family."""
    client = Client(url, timeout=timeout_s)
    try:
        descriptions = await client.connect_and_get_server_endpoints()
    except TimeoutError:
        raise DeviceTimeout(
            f"OPC UA server `{url}` did not answer within {timeout_s:g} s."
        ) from None
    except _LIBRARY_ERRORS as exc:
        errno = getattr(exc, "errno", None)
        reason = os.strerror(errno).lower() if errno else str(exc) or type(exc).__name__
        raise DeviceUnreachable(f"OPC UA server `{url}` unreachable: {reason}.") from exc
    offered = []
    for description in descriptions:
        policy_uri = description.SecurityPolicyUri or ""
        offered.append(
            OfferedEndpoint(
                url=description.EndpointUrl or url,
                policy=_POLICY_NAMES.get(policy_uri, policy_uri.rsplit("#", 1)[-1]),
                mode=_MODE_NAMES.get(description.SecurityMode, str(description.SecurityMode)),
                logins=tuple(
                    dict.fromkeys(t.TokenType.name for t in description.UserIdentityTokens or [])
                ),
            )
        )
    return offered


async def _browse(client: Client, start: str | None, depth: int, max_nodes: int) -> BrowseResult:
    root = ua.NodeId.from_string(start) if start else _OBJECTS_FOLDER
    skip_server_objects = start is None
    variables: list[tuple[ua.ReferenceDescription, tuple[str, ...], ua.NodeId]] = []
    objects = 0
    visited = 0
    truncated = False
    frontier: list[tuple[ua.NodeId, tuple[str, ...], int]] = [(root, (), 0)]
    while frontier:
        node_id, path, level = frontier.pop(0)
        if level >= depth:
            continue
        references = await client.get_node(node_id).get_references(
            refs=ua.ObjectIds.HierarchicalReferences,
            direction=ua.BrowseDirection.Forward,
            nodeclassmask=_OBJECTS_AND_VARIABLES,
        )
        for reference in references:
            child = reference.NodeId
            if reference.ReferenceTypeId == _HAS_PROPERTY:
                continue  # properties describe a node (units, ranges); they are not values
            if skip_server_objects and level == 0 and child.NamespaceIndex == 0:
                continue  # the server's own objects and diagnostics
            visited += 1
            if visited > max_nodes:
                truncated = True
                frontier.clear()
                break
            name = reference.BrowseName.Name or child.to_string()
            if reference.NodeClass == ua.NodeClass.Variable:
                variables.append((reference, path, node_id))
            else:
                objects += 1
            frontier.append((child, (*path, name), level + 1))
    described = await _describe(client, variables)
    return BrowseResult(endpoints=(), variables=tuple(described), objects=objects,
                        truncated=truncated)  # fmt: skip


async def _describe(
    client: Client, found: Sequence[tuple[ua.ReferenceDescription, tuple[str, ...], ua.NodeId]]
) -> list[BrowsedVariable]:
    """Data type, shape, access and value of each variable, in batched Reads."""
    described: list[BrowsedVariable] = []
    batch = max(1, _MAX_NODES_PER_READ // len(_ATTRIBUTES))
    for first in range(0, len(found), batch):
        chunk = found[first : first + batch]
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Neither
        params.NodesToRead = [
            ua.ReadValueId(NodeId=reference.NodeId, AttributeId=attribute)
            for reference, _, _ in chunk
            for attribute in _ATTRIBUTES
        ]
        values = await client.uaclient.read(params)
        for index, (reference, path, parent) in enumerate(chunk):
            data_type, rank, dimensions, access, value = (
                _plain(v) for v in values[index * len(_ATTRIBUTES) : (index + 1) * len(_ATTRIBUTES)]
            )
            described.append(
                BrowsedVariable(
                    node_id=reference.NodeId.to_string(),
                    name=reference.BrowseName.Name or reference.NodeId.to_string(),
                    path=path,
                    parent=parent.to_string(),
                    data_type=_type_name(data_type),
                    array_length=_array_length(rank, dimensions, value),
                    writable=isinstance(access, int) and bool(access & _CURRENT_WRITE),
                    value=_value_text(value),
                    unit=await _engineering_unit(client, reference.NodeId),
                )
            )
    return described


def _plain(value: ua.DataValue) -> object:
    if value.StatusCode is not None and not value.StatusCode.is_good():
        return None
    return value.Value.Value if value.Value is not None else None


def _type_name(data_type: object) -> str:
    if isinstance(data_type, ua.NodeId):
        if data_type.NamespaceIndex == 0 and isinstance(data_type.Identifier, int):
            return str(ua.ObjectIdNames.get(data_type.Identifier, data_type.to_string()))
        return data_type.to_string()
    return "unknown"


def _array_length(rank: object, dimensions: object, value: object) -> int | None:
    if isinstance(value, list | tuple):
        return len(value)
    if isinstance(rank, int) and rank >= 1:
        if isinstance(dimensions, list) and dimensions and isinstance(dimensions[0], int):
            return dimensions[0] or None
        return 0
    return None


def _value_text(value: object) -> str:
    if isinstance(value, list | tuple):
        return f"[{len(value)} values]"
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


async def _engineering_unit(client: Client, node_id: ua.NodeId) -> str:
    """The EngineeringUnits property's display name (Part 8, 5.6.3), or ""."""
    properties = await client.get_node(node_id).get_references(
        refs=ua.ObjectIds.HasProperty,
        direction=ua.BrowseDirection.Forward,
        nodeclassmask=ua.NodeClass.Variable,
    )
    for reference in properties:
        if reference.BrowseName.Name == "EngineeringUnits":
            units = await client.get_node(reference.NodeId).read_value()
            text = getattr(getattr(units, "DisplayName", None), "Text", None)
            return str(text) if text else ""
    return ""
