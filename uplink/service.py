"""The uplink: drains the outbox over MQTT and serves the central system's commands.

Delivery contract (DESIGN.md section 7):
- Items leave in outbox order, pipelined in batches, QoS 1.
- A non-ticket item (status, health, summary) is settled by the broker's PUBACK.
- A ticket item is only *marked sent* on PUBACK. It is settled when the central system
  acknowledges it by command (`cmd/ack`), because a broker can PUBACK and then lose the message.
  Until then it is resent with the same CloudEvents id every `resend_interval_s`, and at once
  after every reconnect.
- A batch without PUBACK within `ack_timeout_s` means the link is half-open: the connection is
  dropped and re-established, and everything unsettled is sent again.
- The retained `status` is `online` on every connect; the Will says `offline` if we vanish; a
  clean stop publishes `offline` itself before DISCONNECT.
- Every message is built here and passes the one egress guard (`uplink.guard`) right before it
  leaves: outbox items, the status (and Will) and command replies. A refused outbox item is
  settled as refused (it can never pass), logged and counted; nothing refused is published.
- Summaries and health enter the outbox through `enqueue_droppable`, which sheds the oldest of
  them when the outbox is over `outbox_max_messages`; ticket messages are never shed.
- The outbox signals its own commits (`Outbox.wait_for_messages`): a committed message leaves at
  once, and the outbox is looked at every `poll_interval_s` for resends that came due.

Inbound commands, hostile until validated:
- `ack` settles messages and must never wait behind a burst of other commands. A broker
  queues the messages of one session in order, so acks have a second MQTT session,
  `<client_id>-acks`, subscribed to `cmd/ack` only; the main session (`cmd/+`) drops its copy
  of an ack while the ack session is connected, and answers acks itself when the ack session
  has not connected within `ACK_SESSION_GRACE_S`.
- Each receiving task checks the envelope (`uplink.commands.parse_command`) and the sender's
  rate (`uplink.admission`), without awaiting anything; a command refused there is answered and
  acknowledged at once. The rest wait in one of two bounded lanes, each handled by its own
  task: acks, and every other verb. A full lane refuses with `busy` instead of blocking. Acks
  come first: while one waits or is handled, the main session's messages wait.
- What the command means is the handler's business (`gateway.ticketing.commands`, wired by the
  app); the uplink never names a verb but `ack`, whose lane it keeps.
- Nothing a command carries can end a task: a failure while handling it is logged once with
  its traceback and answered as a rejection. Every message, accepted or not, gets its PUBACK,
  so the broker never redelivers a poison message from the persistent session; a command is
  only not acknowledged when the gateway stops before handling it (then it comes again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from gateway.core.clock import Clock
from gateway.core.errors import GatewayError, UplinkError
from gateway.core.interfaces import (
    JSON_CONTENT_TYPE,
    Command,
    CommandHandler,
    CommandReply,
    NewMessage,
    Outbox,
)
from gateway.core.records import OutboxItem, OutboxKind
from uplink.admission import ActorRateLimiter, RateLimit
from uplink.commands import RejectedCommand, encode_reply, parse_command
from uplink.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    LEGACY_PROPERTY_NAMES,
    encode_json,
    is_cloudevent,
    rfc3339,
    user_properties,
)
from uplink.guard import EgressGuard
from uplink.messages import MESSAGE_TYPES
from uplink.mqtt import (
    InboundMessage,
    LinkSettings,
    MessageProperties,
    MqttLink,
    OutgoingMessage,
    PublishRejected,
    TlsSettings,
)
from uplink.replies import PacedReply, ReplyPacer
from uplink.topics import Topics

log = logging.getLogger(__name__)

# What may be shed when the outbox is over its size; tickets never are.
DROPPABLE_KINDS = frozenset({OutboxKind.SUMMARY, OutboxKind.HEALTH})
# The verb that settles ticket messages: part of the delivery contract, so it has its own lane.
ACK_VERB = "ack"
# Acks come in on a session of their own, `<client_id>-acks`, subscribed to `cmd/ack` only.
ACK_SESSION_SUFFIX = "-acks"
# How long the main session waits for the ack session before it answers an ack itself.
ACK_SESSION_GRACE_S = 5.0
DEFAULT_COMMAND_RATE = RateLimit(20.0, 100)
DEFAULT_ACK_RATE = RateLimit(500.0, 2000)
# At most this many waiting acks are handled together (bounds one transaction).
ACK_BATCH = 500


class UplinkConfigFields(Protocol):
    """The fields of `gateway.config.models.UplinkConfig` read here (uplink may not import
    the config package; DESIGN.md section 1)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def topic_prefix(self) -> str: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def keepalive_s(self) -> int: ...
    @property
    def resend_interval_s(self) -> float: ...
    @property
    def username(self) -> str | None: ...
    @property
    def ack_timeout_s(self) -> float: ...
    @property
    def outbox_max_messages(self) -> int: ...
    @property
    def commands_per_s(self) -> float: ...
    @property
    def command_burst(self) -> int: ...
    @property
    def acks_per_s(self) -> float: ...
    @property
    def ack_burst(self) -> int: ...


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    """What the uplink needs from `gateway.yaml`; `from_config` maps the config model."""

    host: str
    port: int
    topics: Topics
    client_id: str
    keepalive_s: int = 30
    resend_interval_s: float = 30.0
    session_expiry_s: int = 86_400
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    # How often the outbox is looked at for resends that came due (commits signal by themselves).
    poll_interval_s: float = 0.5
    batch_size: int = 100
    # No PUBACK for this long means a half-open link: drop it and reconnect.
    ack_timeout_s: float = 15.0
    stop_timeout_s: float = 5.0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = None
    # Above this many unsettled messages, summaries and health are shed oldest-first.
    outbox_max_messages: int = 10_000
    # Per actor: every command but `ack`, and `ack`, each with its own buckets.
    command_rate: RateLimit = DEFAULT_COMMAND_RATE
    ack_rate: RateLimit = DEFAULT_ACK_RATE
    # Commands waiting to be handled, per lane; a full lane answers `busy`.
    command_queue: int = 200
    ack_queue: int = 2000

    @classmethod
    def from_config(
        cls,
        config: UplinkConfigFields,
        site: str,
        gateway: str,
        *,
        password: str | None = None,
        tls: TlsSettings | None = None,
    ) -> Self:
        """`password` is the content of `password_file` and `tls` the certificate paths, both
        resolved by the caller, which knows the folder the paths are relative to."""
        return cls(
            host=config.host,
            port=config.port,
            topics=Topics(config.topic_prefix, site, gateway),
            client_id=config.client_id or f"edge-{site}-{gateway}",
            keepalive_s=config.keepalive_s,
            resend_interval_s=config.resend_interval_s,
            ack_timeout_s=config.ack_timeout_s,
            outbox_max_messages=config.outbox_max_messages,
            command_rate=RateLimit(config.commands_per_s, config.command_burst),
            ack_rate=RateLimit(config.acks_per_s, config.ack_burst),
            username=config.username,
            password=password,
            tls=tls,
        )


