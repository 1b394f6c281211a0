"""The MQTT 5 link: the only module that imports paho-mqtt (DESIGN.md sections 1 and 7).

Why paho's own network thread (`loop_start`) rather than driving its socket from asyncio:
paho's `connect`/`reconnect` resolve the host, open TCP and (with TLS) complete the handshake
synchronously, for up to the connect timeout. On a slow plant uplink that would freeze every
polling task on the event loop. In paho's thread those calls block nobody, and paho already
implements keep-alive pings, reconnect with exponential backoff and the MQTT retransmission of
unacknowledged QoS 1 messages. The boundary is kept narrow: each paho callback converts what it
got into our own plain values and hands it to the event loop with `call_soon_threadsafe`, so all
state of this class is touched only on the loop thread. `publish` and `disconnect` may be called
from another thread by paho's design (they take paho's locks).

Delivery semantics offered upward: `publish` returns when the broker's PUBACK arrives, with its
reason code; a reason code >= 0x80 (MQTT 5: not authorised, quota exceeded, ...) raises
`UplinkError`, as does a connection lost before the PUBACK. Whether a message counts as
delivered is the caller's business (the outbox settles tickets only on the central ack).
No paho type crosses this module's boundary.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import random
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.core.errors import UplinkError
from uplink.probe import broker_answers

log = logging.getLogger(__name__)
paho_log = logging.getLogger(f"{__name__}.paho")

FAILURE_REASON = 0x80  # MQTT 5: every reason code from 0x80 up is a failure


class PublishRejected(UplinkError):
    """This message was refused, not the connection: sending it again at once will not help."""


class BrokerRefused(PublishRejected):
    """The broker answered a publish with a failure reason code (MQTT 5, >= 0x80), such as
    0x87 not authorised (an ACL denial): the message was not accepted."""

    def __init__(self, reason_code: int, reason: str) -> None:
        self.reason_code = reason_code
        self.reason = reason
        super().__init__(f"broker refused the message: {reason} (0x{reason_code:02x})")


@dataclass(frozen=True, slots=True)
class MessageProperties:
    """The MQTT 5 properties we use, as plain values."""

    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    message_expiry_s: int | None = None
    # MQTT 5 Payload Format Indicator 1: the payload is UTF-8 text (all our JSON is).
    utf8_payload: bool = False


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    properties: MessageProperties = field(default_factory=MessageProperties)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: MessageProperties = field(default_factory=MessageProperties)
    # For `MqttLink.acknowledge`: the packet id and the connection it arrived on.
    message_id: int = 0
    connection: int = 0


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Server verification against `ca_file`, always; client certificate when given.

    There is no switch to skip verification: a TLS link that does not verify is a plaintext
    link with extra steps.
    """

    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class LinkSettings:
    host: str
    port: int
    client_id: str
    keepalive_s: int = 30
    # A persistent session: the broker keeps our `cmd/+` subscription and queues commands
    # (QoS 1) while we are away, for this long.
    session_expiry_s: int = 86_400
    clean_start: bool = False
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    connect_timeout_s: float = 10.0
    # Half-open detection and quick recovery: while the link is down after
    # a failure that was not a refusal, or while a PUBACK or CONNACK is overdue by
    # `suspect_after_s`, the broker is probed (`uplink.probe`) every `probe_interval_s`; when
    # it answers, the backoff is cut short and a connection that went silent is dropped.
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 2.0
    suspect_after_s: float = 3.0
    # A connected link is suspect later: a busy broker may take a while to PUBACK.
    puback_suspect_s: float = 5.0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = None
    will: OutgoingMessage | None = None
    subscriptions: tuple[str, ...] = ()
    # Sent as MQTT 5 Receive Maximum: the broker sends at most this many unacknowledged QoS 1
    # messages, so the inbound queue stays bounded without dropping anything.
    inbound_queue_size: int = 1000

    @property
    def broker(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    connected: bool
    connects: int
    connection_losses: int
    connect_failures: int
    published: int
    publish_failures: int
    in_flight: int
    received: int
    inbound_dropped: int
    probes: int = 0  # broker probes while waiting for it
    probe_wakes: int = 0  # times a probe's answer cut a wait short or dropped a silent link


def _to_paho_properties(packet_type: int, props: MessageProperties) -> Properties | None:
    result = Properties(packet_type)
    empty = True
    if props.content_type is not None:
        result.ContentType = props.content_type
        empty = False
    if props.response_topic is not None:
        result.ResponseTopic = props.response_topic
        empty = False
    if props.correlation_data is not None:
        result.CorrelationData = props.correlation_data
        empty = False
    if props.user_properties:
        result.UserProperty = list(props.user_properties)
        empty = False
    if props.message_expiry_s is not None:
        result.MessageExpiryInterval = props.message_expiry_s
        empty = False
    if props.utf8_payload:
        result.PayloadFormatIndicator = 1
        empty = False
    return None if empty else result


class _PublishProperties(Properties):
    """The properties of one PUBLISH, encoded once by us (MQTT 5, 2.2.2 and 3.3.2.3).

    paho's `Properties` builds its name tables for every instance and packs by looking names up
    in them: per message more work than the rest of `publish`. paho only asks a PUBLISH's
    properties for `pack()` (when sending and when resending after a reconnect) and for their
    text in a debug log line. The bytes are those paho's own `pack()` gives for the same values,
    in the same order (tests/uplink/test_mqtt_properties.py holds the two together)."""

    def __init__(self, props: MessageProperties) -> None:
        # No `super().__init__()`: its tables are what this class exists to skip, and
        # `Properties.__setattr__` refuses any name but a property's.
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_values", props)
        object.__setattr__(self, "_packed", _pack_publish_properties(props))

    def pack(self) -> bytes:
        packed: bytes = object.__getattribute__(self, "_packed")
        return packed

    def __str__(self) -> str:
        return repr(object.__getattribute__(self, "_values"))


def _utf8(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError(f"a property of {len(data)} bytes exceeds MQTT's 65535")
    return len(data).to_bytes(2, "big") + data


def _variable_int(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | 0x80 if value else digit)
        if not value:
            return bytes(out)


def _pack_publish_properties(props: MessageProperties) -> bytes:
    """Property length, then each property as identifier and value, in identifier order."""
    parts: list[bytes] = []
    if props.utf8_payload:
        parts.append(b"\x01\x01")  # Payload Format Indicator: UTF-8
    if props.message_expiry_s is not None:
        parts.append(b"\x02" + struct.pack("!I", props.message_expiry_s))
    if props.content_type is not None:
        parts.append(b"\x03" + _utf8(props.content_type))
    if props.response_topic is not None:
        parts.append(b"\x08" + _utf8(props.response_topic))
    if props.correlation_data is not None:
        if len(props.correlation_data) > 0xFFFF:
            raise ValueError("correlation data exceeds MQTT's 65535 bytes")
        parts.append(b"\x09" + len(props.correlation_data).to_bytes(2, "big"))
        parts.append(props.correlation_data)
    for name, value in props.user_properties:
        parts.append(b"\x26" + _utf8(name) + _utf8(value))
    body = b"".join(parts)
    return _variable_int(len(body)) + body


def _from_paho_properties(props: Properties | MessageProperties | None) -> MessageProperties:
    if props is None:
        return MessageProperties()
    if isinstance(props, MessageProperties):
        return props  # decoded by `_Client._handle_publish` already
    correlation = getattr(props, "CorrelationData", None)
    user = getattr(props, "UserProperty", None) or []
    expiry = getattr(props, "MessageExpiryInterval", None)
    return MessageProperties(
        content_type=getattr(props, "ContentType", None),
        response_topic=getattr(props, "ResponseTopic", None),
        correlation_data=bytes(correlation) if correlation is not None else None,
        user_properties=tuple((str(k), str(v)) for k, v in user),
        message_expiry_s=int(expiry) if expiry is not None else None,
        utf8_payload=getattr(props, "PayloadFormatIndicator", 0) == 1,
    )


@dataclass(frozen=True, slots=True)
class _Publish:
    """An incoming PUBLISH's variable header and payload, as `_decode_publish` reads them."""

    topic: bytes
    mid: int
    properties: MessageProperties
    payload: bytes


def _read_utf8(data: bytes | bytearray, pos: int) -> tuple[str, int] | None:
    """An MQTT UTF-8 string at `pos` and the position after it; None for one MQTT forbids
    (1.5.4: U+0000, U+FEFF; Python's strict UTF-8 decoding refuses surrogates already)."""
    length = int.from_bytes(data[pos : pos + 2], "big")
    text = data[pos + 2 : pos + 2 + length].decode("utf-8")
    if "\x00" in text or "\ufeff" in text:
        return None
    return text, pos + 2 + length


def _decode_publish(header: int, data: bytes | bytearray) -> _Publish | None:
    """A QoS 0 or 1 MQTT 5 PUBLISH (3.3.2) straight into our values, or None for anything this
    reader leaves to paho: another QoS, a property we never use (topic alias, subscription
    identifier), one given twice, or any malformed or truncated field (paho's own decoder then
    reads the packet again and says what is wrong with it).

    paho's decoder builds a `Properties` (name tables and all) and looks every property up by
    name; for a ticket message with its eight user properties that was half the CPU of
    receiving it. What this returns equals `_from_paho_properties` of paho's decoding
    (tests/uplink/test_mqtt_properties.py holds the two together)."""
    qos = (header & 0x06) >> 1
    if qos > 1:
        return None
    try:
        topic_length = int.from_bytes(data[0:2], "big")
        pos = 2 + topic_length
        topic = bytes(data[2:pos])
        mid = 0
        if qos:
            mid = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
        length = shift = 0
        while True:  # the property length, a variable byte integer
            digit = data[pos]
            pos += 1
            length += (digit & 0x7F) << shift
            shift += 7
            if not digit & 0x80:
                break
            if shift > 21:
                return None
        end = pos + length
        seen: set[int] = set()
        content_type = response_topic = None
        correlation: bytes | None = None
        expiry: int | None = None
        utf8 = False
        user: list[tuple[str, str]] = []
        while pos < end:
            ident = data[pos]
            pos += 1
            if ident != 0x26:
                if ident in seen:
                    return None
                seen.add(ident)
            if ident == 0x01:
                utf8 = data[pos] == 1
                pos += 1
            elif ident == 0x02:
                expiry = int.from_bytes(data[pos : pos + 4], "big")
                pos += 4
            elif ident == 0x03 or ident == 0x08 or ident == 0x26:
                text = _read_utf8(data, pos)
                if text is None:
                    return None
                value, pos = text
                if ident == 0x03:
                    content_type = value
                elif ident == 0x08:
                    response_topic = value
                else:
                    pair = _read_utf8(data, pos)
                    if pair is None:
                        return None
                    user.append((value, pair[0]))
                    pos = pair[1]
            elif ident == 0x09:
                size = int.from_bytes(data[pos : pos + 2], "big")
                correlation = bytes(data[pos + 2 : pos + 2 + size])
                pos += 2 + size
            else:
                return None
        if pos != end or end > len(data) or pos > len(data):
            return None  # a field ran past the properties, or past the packet
    except (IndexError, UnicodeDecodeError):
        return None
    properties = MessageProperties(
        content_type=content_type,
        response_topic=response_topic,
        correlation_data=correlation,
        user_properties=tuple(user),
        message_expiry_s=expiry,
        utf8_payload=utf8,
    )
    return _Publish(topic, mid, properties, bytes(data[end:]))


def _decode_puback(data: bytes | bytearray) -> tuple[int, int] | None:
    """Packet id and reason code of an MQTT 5 PUBACK without properties (3.4.2: the reason
    code may be left out when it is 0, the property length when there are none); None when
    it has properties (a reason string), left to paho."""
    size = len(data)
    if size < 2 or size > 4 or (size == 4 and data[3] != 0):
        return None
    return int.from_bytes(data[0:2], "big"), data[2] if size > 2 else 0


class _PahoLogger(logging.Logger):
    """What paho logs, as a logger paho calls with its format and arguments: a line is only
    formatted when someone listens (paho's `on_log` formats every packet's line, properties
    and all, whether anyone reads it or not).

    paho reports every socket failure at ERROR and an expected "not connected" after each
    clean DISCONNECT; the state changes are logged once by us instead. Only a failing callback
    (a bug of ours) is worth an error."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if isinstance(msg, str) and msg.startswith("Caught exception"):
            paho_log.error(msg, *args)
        else:
            paho_log.debug(msg, *args)


_PAHO_LOGGER = _PahoLogger(paho_log.name)

# Handed to paho's `on_publish` with every PUBACK that has no properties; nobody changes them.
_NO_PUBACK_PROPERTIES = Properties(PacketTypes.PUBACK)
_PUBACK_REASONS: dict[int, ReasonCode] = {}


def _puback_reason(code: int) -> ReasonCode | None:
    """paho's `ReasonCode` of a PUBACK reason code, made once; None for a code MQTT 5 does
    not define for PUBACK (paho's own handling then says so)."""
    reason = _PUBACK_REASONS.get(code)
    if reason is None:
        try:
            reason = ReasonCode(PacketTypes.PUBACK, identifier=code)
        except KeyError:
            return None
        _PUBACK_REASONS[code] = reason
    return reason


class _CoalescedWakeup:
    """paho's wake-up socket as the event loop's thread sees it (`_Client._sockpairW`): a
    write asks for one wake-up at the end of the loop's turn instead of making a system call."""

    def __init__(self, client: _Client) -> None:
        self._client = client

    def send(self, data: bytes) -> int:
        self._client.wake_thread_soon()
        return len(data)

    def close(self) -> None:
        sock = self._client.wake_socket
        if sock is not None:
            sock.close()


class _Client(paho.Client):
    """paho's client with a reconnect delay that can be cut short.

    paho sleeps its exponential backoff in its own thread (`_reconnect_wait`, the same method
    in every 2.x release) and offers no way to end the sleep early. This override waits on an
    event instead, which `wake()` sets when the probe sees the broker answer again, and adds
    jitter (a site's gateways that lost the broker together do not return in lockstep).
    Overriding a private method is a deliberate trade: a test with a real broker behind a
    black-holing proxy (tests/faults/test_uplink_recovery.py) fails if paho changes it.

    The drain path overrides more of them (reading PUBLISH and PUBACK, the wake-up socket,
    packet reads), each below with why; they differ between paho 2.0, 2.1 and 2.2, so
    pyproject.toml pins the release they are tested with, and tests/uplink/test_mqtt_reading.py
    and test_mqtt_properties.py hold each to paho's own handling."""

    def __init__(self, *args: Any, min_delay_s: float, max_delay_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake = threading.Event()
        self._min_delay_s = min_delay_s
        self._max_delay_s = max_delay_s
        self._failures_in_row = 0

    # paho's thread sleeps in `select` and is woken by a byte on a socket pair whenever a
    # packet is queued: one system call, and one hand-over of the interpreter lock, per packet.
    # Queued from the event loop (a batch of publishes, its replies, acknowledgements), they
    # share one wake-up at the end of the loop's turn (`coalesce_wakeups`). Calls from any
    # other thread, paho's own included, write the byte as paho does.
    wake_socket: socket.socket | None = None
    _loop_thread: int | None = None
    _wakeup_loop: asyncio.AbstractEventLoop | None = None
    _wakeup: _CoalescedWakeup | None = None
    _wakeup_pending = False

    @property
    def _sockpairW(self) -> Any:
        sock = self.wake_socket
        on_loop = self._wakeup is not None and threading.get_ident() == self._loop_thread
        return self._wakeup if sock is not None and on_loop else sock

    @_sockpairW.setter
    def _sockpairW(self, sock: socket.socket | None) -> None:
        self.wake_socket = sock

    def coalesce_wakeups(self, loop: asyncio.AbstractEventLoop) -> None:
        """From now on, packets queued on `loop`'s thread (the caller's) wake paho's thread
        once per turn of the loop."""
        self._wakeup_loop = loop
        self._loop_thread = threading.get_ident()
        self._wakeup = _CoalescedWakeup(self)

    def wake_thread_soon(self) -> None:
        if self._wakeup_pending or self._wakeup_loop is None:
            return
        self._wakeup_pending = True
        self._wakeup_loop.call_soon(self._wake_thread)

    def _wake_thread(self) -> None:
        self._wakeup_pending = False
        sock = self.wake_socket
        if sock is None:
            return  # no connection: the next one starts with a pass over the queued packets
        try:
            sock.send(b"0")
        except BlockingIOError:
            return  # the pair is full of wake-ups paho's thread has yet to read
        except OSError as exc:  # closed by paho's thread as the connection dropped
            log.debug("MQTT wake-up socket: %s", exc)

    def wake(self) -> None:
        self._wake.set()

    def follow_receive_maximum(self, receive_maximum: int | None) -> None:
        """At CONNACK: as many QoS 1 messages in flight as the broker takes, its Receive
        Maximum (MQTT 5, 3.2.2.3.3; 65 535 when it names none). paho would keep its own fixed
        20 whatever the broker says, hold the rest back and send each from its thread as a
        PUBACK frees a place. The places are counted by paho, so a connection that starts with
        more messages in flight than its broker takes releases no more until the count falls
        below it."""
        # paho's `max_inflight_messages_set` refuses once the connection is up, which is when
        # the broker's limit is known (its CONNACK).
        self._max_inflight_messages = min(receive_maximum or 65_535, 65_535)

    # paho reads a packet in three system calls at least: its first byte, then each byte of
    # its length, then the rest. A burst of small packets (PUBACKs, acks) costs a call each
    # time, and a hand-over of the interpreter lock with it. Here one read takes what the
    # socket has (up to `_READ_SIZE`), and paho's reads are served from that; `loop_read`
    # goes on until it is used up, so nothing waits in it while paho's thread sleeps in
    # `select`.
    _READ_SIZE = 65_536
    _read_buffer = b""
    _read_pos = 0
    _read_socket: Any = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_socket is not self._sock:  # a new connection: nothing read is its own
            self._read_buffer, self._read_pos, self._read_socket = b"", 0, self._sock
        start = self._read_pos
        if start >= len(self._read_buffer):
            data = super()._sock_recv(self._READ_SIZE)
            if len(data) <= bufsize:
                return data
            self._read_buffer, start = data, 0
        end = min(start + bufsize, len(self._read_buffer))
        self._read_pos = end
        return self._read_buffer[start:end]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while (
            rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            and self._sock is not None
            and self._read_socket is self._sock
            and self._read_pos < len(self._read_buffer)
        ):
            rc = super().loop_read(max_packets)
        return rc

    def _handle_publish(self) -> MQTTErrorCode:
        """paho's handling of an incoming PUBLISH, with the packet read by `_decode_publish`:
        the message passed to `on_message` carries our `MessageProperties`. What that reader
        leaves alone goes to paho's own handling, as does everything but MQTT 5."""
        if self._protocol != MQTTProtocolVersion.MQTTv5:
            return super()._handle_publish()
        header = self._in_packet["command"]
        publish = _decode_publish(header, self._in_packet["packet"])
        if publish is None:
            return super()._handle_publish()
        message = paho.MQTTMessage(mid=publish.mid, topic=publish.topic)
        message.dup = bool(header & 0x08)
        message.qos = (header & 0x06) >> 1
        message.retain = bool(header & 0x01)
        message.properties = publish.properties  # type: ignore[assignment]
        message.payload = publish.payload
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        if message.qos == 1 and not self._manual_ack:
            return self._send_puback(message.mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        """paho's handling of a PUBACK, without the `Properties` and `ReasonCode` objects
        paho builds for every one (name tables included): a PUBACK without properties
        gets a shared empty `Properties` and a `ReasonCode` made once per code."""
        decoded = _decode_puback(self._in_packet["packet"]) if cmd == "PUBACK" else None
        reason = _puback_reason(decoded[1]) if decoded is not None else None
        if decoded is None or reason is None or self._protocol != MQTTProtocolVersion.MQTTv5:
            return super()._handle_pubackcomp(cmd)
        mid = decoded[0]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, reason, _NO_PUBACK_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def reset_backoff(self) -> None:
        self._failures_in_row = 0

    def _reconnect_wait(self) -> None:
        step = min(self._max_delay_s, self._min_delay_s * 2.0**self._failures_in_row)
        self._failures_in_row += 1
        self._wake.wait(step * random.uniform(0.8, 1.2))
        self._wake.clear()


def _reason(code: ReasonCode | int | None) -> tuple[int, str]:
    if isinstance(code, ReasonCode):
        return code.value, code.getName()
    if code is None:
        return 0, "Success"
    return int(code), paho.error_string(code)


class MqttLink:
    """One MQTT 5 client connection that keeps itself connected until `close()`.

    `async with MqttLink(settings) as link:` starts connecting in the background and returns at
    once: a broker that is down at start is a retry, not a startup failure. Incoming messages
    on `settings.subscriptions` arrive through `receive()`.
    """

    def __init__(self, settings: LinkSettings) -> None:
        self.settings = settings
        self._client = _Client(
            min_delay_s=settings.reconnect_min_s,
            max_delay_s=settings.reconnect_max_s,
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            # A QoS 1 message is acknowledged to the broker only once our consumer has handled
            # it (`acknowledge`); a crash before that means the broker delivers it again.
            manual_ack=True,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        # Calls from paho's thread waiting for the loop (`_to_loop`), and whether a run of them
        # is scheduled there.
        self._handed: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._handed_lock = threading.Lock()
        self._handed_scheduled = False
        # Touched by paho's thread only:
        self._awaited_suback: tuple[int, bool] | None = None
        self._paho_connection = 0
        self._started = False
        self._closed = False
        self._connected = False
        self._generation = 0
        self._lost = asyncio.Event()  # replaced on every connect; set when that connection ends
        self._connected_event = asyncio.Event()
        self._pending: dict[int, asyncio.Future[int]] = {}
        # Unbounded as a queue; bounded in practice by Receive Maximum (QoS 1) and by the
        # drop rule for QoS 0 in `_on_message`.
        self._inbound: asyncio.Queue[InboundMessage] = asyncio.Queue()
        # QoS 1 packet ids of the current connection in arrival order, and those handled but
        # not yet acknowledged because one before them is still being handled.
        self._order_connection = 0
        self._arrival_order: collections.deque[int] = collections.deque()
        self._handled: set[int] = set()
        self._failed_attempts = 0
        # Half-open detection: when the current connection attempt began (None: none under
        # way), the send time of each pending PUBACK, the watchdog task.
        self._attempt_started: float | None = None
        self._sent_at: dict[int, float] = {}
        self._refused_last = False
        self._watchdog: asyncio.Task[None] | None = None
        self._probe_tls: ssl.SSLContext | None = None
        self._probes = 0
        self._probe_wakes = 0
        self._refusal_reported = False
        self._last_refusal: str | None = None
        self._connects = 0
        self._losses = 0
        self._connect_failures = 0
        self._published = 0
        self._publish_failures = 0
        self._received = 0
        self._inbound_dropped = 0
        self._configure()

    # --- set-up -----------------------------------------------------------------------------

    def _configure(self) -> None:
        s = self.settings
        client = self._client
        client.enable_logger(_PAHO_LOGGER)
        # The reconnect delays (sub-second ones keep tests fast) are `_Client`'s.
        client.connect_timeout = s.connect_timeout_s
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls is not None:
            client.tls_set(
                ca_certs=s.tls.ca_file,
                certfile=s.tls.cert_file,
                keyfile=s.tls.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if s.will is not None:
            client.will_set(
                s.will.topic,
                s.will.payload,
                qos=s.will.qos,
                retain=s.will.retain,
                properties=_to_paho_properties(PacketTypes.WILLMESSAGE, s.will.properties),
            )
        client.on_connect = self._paho_on_connect
        client.on_connect_fail = self._paho_on_connect_fail
        client.on_pre_connect = self._paho_on_pre_connect
        client.on_disconnect = self._paho_on_disconnect
        client.on_publish = self._paho_on_publish
        client.on_subscribe = self._paho_on_subscribe
        client.on_message = self._paho_on_message

    def start(self) -> None:
        """Begin connecting in the background. Call from the event loop that will use the link."""
        if self._started:
            raise RuntimeError("MqttLink.start() called twice")
        self._loop = asyncio.get_running_loop()
        self._client.coalesce_wakeups(self._loop)
        self._started = True
        connect_props = Properties(PacketTypes.CONNECT)
        connect_props.SessionExpiryInterval = self.settings.session_expiry_s
        connect_props.ReceiveMaximum = max(1, min(self.settings.inbound_queue_size, 65_535))
        s = self.settings
        self._client.connect_async(
            s.host,
            s.port,
            keepalive=s.keepalive_s,
            clean_start=s.clean_start,
            properties=connect_props,
        )
        self._client.loop_start()
        if s.tls is not None:
            self._probe_tls = ssl.create_default_context(cafile=s.tls.ca_file)
            if s.tls.cert_file is not None:
                self._probe_tls.load_cert_chain(s.tls.cert_file, s.tls.key_file)
        self._watchdog = asyncio.create_task(
            self._run_watchdog(), name=f"mqtt.watchdog[{s.client_id}]"
        )
        log.info("MQTT link `%s` connecting to `%s`.", s.client_id, s.broker)

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- paho thread: convert and hand over, nothing else ----------------------------------

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """Hand a call to the event loop, in order. A burst (the PUBACKs of a batch, read in
        one go) wakes the loop once: each `call_soon_threadsafe` writes to the loop's wake-up
        socket, a system call and a hand-over of the interpreter lock per call otherwise."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # the event loop is gone (interpreter shutdown): nobody left to tell
        self._handed.append((callback, args))
        with self._handed_lock:
            if self._handed_scheduled:
                return  # the loop has yet to run the calls handed over: this one with them
            self._handed_scheduled = True
        try:
            loop.call_soon_threadsafe(self._run_handed)
        except RuntimeError:
            # The loop closed between the check and the call; same as above.
            return

    def _run_handed(self) -> None:
        """On the loop: every call handed over so far, in order. One that fails is reported
        as the loop reports a failing callback, and the rest still run."""
        with self._handed_lock:
            self._handed_scheduled = False  # from here, a call handed over schedules a new run
        handed = self._handed
        while handed:
            callback, args = handed.popleft()
            try:
                callback(*args)
            except Exception as exc:
                assert self._loop is not None
                self._loop.call_exception_handler(
                    {"message": f"MQTT link callback {callback!r} failed", "exception": exc}
                )

    def _paho_on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        code, name = _reason(rc)
        if code >= FAILURE_REASON:
            self._to_loop(self._on_refused, code, name)
            return
        self._client.reset_backoff()
        self._client.follow_receive_maximum(getattr(props, "ReceiveMaximum", None))
        self._paho_connection += 1
        # Subscribe from paho's thread, before any message can be exchanged on this connection.
        # Always, even with a session present: the broker may have lost the session.
        session_present = bool(flags.session_present)
        if not self.settings.subscriptions:
            self._to_loop(self._on_connected, session_present)
            return
        # noLocal: never receive our own messages back (the central simulator publishes
        # commands under the tree it subscribes to).
        options = SubscribeOptions(qos=1, noLocal=True)
        _, mid = client.subscribe([(topic, options) for topic in self.settings.subscriptions])
        if mid is None:  # the connection dropped already; the next connect starts over
            return
        # "Connected" is announced on the SUBACK: a caller that waits for the link may then
        # rely on receiving what is published from then on.
        self._awaited_suback = (mid, session_present)

    def _paho_on_pre_connect(self, client: paho.Client, userdata: Any) -> None:
        self._to_loop(self._on_attempt)

    def _paho_on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._to_loop(self._on_connect_failed)

    def _paho_on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        self._to_loop(self._on_disconnected, _reason(rc)[1])

    def _paho_on_publish(
        self, client: paho.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any
    ) -> None:
        code, name = _reason(rc)
        self._to_loop(self._on_puback, mid, code, name)

    def _paho_on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any
    ) -> None:
        self._to_loop(self._on_suback, [_reason(rc) for rc in rcs])
        awaited = self._awaited_suback
        if awaited is not None and awaited[0] == mid:
            self._awaited_suback = None
            self._to_loop(self._on_connected, awaited[1])

    def _paho_on_message(self, client: paho.Client, userdata: Any, message: Any) -> None:
        inbound = InboundMessage(
            topic=str(message.topic),
            payload=bytes(message.payload),
            qos=int(message.qos),
            retain=bool(message.retain),
            properties=_from_paho_properties(getattr(message, "properties", None)),
            message_id=int(message.mid),
            connection=self._paho_connection,
        )
        self._to_loop(self._on_message, inbound)

    # --- event loop thread: state changes --------------------------------------------------

    def _on_attempt(self) -> None:
        self._attempt_started = time.monotonic()

    def _on_connected(self, session_present: bool) -> None:
        if self._closed:
            return
        self._attempt_started = None
        self._refused_last = False
        self._connected = True
        self._generation += 1
        self._connects += 1
        self._lost = asyncio.Event()
        self._connected_event.set()
        broker = self.settings.broker
        if self._connects == 1 and self._failed_attempts == 0:
            log.info("MQTT broker `%s` connected (session present: %s).", broker, session_present)
        else:
            log.info(
                "MQTT broker `%s` connected again after %d failed attempt(s) "
                "(session present: %s).",
                broker,
                self._failed_attempts,
                session_present,
            )
        self._failed_attempts = 0
        self._last_refusal = None

    def _on_refused(self, code: int, name: str) -> None:
        self._attempt_started = None
        self._refused_last = True  # the broker answers and says no: backoff, no probing
        self._refusal_reported = True
        self._connect_failures += 1
        self._failed_attempts += 1
        if name != self._last_refusal:  # once per distinct refusal, not on every retry
            log.error(
                "MQTT broker `%s` refused the connection: %s (0x%02x); retrying with backoff.",
                self.settings.broker,
                name,
                code,
            )
            self._last_refusal = name

    def _on_connect_failed(self) -> None:
        self._attempt_started = None
        self._refused_last = False
        self._connect_failures += 1
        self._failed_attempts += 1
        if self._failed_attempts == 1 and not self._closed:
            log.warning(
                "MQTT broker `%s` unreachable; retrying with backoff up to %.1f s.",
                self.settings.broker,
                self.settings.reconnect_max_s,
            )

    def _on_disconnected(self, reason: str) -> None:
        if not self._connected:
            if self._refusal_reported:
                self._refusal_reported = False  # a refused CONNECT ends here too; counted
            elif not self._closed:
                # Ended before CONNACK without a refusal: with TLS 1.3 the server's verdict
                # on our certificate arrives only after the handshake.
                log.debug("MQTT connection attempt ended before CONNACK: %s", reason)
                self._on_connect_failed()
            return
        self._connected = False
        self._attempt_started = None
        self._refused_last = False
        self._connected_event.clear()
        self._losses += 1
        self._lost.set()
        self._fail_pending(f"connection to `{self.settings.broker}` lost before PUBACK")
        if self._closed:
            log.info("MQTT broker `%s` disconnected.", self.settings.broker)
        else:
            log.warning(
                "MQTT broker `%s` connection lost: %s; reconnecting with backoff.",
                self.settings.broker,
                reason,
            )

    def _on_puback(self, mid: int, code: int, name: str) -> None:
        self._sent_at.pop(mid, None)
        future = self._pending.pop(mid, None)
        if future is None or future.done():
            return  # a retransmission of a message we already gave up on, or QoS 0
        if code >= FAILURE_REASON:
            self._publish_failures += 1
            future.set_exception(BrokerRefused(code, name))
        else:
            self._published += 1
            future.set_result(code)

    def _on_suback(self, reasons: list[tuple[int, str]]) -> None:
        for topic, (code, name) in zip(self.settings.subscriptions, reasons, strict=False):
            if code >= FAILURE_REASON:
                log.error(
                    "MQTT broker `%s` refused the subscription to `%s`: %s (0x%02x).",
                    self.settings.broker,
                    topic,
                    name,
                    code,
                )

    def _on_message(self, message: InboundMessage) -> None:
        self._received += 1
        if message.qos > 0:
            if message.connection != self._order_connection:
                # A new connection: the broker resends what was not acknowledged on the old
                # one, whose packet ids are void.
                self._order_connection = message.connection
                self._arrival_order.clear()
                self._handled.clear()
            self._arrival_order.append(message.message_id)
            self._inbound.put_nowait(message)
        elif self._inbound.qsize() < self.settings.inbound_queue_size:
            self._inbound.put_nowait(message)
        else:  # QoS 0 has no flow control and no promise: shed it rather than grow
            self._inbound_dropped += 1
            if self._inbound_dropped == 1 or self._inbound_dropped % 100 == 0:
                log.warning(
                    "MQTT inbound queue full; dropped QoS 0 message on `%s` (%d dropped so far).",
                    message.topic,
                    self._inbound_dropped,
                )

    def _fail_pending(self, reason: str) -> None:
        self._sent_at.clear()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                self._publish_failures += 1
                future.set_exception(UplinkError(reason))

    # --- public, on the event loop ---------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def generation(self) -> int:
        """How many times the link has connected; changes on every reconnect."""
        return self._generation

    async def wait_connected(self) -> None:
        """Returns once connected and, when there are subscriptions, subscribed (SUBACK)."""
        await self._connected_event.wait()

    async def wait_disconnected(self) -> None:
        """Returns when the current connection ends (at once when not connected)."""
        if not self._connected:
            return
        await self._lost.wait()

    def send(self, message: OutgoingMessage) -> asyncio.Future[int]:
        """Hand a message to the broker now; the future completes with the PUBACK reason code
        (0x10 "no matching subscribers" is still a success).

        The future fails with `BrokerRefused` for a reason code >= 0x80 and with `UplinkError`
        when the connection drops first. `send` itself raises `UplinkError` when not connected
        and `PublishRejected` for an invalid message. Several sends in a row are pipelined and
        reach the broker in order. QoS 0 completes once handed to paho."""
        if self._closed or not self._connected:
            raise UplinkError(f"not connected to `{self.settings.broker}`")
        try:
            info = self._client.publish(
                message.topic,
                message.payload,
                qos=message.qos,
                retain=message.retain,
                properties=_PublishProperties(message.properties),
            )
        except (ValueError, struct.error) as exc:  # invalid topic, payload or property too large
            self._publish_failures += 1
            raise PublishRejected(f"cannot publish to `{message.topic}`: {exc}") from exc
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._publish_failures += 1
            raise UplinkError(f"cannot publish to `{message.topic}`: {paho.error_string(info.rc)}")
        assert self._loop is not None
        future: asyncio.Future[int] = self._loop.create_future()
        if message.qos == 0:
            self._published += 1
            future.set_result(0)
            return future
        mid = info.mid
        self._pending[mid] = future
        self._sent_at[mid] = time.monotonic()

        def forget(done: asyncio.Future[int]) -> None:
            if self._pending.get(mid) is done:
                del self._pending[mid]
                self._sent_at.pop(mid, None)

        future.add_done_callback(forget)
        return future

    async def publish(self, message: OutgoingMessage) -> int:
        """`send` and wait for the PUBACK."""
        return await self.send(message)

    async def receive(self) -> InboundMessage:
        """The next message; call `acknowledge` once it has been handled."""
        return await self._inbound.get()

    def acknowledge(self, message: InboundMessage) -> None:
        """Send the PUBACK for a handled QoS 1 message, in the order the messages arrived.

        A receiver must acknowledge QoS 1 messages in the order it received them (MQTT 5,
        4.6.0-2), even when a consumer finishes them out of order (the uplink handles acks in a
        lane of their own): a message handled early is held until those before it are
        handled. Skipped when the message came on an earlier connection: its packet id means
        nothing on the new one, and the broker delivers it again from the session (handlers of
        commands are idempotent, as MQTT at-least-once requires)."""
        if message.qos == 0 or self._closed:
            return
        if message.connection != self._paho_connection:
            return
        if message.connection != self._order_connection:
            return  # not one `_on_message` saw (a test double): nothing to keep in order
        self._handled.add(message.message_id)
        order = self._arrival_order
        while order and order[0] in self._handled:
            mid = order.popleft()
            self._handled.discard(mid)
            self._client.ack(mid, 1)

    # --- half-open detection --------------------------------------------------------------

    def _suspect_since(self) -> float | None:
        """Since when the link has been waiting for the broker, or None when it is not."""
        if self._closed:
            return None
        if self._connected:
            return min(self._sent_at.values(), default=None)  # the oldest pending PUBACK
        if self._refused_last:
            return None  # the broker answered with a refusal: the backoff is right
        if self._attempt_started is not None:
            return self._attempt_started  # CONNECT sent, no CONNACK yet
        if self._failed_attempts or self._losses:
            return -math.inf  # backing off after a failure that was not a refusal
        return None

    async def _run_watchdog(self) -> None:
        """Probe the broker while the link waits for it; when it answers, whatever waits
        longer than a round trip needs is stale: wake the backoff, or drop the connection
        (an attempt or a session) that stays silent while a fresh one is answered."""
        s = self.settings
        while not self._closed:
            await asyncio.sleep(s.probe_interval_s)
            since = self._suspect_since()
            patience = s.puback_suspect_s if self._connected else s.suspect_after_s
            if since is None or time.monotonic() - since < patience:
                continue
            self._probes += 1
            started = time.monotonic()
            answered = await broker_answers(
                s.host, s.port, f"{s.client_id}-probe", tls=self._probe_tls,
                timeout_s=s.probe_timeout_s,
            )  # fmt: skip
            if not answered or self._closed:
                continue
            still = self._suspect_since()
            if still is None or still > started:
                continue  # it recovered (or a new attempt began) while we probed
            self._probe_wakes += 1
            if self._connected:
                log.warning(
                    "MQTT broker `%s` answers a new connection but no PUBACK came on ours for "
                    "%.1f s: half-open; reconnecting.",
                    s.broker,
                    time.monotonic() - still,
                )
                self.abort()
            elif self._attempt_started is not None:
                log.warning(
                    "MQTT broker `%s` answers again but our connection attempt got no CONNACK "
                    "for %.1f s; starting over.",
                    s.broker,
                    time.monotonic() - still,
                )
                self.abort()
            else:
                log.info("MQTT broker `%s` answers again; reconnecting now.", s.broker)
            self._client.wake()

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a crash would: the broker publishes
        the Will and paho reconnects. Used when the link is judged half-open (no PUBACK in
        time) and by tests."""
        sock = self._client.socket()
        if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:  # already closed by the other side
                log.debug("MQTT socket shutdown: %s", exc)
            log.warning("MQTT link to `%s` aborted.", self.settings.broker)

    async def close(self, final: OutgoingMessage | None = None, grace_s: float = 5.0) -> None:
        """Publish `final` (for example the retained offline status) if connected, send
        DISCONNECT (so the broker drops the Will) and stop paho's thread. Idempotent."""
        if self._closed or not self._started:
            self._closed = True
            return
        if final is not None and self._connected:
            try:
                async with asyncio.timeout(grace_s):
                    await self.publish(final)
            except (UplinkError, TimeoutError) as exc:
                log.warning("MQTT final message on `%s` not confirmed: %s", final.topic, exc)
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        self._client.disconnect()
        self._client.wake()  # out of a reconnect delay, so that the thread ends now
        try:
            async with asyncio.timeout(grace_s):
                await asyncio.to_thread(self._client.loop_stop)
        except TimeoutError:
            log.warning("MQTT network thread did not stop within %.0f s.", grace_s)
        if self._connected:
            self._on_disconnected("closed")
        self._fail_pending(f"link to `{self.settings.broker}` closed")

    def statistics(self) -> LinkStatistics:
        return LinkStatistics(
            connected=self._connected,
            connects=self._connects,
            connection_losses=self._losses,
            connect_failures=self._connect_failures,
            published=self._published,
            publish_failures=self._publish_failures,
            in_flight=len(self._pending),
            received=self._received,
            inbound_dropped=self._inbound_dropped,
            probes=self._probes,
            probe_wakes=self._probe_wakes,
        )
