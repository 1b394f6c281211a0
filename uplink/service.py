"""The uplink: drains the outbox over MQTT and serves the central system's commands.

Delivery contract (DESIGN.md section 7, issue 2 item 8):
- Items leave in outbox order, pipelined in batches, QoS 1.
- A non-ticket item (status, health, summary) is settled by the broker's PUBACK.
- A ticket item is only *marked sent* on PUBACK. It is settled when the central system
  acknowledges it by command (`cmd/ack`), because a broker can PUBACK and then lose the message.
  Until then it is resent with the same CloudEvents id every `resend_interval_s`, and at once
  after every reconnect.
- A batch without PUBACK within `ack_timeout_s` means the link is half-open: the connection is
  dropped and re-established, and everything unsettled is sent again (issue 6).
- The retained `status` is `online` on every connect; the Will says `offline` if we vanish; a
  clean stop publishes `offline` itself before DISCONNECT.
- Every message is built here and passes the one egress guard (`uplink.guard`) right before it
  leaves: outbox items, the status (and Will) and command replies. A refused outbox item is
  settled as refused (it can never pass), logged and counted; nothing refused is published.
- Summaries and health enter the outbox through `enqueue_droppable`, which sheds the oldest of
  them when the outbox is over `outbox_max_messages`; ticket messages are never shed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from gateway.core.clock import Clock
from gateway.core.errors import GatewayError, UplinkError
from gateway.core.interfaces import CommandHandler, CommandReply, NewMessage, Outbox
from gateway.core.records import OutboxItem, OutboxKind
from uplink.commands import RejectedCommand, encode_reply, parse_command
from uplink.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    encode_json,
    is_cloudevent,
    rfc3339,
    user_properties,
)
from uplink.guard import EgressGuard
from uplink.mqtt import (
    InboundMessage,
    LinkSettings,
    MessageProperties,
    MqttLink,
    OutgoingMessage,
    PublishRejected,
    TlsSettings,
)
from uplink.topics import Topics

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
# What may be shed when the outbox is over its size (issue 6); tickets never are.
DROPPABLE_KINDS = frozenset({OutboxKind.SUMMARY, OutboxKind.HEALTH})


class SheddingOutbox(Outbox, Protocol):
    """The outbox the uplink drains, with the size policy of issue 6 (`StateStore`)."""

    async def shed(self, max_depth: int, kinds: Collection[OutboxKind]) -> Mapping[str, int]:
        """Delete the oldest unsettled messages of `kinds` until at most `max_depth` unsettled
        messages remain (or none of `kinds` is left); returns how many per kind."""
        ...

    async def refuse(self, seq: int, now: float) -> None:
        """Settle an item the egress guard refused, so it is never tried again."""
        ...


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
    # How often the outbox is looked at when nobody calls `wake()`.
    poll_interval_s: float = 0.5
    batch_size: int = 100
    # No PUBACK for this long means a half-open link (issue 6): drop it and reconnect.
    ack_timeout_s: float = 15.0
    stop_timeout_s: float = 5.0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = None
    # Above this many unsettled messages, summaries and health are shed oldest-first.
    outbox_max_messages: int = 10_000

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
            username=config.username,
            password=password,
            tls=tls,
        )


@dataclass(frozen=True, slots=True)
class UplinkStatistics:
    connected: bool
    connects: int
    connection_losses: int
    published: int  # outbox items the broker acknowledged (PUBACK)
    resent: int  # ticket messages sent again with the same id
    publish_failures: int  # refused by the broker or lost with the connection
    half_open_aborts: int
    acks: int  # central acks accepted
    commands: int  # well-formed commands handled
    rejected_commands: int  # malformed, unknown or refused by the handler
    replies: int
    outbox_depth: int
    # Bytes and messages that left the site (PUBACK received), by message type; resends count.
    bytes_sent: Mapping[str, int] = field(default_factory=dict)
    messages_sent: Mapping[str, int] = field(default_factory=dict)
    # `<reason>:<type>` -> count: `outbox_full:health`, `egress_refused:ticket`, ...
    drops: Mapping[str, int] = field(default_factory=dict)


class Uplink:
    def __init__(
        self,
        settings: UplinkSettings,
        outbox: SheddingOutbox,
        on_command: CommandHandler,
        clock: Clock,
        guard: EgressGuard | None = None,
    ) -> None:
        self.settings = settings
        self._topics = settings.topics
        self._outbox = outbox
        self._on_command = on_command
        self._clock = clock
        self.guard = guard or EgressGuard(settings.topics)
        self._bytes_sent: Counter[str] = Counter()
        self._messages_sent: Counter[str] = Counter()
        self._drops: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._link: MqttLink | None = None
        self._published = 0
        self._resent = 0
        self._publish_failures = 0
        self._half_open_aborts = 0
        self._acks = 0
        self._commands = 0
        self._rejected = 0
        self._replies = 0
        self._depth = 0

    # --- public ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Look at the outbox now (call after committing a message) instead of at the next poll."""
        self._wake.set()

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
        self.wake()
        return True

    async def run_uplink(self) -> None:
        """Run until cancelled; on cancellation publish the offline status and disconnect."""
        link = MqttLink(self._link_settings())
        self._link = link
        link.start()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._run_publisher(link), name="uplink.publisher")
                group.create_task(self._run_commands(link), name="uplink.commands")
        finally:
            final = self._status_message("offline", "stopped")
            await link.close(
                final=final if self._admit(OutboxKind.STATUS, final) else None,
                grace_s=self.settings.stop_timeout_s,
            )

    def statistics(self) -> UplinkStatistics:
        link = self._link.statistics() if self._link is not None else None
        return UplinkStatistics(
            connected=link.connected if link else False,
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
            properties=MessageProperties(content_type=JSON_CONTENT_TYPE),
        )

    # --- outbox -> broker --------------------------------------------------------------------

    async def _run_publisher(self, link: MqttLink) -> None:
        while True:
            await link.wait_connected()
            generation = link.generation
            try:
                await self._publish_status(link)
                await self._resend_all_unsettled(link)
                while link.connected and link.generation == generation:
                    if not await self._send_due(link):
                        await self._idle()
            except UplinkError as exc:
                # The connection went away mid-way; the items stay in the outbox. Wait for that
                # connection to be declared lost (unless a new one is already up).
                log.debug("Uplink publishing paused: %s", exc)
                if link.connected and link.generation == generation:
                    await link.wait_disconnected()

    async def _publish_status(self, link: MqttLink) -> None:
        message = self._status_message("online", None)
        if not self._admit(OutboxKind.STATUS, message):
            return
        try:
            await link.publish(message)
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
                await self._wake.wait()
        except TimeoutError:
            pass  # the poll interval passed: look again
        self._wake.clear()

    async def _send_due(self, link: MqttLink) -> bool:
        items = await self._outbox.due(
            self._clock.now(), self.settings.resend_interval_s, self.settings.batch_size
        )
        if items:
            await self._send(link, items)
        return bool(items)

    async def _resend_all_unsettled(self, link: MqttLink) -> None:
        """After a (re)connect, everything unsettled goes out again, sent before or not.

        `unsettled(limit)` has no offset, so the window grows by what this pass already sent;
        settled items drop out of it by themselves.
        """
        done: set[int] = set()
        resent_before = self._resent
        while True:
            window = await self._outbox.unsettled(len(done) + self.settings.batch_size)
            items = [item for item in window if item.seq not in done]
            if not items:
                break
            await self._send(link, items)
            done.update(item.seq for item in items)
        if self._resent > resent_before:
            log.info(
                "Resent %d unacknowledged ticket message(s) after connecting.",
                self._resent - resent_before,
            )

    async def _send(self, link: MqttLink, items: Sequence[OutboxItem]) -> None:
        """Publish a batch pipelined, then record each PUBACK in order.

        Raises `UplinkError` when the connection is gone, after recording what did arrive.
        """
        futures: list[asyncio.Future[int]] = []
        admitted: list[OutboxItem] = []
        for item in items:
            message = self._message_for(item)
            if not self._admit(item.kind, message):
                # Deterministic: it would be refused on every retry. Settled as refused, so it
                # stays on record in state.db but never blocks or loops (issue 6).
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
                for future in futures:
                    future.cancel()
                raise
        try:
            async with asyncio.timeout(self.settings.ack_timeout_s):
                results = await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError:
            self._half_open_aborts += 1
            log.warning(
                "No PUBACK from `%s:%s` within %.0f s for %d message(s); treating the link as "
                "half-open and reconnecting.",
                self.settings.host,
                self.settings.port,
                self.settings.ack_timeout_s,
                len(admitted),
            )
            link.abort()
            raise UplinkError("PUBACK timeout") from None

        now = self._clock.now()
        lost: BaseException | None = None
        for item, result in zip(admitted, results, strict=True):
            if isinstance(result, PublishRejected):
                self._publish_failures += 1
                # Kept, and retried after the resend interval rather than in a hot loop.
                await self._outbox.mark_sent(item.seq, now)
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
                self._published += 1
                self._bytes_sent[item.kind.value] += len(item.payload)
                self._messages_sent[item.kind.value] += 1
                if item.attempts > 0:
                    self._resent += 1
                    log.debug("Resent `%s` (attempt %d).", item.event_id, item.attempts + 1)
                if item.kind.needs_central_ack:
                    await self._outbox.mark_sent(item.seq, now)
                else:
                    await self._outbox.settle(item.seq, now)
        if lost is not None:
            raise UplinkError(str(lost)) from lost

    def _message_for(self, item: OutboxItem) -> OutgoingMessage:
        cloudevent = is_cloudevent(item.payload)
        return OutgoingMessage(
            topic=item.topic,
            payload=item.payload,
            qos=1,
            retain=False,  # tickets are never retained (DESIGN.md section 7)
            properties=MessageProperties(
                content_type=CLOUDEVENTS_CONTENT_TYPE if cloudevent else JSON_CONTENT_TYPE,
                user_properties=tuple(user_properties(item.payload)),
            ),
        )

    # --- broker -> commands ------------------------------------------------------------------

    async def _run_commands(self, link: MqttLink) -> None:
        while True:
            message = await link.receive()
            await self._handle_inbound(link, message)
            link.acknowledge(message)

    async def _handle_inbound(self, link: MqttLink, message: InboundMessage) -> None:
        verb = self._topics.verb_of(message.topic)
        parsed = parse_command(
            verb,
            message.payload,
            message.properties.response_topic,
            message.properties.correlation_data,
        )
        if isinstance(parsed, RejectedCommand):
            self._rejected += 1
            log.warning("Rejected command on `%s`: %s.", message.topic, parsed.reason)
            await self._reply(
                link, parsed.response_topic, parsed.correlation_data, parsed.reply(), verb
            )
            return

        self._commands += 1
        try:
            reply = await self._on_command(parsed)
        except GatewayError as exc:
            # An expected failure of ours (a store refusing a write): refuse the command, keep
            # serving. Anything else is a bug and propagates.
            log.error("Command `%s` (`%s`) failed: %s", parsed.command_id, parsed.verb, exc)
            reply = CommandReply(parsed.command_id, False, f"failed: {exc}")
        if not reply.accepted:
            self._rejected += 1
            log.warning(
                "Command `%s` (`%s`) refused: %s.", parsed.command_id, parsed.verb, reply.reason
            )
        elif parsed.verb == "ack":
            self._acks += 1
        await self._reply(link, parsed.response_topic, parsed.correlation_data, reply, verb)
        self.wake()  # an ack may have changed what is due

    async def _reply(
        self,
        link: MqttLink,
        response_topic: str | None,
        correlation_data: bytes | None,
        reply: CommandReply,
        verb: str | None,
    ) -> None:
        if not response_topic:
            return
        message = OutgoingMessage(
            topic=response_topic,
            payload=encode_reply(reply, verb),
            qos=1,
            properties=MessageProperties(
                content_type=JSON_CONTENT_TYPE, correlation_data=correlation_data
            ),
        )
        if not self._admit(OutboxKind.REPLY, message):
            return
        try:
            await link.publish(message)
        except UplinkError as exc:
            # The central system repeats a command it got no reply to; nothing to keep here.
            log.warning(
                "Reply to command `%s` on `%s` not delivered: %s",
                reply.command_id,
                response_topic,
                exc,
            )
            return
        self._replies += 1
        self._count_sent(OutboxKind.REPLY, message)