@dataclass(frozen=True, slots=True)
class UplinkStatistics:
    connected: bool
    connects: int
    ack_session_connected: bool
    connection_losses: int
    published: int  # outbox items the broker acknowledged (PUBACK)
    resent: int  # ticket messages sent again with the same id
    publish_failures: int  # refused by the broker or lost with the connection
    half_open_aborts: int
    acks: int  # central acks accepted
    commands: int  # well-formed commands handled
    rejected_commands: int  # malformed, unknown, rate-limited, busy or refused by the handler
    replies: int
    rate_limited: int  # commands refused because their actor exceeded its rate
    busy: int  # commands refused because their lane was full
    command_failures: int  # commands whose handling failed unexpectedly (logged, rejected)
    outbox_depth: int
    # Bytes and messages that left the site (PUBACK received), by message type; resends count.
    bytes_sent: Mapping[str, int] = field(default_factory=dict)
    messages_sent: Mapping[str, int] = field(default_factory=dict)
    # `<reason>:<type>` -> count: `outbox_full:health`, `egress_refused:ticket`, ...
    drops: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Pending:
    """A command admitted to a lane, with the MQTT message to acknowledge once handled and the
    link it came on (the reply leaves there too)."""

    link: MqttLink
    message: InboundMessage
    command: Command


class Uplink:
    def __init__(
        self,
        settings: UplinkSettings,
        outbox: Outbox,
        on_command: CommandHandler,
        clock: Clock,
        guard: EgressGuard | None = None,
        *,
        on_acks: Callable[[Sequence[Command]], Awaitable[Sequence[CommandReply]]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`on_command` decides what a well-formed command means and replies (the app wires
        the ticketing command table); `on_acks`, when given, handles the acks waiting in the
        ack lane together (one reply each, in order; their settles share a transaction);
        `monotonic` clocks the rate limits."""
        self.settings = settings
        self._topics = settings.topics
        self._outbox = outbox
        self._on_command = on_command
        self._on_acks = on_acks
        self._clock = clock
        self.guard = guard or EgressGuard(settings.topics)
        self._bytes_sent: Counter[str] = Counter()
        self._messages_sent: Counter[str] = Counter()
        self._drops: Counter[str] = Counter()
        self._monotonic = monotonic
        self._command_rate = ActorRateLimiter(settings.command_rate)
        self._ack_rate = ActorRateLimiter(settings.ack_rate)
        self._ack_lane: asyncio.Queue[_Pending] = asyncio.Queue(settings.ack_queue)
        self._command_lane: asyncio.Queue[_Pending] = asyncio.Queue(settings.command_queue)
        self._acks_idle = asyncio.Event()
        self._ack_session_missing = False
        self._acks_idle.set()
        self._link: MqttLink | None = None
        self._ack_link: MqttLink | None = None
        self._published = 0
        self._resent = 0
        self._publish_failures = 0
        self._half_open_aborts = 0
        self._acks = 0
        self._commands = 0
        self._rejected = 0
        self._replies = 0
        self._busy = 0
        self._failures = 0
        self._depth = 0
        # Replies go out a few at a time per link, so that ticket messages overtake a burst.
        self._pacers: dict[int, ReplyPacer] = {}

    # --- public ------------------------------------------------------------------------------

    async def enqueue_droppable(
        self, kind: OutboxKind, topic: str, document: Mapping[str, Any]
    ) -> bool:
        """Commit a summary or health message, then shed the oldest droppable messages while
        the outbox is over its size. False when the guard refused it (nothing committed).

        Checked before the commit as well as before the publish: a message that can never
        leave should not take outbox space from one that can.
        """
        if kind not in DROPPABLE_KINDS:
            raise ValueError(f"`{kind}` messages are not droppable; tickets go through ticketing")
        payload = encode_json(document)
        if not self.guard.admit(kind, topic, payload, publishing=False):
            self._drops[f"egress_refused:{kind.value}"] += 1
            return False
        await self._outbox.enqueue(NewMessage(uuid.uuid4().hex, topic, payload, kind))
        shed = await self._outbox.shed(self.settings.outbox_max_messages, DROPPABLE_KINDS)
        for shed_kind, count in shed.items():
            if count:
                self._drops[f"outbox_full:{shed_kind}"] += count
                log.warning(
                    "Outbox over %d messages: dropped the %d oldest `%s` message(s) "
                    "(%d dropped so far); ticket messages are kept.",
                    self.settings.outbox_max_messages,
                    count,
                    shed_kind,
                    self._drops[f"outbox_full:{shed_kind}"],
                )
        return True

    async def run_uplink(self) -> None:
        """Run until cancelled; on cancellation publish the offline status and disconnect."""
        link = MqttLink(self._link_settings())
        ack_link = MqttLink(self._ack_link_settings())
        self._link, self._ack_link = link, ack_link
        self._pacers = {}
        link.start()
        ack_link.start()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._run_publisher(link), name="uplink.publisher")
                group.create_task(self._run_inbound(link), name="uplink.inbound")
                group.create_task(self._run_inbound(ack_link), name="uplink.inbound.acks")
                group.create_task(self._run_lane(self._ack_lane), name="uplink.acks")
                group.create_task(self._run_lane(self._command_lane), name="uplink.commands")
        finally:
            await ack_link.close(grace_s=self.settings.stop_timeout_s)
            final = self._status_message("offline", "stopped")
            await link.close(
                final=final if self._admit(OutboxKind.STATUS, final) else None,
                grace_s=self.settings.stop_timeout_s,
            )

    def statistics(self) -> UplinkStatistics:
        link = self._link.statistics() if self._link is not None else None
        return UplinkStatistics(
            connected=link.connected if link else False,
            ack_session_connected=self._ack_link is not None and self._ack_link.connected,
            connects=link.connects if link else 0,
            connection_losses=link.connection_losses if link else 0,
            published=self._published,
            resent=self._resent,
            publish_failures=self._publish_failures,
            half_open_aborts=self._half_open_aborts,
            acks=self._acks,
            commands=self._commands,
            rejected_commands=self._rejected,
            replies=self._replies,
            rate_limited=self._command_rate.limited + self._ack_rate.limited,
            busy=self._busy,
            command_failures=self._failures,
            outbox_depth=self._depth,
            bytes_sent=dict(self._bytes_sent),
            messages_sent=dict(self._messages_sent),
            drops=dict(self._drops),
        )

    # --- set-up ------------------------------------------------------------------------------

    def _link_settings(self) -> LinkSettings:
        s = self.settings
        will = self._status_message("offline", "connection lost")
        return LinkSettings(
            host=s.host,
            port=s.port,
            client_id=s.client_id,
            keepalive_s=s.keepalive_s,
            session_expiry_s=s.session_expiry_s,
            reconnect_min_s=s.reconnect_min_s,
            reconnect_max_s=s.reconnect_max_s,
            username=s.username,
            password=s.password,
            tls=s.tls,
            will=will if self._admit(OutboxKind.STATUS, will) else None,
            subscriptions=(self._topics.cmd_filter,),
        )

    def _ack_link_settings(self) -> LinkSettings:
        """The session of acks alone: the broker queues messages per session in order, so acks
        on the main session would wait behind every command published before them."""
        return dataclasses.replace(
            self._link_settings(),
            client_id=self.settings.client_id + ACK_SESSION_SUFFIX,
            will=None,
            subscriptions=(self._topics.cmd(ACK_VERB),),
        )

    def _status_message(self, state: str, reason: str | None) -> OutgoingMessage:
        document: dict[str, str] = {
            "state": state,
            "site": self._topics.site,
            "gateway": self._topics.gateway,
            "client_id": self.settings.client_id,
        }
        if reason is not None:
            document["reason"] = reason
        if state == "online" or reason == "stopped":
            document["since"] = rfc3339(self._clock.now())
        # The Will is built once at start: it has no `since`, the broker sends it later.
        return OutgoingMessage(
            topic=self._topics.status,
            payload=json.dumps(document, separators=(",", ":")).encode(),
            qos=1,
            retain=True,
            properties=MessageProperties(content_type=JSON_CONTENT_TYPE, utf8_payload=True),
        )

    # --- outbox -> broker --------------------------------------------------------------------

    async def _run_publisher(self, link: MqttLink) -> None:
        while True:
            await link.wait_connected()
            generation = link.generation
            pages = _PagesInFlight()
            try:
                await self._publish_status(link)
                await self._resend_all_unsettled(link, pages)
                while link.connected and link.generation == generation:
                    if not await self._send_due(link, pages):
                        await pages.recorded()  # nothing more to send: the last page lands
                        await self._idle()
                await pages.close(None)
            except UplinkError as exc:
                # The connection went away mid-way; the items stay in the outbox. Wait for that
                # connection to be declared lost (unless a new one is already up).
                await pages.close(exc)
                log.debug("Uplink publishing paused: %s", exc)
                if link.connected and link.generation == generation:
                    await link.wait_disconnected()
            except BaseException as exc:
                await pages.close(exc)
                raise

    async def _publish_status(self, link: MqttLink) -> None:
        message = self._status_message("online", None)
        if not self._admit(OutboxKind.STATUS, message):
            return
        try:
            await self._within_ack_timeout(link, [link.send(message)], 1)
        except PublishRejected as exc:
            log.error("Status `online` on `%s` refused: %s", self._topics.status, exc)
            return
        self._count_sent(OutboxKind.STATUS, message)

    def _admit(self, kind: OutboxKind, message: OutgoingMessage) -> bool:
        if self.guard.admit(kind, message.topic, message.payload):
            return True
        self._drops[f"egress_refused:{kind.value}"] += 1
        return False

    def _count_sent(self, kind: OutboxKind, message: OutgoingMessage) -> None:
        self._bytes_sent[kind.value] += len(message.payload)
        self._messages_sent[kind.value] += 1

    async def _idle(self) -> None:
        self._depth = await self._outbox.depth()
        try:
            async with asyncio.timeout(self.settings.poll_interval_s):
                await self._outbox.wait_for_messages()
        except TimeoutError:
            pass  # the poll interval passed: look again for resends that came due

    async def _send_due(self, link: MqttLink, pages: _PagesInFlight) -> bool:
        """The next page of what is due (never sent, or its resend interval passed), leaving
        out the page still being recorded: its sends are not in state.db yet."""
        batch = self.settings.batch_size
        items = await self._outbox.due(
            self._clock.now(), self.settings.resend_interval_s, batch + len(pages.seqs)
        )
        items = [item for item in items if item.seq not in pages.seqs][:batch]
        if items:
            await self._send_page(link, items, pages)
        return bool(items)

    async def _resend_all_unsettled(self, link: MqttLink, pages: _PagesInFlight) -> None:
        """After a (re)connect, everything unsettled goes out again, sent before or not, page
        by page in outbox order (each page read after the last `seq` sent, so the pass costs
        one read per page however long the backlog)."""
        last_seq = 0
        resent_before = self._resent
        while True:
            items = await self._outbox.unsettled(self.settings.batch_size, after_seq=last_seq)
            if not items:
                break
            await self._send_page(link, items, pages)
            last_seq = items[-1].seq
        await pages.recorded()
        if self._resent > resent_before:
            log.info(
                "Resent %d unacknowledged ticket message(s) after connecting.",
                self._resent - resent_before,
            )

    async def _send_page(
        self, link: MqttLink, items: Sequence[OutboxItem], pages: _PagesInFlight
    ) -> None:
        """Publish a page, then hand its recording over once the page before is recorded:
        the next page is read and published while this one's PUBACKs are awaited and its
        sends written to state.db, so a backlog drains at the pace of the broker and the disk
        together instead of one after the other. At most two pages are in flight."""
        admitted, futures = await self._publish(link, items)
        try:
            await pages.recorded()
        except BaseException:
            _forget(futures)
            raise
        pages.start(self._record(link, admitted, futures), {item.seq for item in admitted})

    async def _within_ack_timeout(
        self,
        link: MqttLink,
        futures: Sequence[asyncio.Future[int]],
        count: int,
        *,
        collect: bool = False,
    ) -> list[int | BaseException]:
        """Wait for the PUBACKs of `futures`; past `ack_timeout_s` the link is judged half-open
        (TCP up, broker silent), aborted, and `UplinkError` raised. Every QoS 1 publish waits
        here, the `online` status included: one left waiting without a deadline would hold the
        publisher on a silent link until keepalive noticed, if ever. With `collect`, each
        failure is returned in its place instead of raised."""
        try:
            async with asyncio.timeout(self.settings.ack_timeout_s):
                return await asyncio.gather(*futures, return_exceptions=collect)
        except TimeoutError:
            self._half_open_aborts += 1
            log.warning(
                "No PUBACK from `%s:%s` within %g s for %d message(s); treating the link as "
                "half-open and reconnecting.",
                self.settings.host,
                self.settings.port,
                self.settings.ack_timeout_s,
                count,
            )
            link.abort()
            raise UplinkError("PUBACK timeout") from None

    async def _publish(
        self, link: MqttLink, items: Sequence[OutboxItem]
    ) -> tuple[list[OutboxItem], list[asyncio.Future[int]]]:
        """Hand a batch to the broker: the messages admitted and their PUBACK futures, in
        order. An expired or refused item is settled here instead."""
        futures: list[asyncio.Future[int]] = []
        admitted: list[OutboxItem] = []
        now = self._clock.now()
        for item in items:
            message = self._message_for(item, now)
            if message.properties.message_expiry_s == 0:
                # Best effort and out of date: newer ones replace it.
                await self._outbox.settle(item.seq, now)
                self._drops[f"expired:{item.kind.value}"] += 1
                continue
            if not self._admit(item.kind, message):
                # Deterministic: it would be refused on every retry. Settled as refused, so it
                # stays on record in state.db but never blocks or loops.
                await self._outbox.refuse(item.seq, self._clock.now())
                log.error(
                    "Outbox message `%s` (%s) refused by the egress guard and settled unsent.",
                    item.event_id,
                    item.kind.value,
                )
                continue
            admitted.append(item)
            try:
                futures.append(link.send(message))
            except PublishRejected as exc:
                refused: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                refused.set_exception(exc)
                futures.append(refused)
            except UplinkError:
                _forget(futures)
                raise
        return admitted, futures

    async def _record(
        self, link: MqttLink, admitted: Sequence[OutboxItem], futures: list[asyncio.Future[int]]
    ) -> None:
        """Wait for a published batch's PUBACKs and record them: sent (awaiting the central
        ack) or settled, and the counters, once state.db holds what they count."""
        results = await self._within_ack_timeout(link, futures, len(admitted), collect=True)

        now = self._clock.now()
        lost: BaseException | None = None
        # Recorded for the whole batch at once: one unit each, so one transaction.
        # The counters move once state.db holds what they count.
        sent: list[int] = []
        settled: list[int] = []
        delivered: list[OutboxItem] = []
        for item, result in zip(admitted, results, strict=True):
            if isinstance(result, PublishRejected):
                self._publish_failures += 1
                # Kept, and retried after the resend interval rather than in a hot loop.
                sent.append(item.seq)
                log.error(
                    "Message `%s` on `%s` not accepted: %s; kept in the outbox, retrying in "
                    "%.0f s.",
                    item.event_id,
                    item.topic,
                    result,
                    self.settings.resend_interval_s,
                )
            elif isinstance(result, BaseException):
                self._publish_failures += 1
                lost = result
            else:
                delivered.append(item)
                (sent if item.kind.needs_central_ack else settled).append(item.seq)
        await self._outbox.mark_sent_many(sent, now)
        await self._outbox.settle_many(settled, now)
        for item in delivered:
            self._published += 1
            self._bytes_sent[item.kind.value] += len(item.payload)
            self._messages_sent[item.kind.value] += 1
            if item.attempts > 0:
                self._resent += 1
                log.debug("Resent `%s` (attempt %d).", item.event_id, item.attempts + 1)
        if lost is not None:
            raise UplinkError(str(lost)) from lost

    def _message_for(self, item: OutboxItem, now: float) -> OutgoingMessage:
        """The MQTT message of an outbox item, with the properties of its type: content type,
        Payload Format Indicator (UTF-8 JSON), and for best-effort types the time left of
        their expiry (`uplink.messages`), counted from when the message was committed."""
        content_type, props = item.content_type, item.user_properties
        if content_type is None or LEGACY_PROPERTY_NAMES & {name for name, _ in props}:
            # Committed before state.db kept the properties (schema version 5), or with the
            # user property names used before the CloudEvents binding's: derived again.
            cloudevent = is_cloudevent(item.payload)
            content_type = content_type or (
                CLOUDEVENTS_CONTENT_TYPE if cloudevent else JSON_CONTENT_TYPE
            )
            props = tuple(user_properties(item.payload))
        return OutgoingMessage(
            topic=item.topic,
            payload=item.payload,
            qos=1,
            retain=False,  # tickets are never retained (DESIGN.md section 7)
            properties=MessageProperties(
                content_type=content_type,
                user_properties=props,
                message_expiry_s=_expiry_left(item, now),
                utf8_payload=True,
            ),
        )

    # --- broker -> commands ------------------------------------------------------------------

    async def _run_inbound(self, link: MqttLink) -> None:
        while True:
            message = await link.receive()
            # Commands queued in the session arrive right after CONNACK, before the link counts
            # as connected (on SUBACK); their replies must wait for it, or they would be lost.
            await link.wait_connected()
            if link is not self._ack_link and self._topics.verb_of(message.topic) == ACK_VERB:
                await self._wait_for_ack_session()
            if link is not self._ack_link:
                # Acks first: while one waits or is being handled, the rest waits (in the link's
                # queue, then at the broker). All of it runs on one event loop, and a burst
                # being answered would otherwise take most of its turns.
                await self._acks_idle.wait()
            try:
                self._admit_inbound(link, message)
            except Exception:
                # No message may end this task. Whatever went wrong is our bug; it is
                # logged once with its traceback, and the message is acknowledged so that the
                # broker does not deliver it again at every start.
                self._failures += 1
                self._rejected += 1
                log.exception("Inbound message on `%s` could not be admitted.", message.topic)
                link.acknowledge(message)
            # Admission never suspends, and neither does `receive` while messages are queued:
            # without this turn a burst would be admitted end to end before the lanes, the
            # publisher or the ack session got the loop once.
            await asyncio.sleep(0)

    def _admit_inbound(self, link: MqttLink, message: InboundMessage) -> None:
        """Check the envelope and the sender's rate, then queue the command in its lane.
        Never awaits: the receiver keeps up with the broker whatever the handlers do."""
        verb = self._topics.verb_of(message.topic)
        if verb == ACK_VERB and self._answered_elsewhere(link):
            link.acknowledge(message)
            return
        parsed = parse_command(
            verb,
            message.payload,
            message.properties.response_topic,
            message.properties.correlation_data,
        )
        if isinstance(parsed, RejectedCommand):
            log.warning("Rejected command on `%s`: %s.", message.topic, parsed.reason)
            self._refuse(link, message, parsed)
            return
        is_ack = parsed.verb == ACK_VERB
        limiter = self._ack_rate if is_ack else self._command_rate
        actor = parsed.body.get("actor")
        key = actor[:200] if isinstance(actor, str) else "-"
        retry_after = limiter.retry_after(key, self._monotonic())
        if retry_after is not None:
            what = "`ack` commands" if is_ack else "commands"
            reason = (
                f"rate limited: actor `{ascii(key[:60])[1:-1]}` exceeds "
                f"{limiter.limit.rate_per_s:g} {what} per second (burst {limiter.limit.burst});"
                f" retry in {retry_after:.1f} s"
            )
            self._refuse_command(link, message, parsed, reason, log_it=limiter.limited == 1)
            return
        lane = self._ack_lane if is_ack else self._command_lane
        try:
            lane.put_nowait(_Pending(link, message, parsed))
            if is_ack:
                self._acks_idle.clear()
        except asyncio.QueueFull:
            self._busy += 1
            reason = f"busy: {lane.maxsize} commands are waiting; retry shortly"
            self._refuse_command(link, message, parsed, reason, log_it=self._busy == 1)

    def _answered_elsewhere(self, link: MqttLink) -> bool:
        """Both sessions get every ack: the main session leaves its copy to the ack session
        while that one is connected. Should the ack session's copy be missing (it subscribed
        after the ack was published, at the very first start), the ticket message is resent
        and acked again."""
        ack_link = self._ack_link
        return ack_link is not None and link is not ack_link and ack_link.connected

    async def _wait_for_ack_session(self) -> None:
        """Before the main session decides about an ack: give the ack session a moment to
        connect (at a start both have the same acks queued, and one answer is enough). If it
        does not come, the main session answers acks itself until it does."""
        ack_link = self._ack_link
        if ack_link is None or ack_link.connected:
            self._ack_session_missing = False
            return
        if self._ack_session_missing:
            return
        try:
            async with asyncio.timeout(ACK_SESSION_GRACE_S):
                await ack_link.wait_connected()
        except TimeoutError:
            self._ack_session_missing = True
            log.warning(
                "The ack session `%s` is not connected; acks are answered on the main session"
                " until it is.",
                self.settings.client_id + ACK_SESSION_SUFFIX,
            )

    def _refuse(self, link: MqttLink, message: InboundMessage, parsed: RejectedCommand) -> None:
        self._rejected += 1
        reply = parsed.reply()
        self._reply(link, parsed.response_topic, parsed.correlation_data, reply, parsed.verb)
        link.acknowledge(message)

    def _refuse_command(
        self,
        link: MqttLink,
        message: InboundMessage,
        command: Command,
        reason: str,
        *,
        log_it: bool,
    ) -> None:
        """Refused before handling (rate, lane full): logged on the first such refusal and
        then counted, so a flood does not flood the journal too."""
        if log_it:
            log.warning(
                "Command `%s` (`%s`) refused: %s. Further refusals of this kind are counted "
                "in the health report.",
                command.command_id,
                command.verb,
                reason,
            )
        self._rejected += 1
        reply = CommandReply(command.command_id, False, reason)
        self._reply(link, command.response_topic, command.correlation_data, reply, command.verb)
        link.acknowledge(message)

    async def _run_lane(self, lane: asyncio.Queue[_Pending]) -> None:
        while True:
            batch = [await lane.get()]
            if lane is self._ack_lane and self._on_acks is not None:
                # Every ack waiting is handled together: their settles and ticket changes
                # share one transaction, each still gets its own reply.
                while len(batch) < ACK_BATCH and not lane.empty():
                    batch.append(lane.get_nowait())
                replies = await self._handle_acks([pending.command for pending in batch])
            else:
                replies = [await self._handle(batch[0].command)]
            for pending, reply in zip(batch, replies, strict=True):
                command, link = pending.command, pending.link
                if reply is not None:
                    try:
                        self._reply(
                            link,
                            command.response_topic,
                            command.correlation_data,
                            reply,
                            command.verb,
                        )
                    except Exception:
                        # Answering one command must not end the lane (see `_handle`).
                        self._failures += 1
                        log.exception(
                            "Command `%s` (`%s`) could not be answered.",
                            command.command_id,
                            command.verb,
                        )
                # Only once handled: a gateway stopped before this gets the command again.
                link.acknowledge(pending.message)
            if lane is self._ack_lane and lane.empty():
                self._acks_idle.set()

    async def _handle_acks(self, commands: Sequence[Command]) -> list[CommandReply | None]:
        """`_handle` for a batch of acks; a failure fails them all (none was applied)."""
        assert self._on_acks is not None
        self._commands += len(commands)
        try:
            replies: list[CommandReply | None] = list(await self._on_acks(commands))
        except GatewayError as exc:
            log.error("%d `ack` command(s) failed: %s", len(commands), exc)
            replies = [CommandReply(c.command_id, False, f"failed: {exc}") for c in commands]
        except Exception:
            # Nothing a command carries may end the uplink (see `_handle`).
            self._failures += len(commands)
            log.exception("%d `ack` command(s) failed unexpectedly; rejected.", len(commands))
            replies = [
                CommandReply(c.command_id, False, "failed: internal error") for c in commands
            ]
        if len(replies) != len(commands):
            log.error("The ack handler gave %d replies for %d acks.", len(replies), len(commands))
            replies = (replies + [None] * len(commands))[: len(commands)]
        for reply in replies:
            if reply is None or not reply.accepted:
                self._rejected += 1
            else:
                self._acks += 1
        return replies

    async def _handle(self, command: Command) -> CommandReply:
        self._commands += 1
        try:
            reply = await self._on_command(command)
        except GatewayError as exc:
            # An expected failure of ours (a store refusing a write): refuse the command, keep
            # serving.
            log.error("Command `%s` (`%s`) failed: %s", command.command_id, command.verb, exc)
            reply = CommandReply(command.command_id, False, f"failed: {exc}")
        except Exception:
            # Nothing a command carries may end the uplink (and with it the daemon,
            # in a loop when the broker redelivers the command at every start). A bug that a
            # command reaches is logged once, with its traceback, and the command refused.
            self._failures += 1
            log.exception(
                "Command `%s` (`%s`) failed unexpectedly; rejected.",
                command.command_id,
                command.verb,
            )
            reply = CommandReply(command.command_id, False, "failed: internal error")
        if not reply.accepted:
            self._rejected += 1
        elif command.verb == ACK_VERB:
            self._acks += 1
        return reply

    def _reply(
        self,
        link: MqttLink,
        response_topic: str | None,
        correlation_data: bytes | None,
        reply: CommandReply,
        verb: str | None,
    ) -> None:
        """Publish the reply without waiting for its PUBACK (a lane must not wait a round trip
        per command); the outcome is counted when it arrives."""
        if not response_topic:
            return
        message = OutgoingMessage(
            topic=response_topic,
            payload=encode_reply(reply, verb),
            qos=1,
            properties=MessageProperties(
                content_type=JSON_CONTENT_TYPE, correlation_data=correlation_data, utf8_payload=True
            ),
        )
        if not self._admit(OutboxKind.REPLY, message):
            return

        def sent() -> None:
            self._replies += 1
            self._count_sent(OutboxKind.REPLY, message)

        def lost(error: BaseException) -> None:
            self._reply_lost(reply, response_topic, error)

        self._pacer_of(link).submit(PacedReply(message, sent, lost))

    def _pacer_of(self, link: MqttLink) -> ReplyPacer:
        pacer = self._pacers.get(id(link))
        if pacer is None:
            pacer = self._pacers[id(link)] = ReplyPacer(link.send)
        return pacer

    def _reply_lost(self, reply: CommandReply, response_topic: str, error: BaseException) -> None:
        # The central system repeats a command it got no reply to; nothing to keep here but
        # the count (a flood can lose thousands: the first is logged, the rest counted).
        self._drops["not_delivered:reply"] += 1
        if self._drops["not_delivered:reply"] == 1:
            log.warning(
                "Reply to command `%s` on `%s` not delivered: %s. Further undelivered replies"
                " are counted in the health report.",
                reply.command_id,
                response_topic,
                error,
            )


class _PagesInFlight:
    """The published page whose PUBACKs are awaited and sends recorded while the publisher
    goes on (`Uplink._send_page`): one at a time, its sequence numbers kept so that the next
    read of what is due leaves them out."""

    def __init__(self) -> None:
        self._recording: asyncio.Future[None] | None = None
        self.seqs: frozenset[int] = frozenset()

    def start(self, recording: Coroutine[Any, Any, None], seqs: set[int]) -> None:
        assert self._recording is None, "the page before must be recorded first"
        self._recording, self.seqs = asyncio.ensure_future(recording), frozenset(seqs)

    async def recorded(self) -> None:
        """Wait for the page in flight, if any; its `UplinkError` is raised here."""
        recording = self._recording
        if recording is None:
            return
        try:
            await recording
        finally:
            self._recording, self.seqs = None, frozenset()

    async def close(self, exc: BaseException | None) -> None:
        """The publisher stops, on `exc` or because the connection changed. After a lost
        connection the page in flight still records what did arrive; cancelled (the uplink
        stops), it is not waited for, and its messages stay due in the outbox."""
        recording = self._recording
        if recording is None or recording.done():
            self._recording, self.seqs = None, frozenset()
            return
        if isinstance(exc, asyncio.CancelledError):
            recording.cancel()
        with contextlib.suppress(asyncio.CancelledError, UplinkError):
            await self.recorded()


def _forget(futures: Sequence[asyncio.Future[int]]) -> None:
    """PUBACK futures nobody will wait for (their batch stays in the outbox): cancelled, so
    that a late answer or a lost connection is not reported as an exception never retrieved."""
    for future in futures:
        future.cancel()


def _expiry_left(item: OutboxItem, now: float) -> int | None:
    """Seconds of the type's Message Expiry Interval still left (0: expired); None for types
    that never expire."""
    expiry = MESSAGE_TYPES[item.kind].expiry_s
    if expiry is None:
        return None
    return max(0, math.ceil(expiry - max(0.0, now - item.created_at)))
