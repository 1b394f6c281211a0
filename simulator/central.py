"""A simulated central ticket system (CMMS) on the other side of the broker.

It does what DESIGN.md section 7 asks of a real consumer: subscribe to the gateway's ticket
topics and status, deduplicate by CloudEvents `id` (the gateway resends until acknowledged),
and acknowledge each ticket message with `cmd/ack` carrying an MQTT 5 response topic and
correlation data. A message seen again is not shown again but is acknowledged again: seeing it
means the gateway never got the first ack.

Each new ticket event is printed as a maintenance planner would read it. Everything received is
recorded for tests and for the demo's summary. `send_command` drives the rest of the closed loop
(assign, close, shelve, maintenance, snapshot, resync; docs/TICKETS.md) and waits for the reply.
With a `WorkPlan` it also plays the people: a technician accepts each new ticket,
starts the work and closes it with coded cause and remedy; a requester signs off (`confirm`)
once the gateway reports the repair verified.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sys
import textwrap
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from gateway.core.errors import UplinkError
from gateway.core.interfaces import CommandReply
from simulator.ticket_events import parse_ticket_event
from uplink.commands import decode_reply
from uplink.mqtt import InboundMessage, LinkSettings, MessageProperties, MqttLink, OutgoingMessage
from uplink.topics import Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReceivedTicketEvent:
    """One distinct ticket event (duplicates are counted, not recorded)."""

    event_id: str
    kind: str  # opened | updated | condition_cleared | ...
    sequence: str
    topic: str
    ticket_id: str
    work_order: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class WorkPlan:
    """The people of the simulated maintenance organisation."""

    technician: str = "tech-demo"
    requester: str = "requester-demo"
    cause_code: str = "3.4"  # ISO 14224: expected wear and tear
    remedy_code: str = "1"  # ISO 14224: replace
    resolution: str = "Bearing replaced and regreased"
    pause_s: float = 0.5
    max_attempts: int = 2  # a repair that fails verification is worked once more


@dataclass(frozen=True, slots=True)
class CentralStatistics:
    connects: int
    tickets_seen: int  # distinct tickets
    updates: int  # distinct events after `opened`
    duplicates_dropped: int
    malformed: int
    acks_sent: int
    replies_received: int
    replies_rejected: int


class CentralSystem:
    def __init__(
        self,
        host: str,
        port: int,
        prefix: str,
        site: str,
        gateway: str,
        *,
        ack: bool = True,
        client_id: str | None = None,
        first_work_order: int = 1001,
        output: TextIO | None = sys.stdout,
        reconnect_min_s: float = 0.2,
        actor: str | None = None,
        share_group: str | None = None,
        work: WorkPlan | None = None,
    ) -> None:
        """`share_group`: subscribe to the ticket and incident topics as a member of this
        shared subscription (`$share/<group>/...`), as redundant consumers do."""
        self.topics = Topics(prefix, site, gateway)
        self.client_id = client_id or f"central-{site}-{gateway}"
        # Named in every command; the gateway may only accept configured actors.
        self.actor = actor or self.client_id
        # Mutable on purpose: a test or the demo can hold acks back, then let them through.
        self.ack = ack
        self.reply_topic = f"{prefix}/central/{self.client_id}/replies"
        self._settings = LinkSettings(
            host=host,
            port=port,
            client_id=self.client_id,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=5.0,
            subscriptions=(
                *(
                    f"$share/{share_group}/{topic}" if share_group else topic
                    for topic in (self.topics.tickets_filter, self.topics.incidents_filter)
                ),
                self.topics.status,
                self.reply_topic,
            ),
        )
        self._output = output
        self._work_order_numbers = itertools.count(first_work_order)
        self._work_orders: dict[str, str] = {}
        self._seen_ids: set[str] = set()
        self._received: list[ReceivedTicketEvent] = []
        self._replies: dict[str, CommandReply] = {}
        self._gateway_status: dict[str, Any] | None = None
        self._changed = asyncio.Event()
        self._updates = 0
        self._duplicates = 0
        self._malformed = 0
        self._acks_sent = 0
        self._link: MqttLink | None = None
        # The person-like steps: a technician takes each new ticket, a requester
        # signs off a verified repair. Off unless a plan is given.
        self.work = work
        self._work_tasks: set[asyncio.Task[None]] = set()
        self._worked: dict[str, int] = {}
        self.work_log: list[tuple[str, str, bool]] = []  # (ticket, verb, accepted)

    # --- what tests and the demo read --------------------------------------------------------

    @property
    def received(self) -> tuple[ReceivedTicketEvent, ...]:
        return tuple(self._received)

    @property
    def work_orders(self) -> Mapping[str, str]:
        """Ticket id -> work order number (WO-1001...)."""
        return dict(self._work_orders)

    @property
    def replies(self) -> Mapping[str, CommandReply]:
        """Command id -> the gateway's reply."""
        return dict(self._replies)

    @property
    def gateway_status(self) -> Mapping[str, Any] | None:
        """The last retained `status` document, or None before one arrived."""
        return self._gateway_status

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.connected

    def statistics(self) -> CentralStatistics:
        return CentralStatistics(
            connects=self._link.statistics().connects if self._link is not None else 0,
            tickets_seen=len(self._work_orders),
            updates=self._updates,
            duplicates_dropped=self._duplicates,
            malformed=self._malformed,
            acks_sent=self._acks_sent,
            replies_received=len(self._replies),
            replies_rejected=sum(1 for r in self._replies.values() if not r.accepted),
        )

    async def wait_until(self, predicate: Callable[[CentralSystem], bool]) -> None:
        """Return once `predicate(self)` holds; re-checked on every message. Callers bound it
        with `asyncio.timeout`."""
        while not predicate(self):
            self._changed.clear()
            await self._changed.wait()

    def events_of(self, ticket_id: str) -> list[ReceivedTicketEvent]:
        return [r for r in self._received if r.ticket_id == ticket_id]

    def kinds_of(self, ticket_id: str) -> list[str]:
        """The kinds of a ticket's distinct events in arrival order (opened, acknowledged...)."""
        return [r.kind for r in self._received if r.ticket_id == ticket_id]

    def latest(self, ticket_id: str) -> Mapping[str, Any] | None:
        """The newest `data` of a ticket by revision, as the central system would show it."""
        events = self.events_of(ticket_id)
        if not events:
            return None
        return max(events, key=lambda r: int(r.data.get("revision", 0))).data

    async def send_command(
        self,
        verb: str,
        body: Mapping[str, Any],
        *,
        command_id: str | None = None,
        topic: str | None = None,
        timeout_s: float = 10.0,
    ) -> CommandReply:
        """Publish `cmd/<verb>` with a response topic and correlation data; wait for the reply.

        `body` is sent as given plus `command_id` and `actor` unless it names them; `topic`
        overrides the command topic (to test what the gateway does with a wrong one)."""
        if self._link is None:
            raise UplinkError("the central system is not running")
        document = {"actor": self.actor} | dict(body)
        document["command_id"] = command_id or document.get("command_id") or uuid.uuid4().hex
        cid = str(document["command_id"])
        self._replies.pop(cid, None)
        await self._publish_command(self._link, topic or self.topics.cmd(verb), document)
        async with asyncio.timeout(timeout_s):
            await self.wait_until(lambda c: cid in c._replies)
        return self._replies[cid]

    async def wait_connected(self) -> None:
        while self._link is None:
            self._changed.clear()
            await self._changed.wait()
        await self._link.wait_connected()

    # --- running -----------------------------------------------------------------------------

    async def run_central(self) -> None:
        """Run until cancelled; the people's work in progress stops with it."""
        try:
            async with MqttLink(self._settings) as link:
                self._link = link
                self._changed.set()
                while True:
                    message = await link.receive()
                    await self._handle(link, message)
                    link.acknowledge(message)
                    self._changed.set()
        finally:
            working = list(self._work_tasks)
            for task in working:
                task.cancel()
            await asyncio.gather(*working, return_exceptions=True)

    async def _handle(self, link: MqttLink, message: InboundMessage) -> None:
        if message.topic == self.topics.status:
            self._on_status(message)
        elif message.topic == self.reply_topic:
            self._on_reply(message)
        else:
            await self._on_ticket_message(link, message)

    def _on_status(self, message: InboundMessage) -> None:
        try:
            document = json.loads(message.payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._malformed += 1
            log.warning("Central: status of gateway `%s` is not JSON.", self.topics.gateway)
            return
        if isinstance(document, dict):
            self._gateway_status = document
            log.info("Central: gateway `%s` is %s.", self.topics.gateway, document.get("state"))

    def _on_reply(self, message: InboundMessage) -> None:
        reply = decode_reply(message.payload)
        if reply is None:
            self._malformed += 1
            log.warning("Central: unreadable reply on `%s`.", message.topic)
            return
        self._replies[reply.command_id] = reply
        if not reply.accepted:
            log.warning("Central: command `%s` refused: %s", reply.command_id, reply.reason)

    async def _on_ticket_message(self, link: MqttLink, message: InboundMessage) -> None:
        event = parse_ticket_event(message.payload)
        if event is None:
            self._malformed += 1
            log.warning("Central: message on `%s` is not a ticket CloudEvent.", message.topic)
            return
        event_id, kind, sequence, data = event
        ticket_id = str(data["id"])
        if event_id in self._seen_ids:
            self._duplicates += 1
            log.info("Central: duplicate `%s` of ticket `%s` dropped.", event_id, ticket_id)
        else:
            self._seen_ids.add(event_id)
            work_order = self._work_orders.get(ticket_id)
            if work_order is None:
                work_order = f"WO-{next(self._work_order_numbers)}"
                self._work_orders[ticket_id] = work_order
            if kind != "opened":
                self._updates += 1
            received = ReceivedTicketEvent(
                event_id, kind, sequence, message.topic, ticket_id, work_order, data
            )
            self._received.append(received)
            self._print(received)
            self._plan_work(received)
        if self.ack:
            await self._acknowledge(link, event_id, ticket_id)

    def _plan_work(self, event: ReceivedTicketEvent) -> None:
        """What the people behind the central system do with a ticket event. Commands wait
        for their reply, which arrives on this receive loop: they run as tasks of their own."""
        plan = self.work
        if plan is None or event.data.get("fault_code") == "alarm.flood":
            return
        steps: list[tuple[str, dict[str, Any]]] = []
        if event.kind in ("opened", "reopened"):
            if self._worked.get(event.ticket_id, 0) >= plan.max_attempts:
                return
            self._worked[event.ticket_id] = self._worked.get(event.ticket_id, 0) + 1
            steps = [
                ("accept", {"actor": plan.technician}),
                ("start", {"actor": plan.technician, "note": "on site"}),
                (
                    "close",
                    {
                        "actor": plan.technician,
                        "resolution": plan.resolution,
                        "cause_code": plan.cause_code,
                        "remedy_code": plan.remedy_code,
                        "repaired": True,
                    },
                ),
            ]
        elif event.kind == "verified" and event.data.get("state") == "VERIFIED":
            steps = [("confirm", {"actor": plan.requester, "note": "runs as before"})]
        if steps:
            task = asyncio.create_task(self._work(event.ticket_id, steps, plan.pause_s))
            self._work_tasks.add(task)
            task.add_done_callback(self._work_tasks.discard)

    async def _work(
        self, ticket_id: str, steps: list[tuple[str, dict[str, Any]]], pause_s: float
    ) -> None:
        for verb, body in steps:
            await asyncio.sleep(pause_s)  # a person takes a moment between steps
            try:
                reply = await self.send_command(verb, {"ticket_id": ticket_id} | body)
            except (UplinkError, TimeoutError) as exc:
                log.warning("Central: `%s` of `%s` not answered: %s", verb, ticket_id, exc)
                return
            self.work_log.append((ticket_id, verb, reply.accepted))
            if self._output is not None:
                outcome = "accepted" if reply.accepted else f"refused: {reply.reason}"
                who = body.get("actor", self.actor)
                print(
                    f"--- {self._work_orders.get(ticket_id, ticket_id)}: {who} sends `{verb}`: "
                    f"{outcome}",
                    file=self._output,
                    flush=True,
                )
            if not reply.accepted:
                return

    async def _acknowledge(self, link: MqttLink, event_id: str, ticket_id: str) -> None:
        command_id = uuid.uuid4().hex
        body = {
            "command_id": command_id,
            "actor": self.actor,
            "event_id": event_id,
            "ticket_id": ticket_id,
            "central_id": self._work_orders[ticket_id],
        }
        try:
            await self._publish_command(link, self.topics.cmd("ack"), body)
        except UplinkError as exc:
            # The gateway resends what it does not see acknowledged; we will ack it then.
            log.warning("Central: ack of `%s` not delivered: %s", event_id, exc)
            return
        self._acks_sent += 1

    async def _publish_command(self, link: MqttLink, topic: str, body: Mapping[str, Any]) -> None:
        command_id = str(body["command_id"])
        message = OutgoingMessage(
            topic=topic,
            payload=json.dumps(body).encode(),
            qos=1,
            properties=MessageProperties(
                content_type="application/json",
                response_topic=self.reply_topic,
                correlation_data=command_id.encode(),
            ),
        )
        await link.publish(message)

    def _print(self, event: ReceivedTicketEvent) -> None:
        if self._output is None:
            return
        print(format_work_order(event), file=self._output, flush=True)


# Units read from the key's suffix (the gateway's evidence names carry them: `velocity_rms_mm_s`).
_UNIT_SUFFIXES = (
    ("_mm_s", "mm/s"),
    ("_hz", "Hz"),
    ("_rpm", "rpm"),
    ("_db", "dB"),
    ("_pct", "%"),
    ("_g", "g"),
    ("_s", "s"),
)
_WIDTH = 100
_LABEL = "  Evidence:    "


def _with_unit(key: str, value: Any) -> str:
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    for suffix, unit in _UNIT_SUFFIXES:
        if key.endswith(suffix) and isinstance(value, int | float) and not isinstance(value, bool):
            return f"{shown} {unit}"
    return shown


def _evidence_lines(evidence: Any) -> list[str]:
    """The evidence as a planner reads it: the detector's own sentences (`readout`) when it
    wrote them, else its plain values with their units; structures are named, not dumped."""
    if not isinstance(evidence, Mapping) or not evidence:
        return ["-"]
    readout = evidence.get("readout")
    if isinstance(readout, list) and readout:
        return [str(line) for line in readout]
    plain = [
        f"{key}={_with_unit(str(key), value)}"
        for key, value in evidence.items()
        if isinstance(value, str | int | float | bool) or value is None
    ]
    nested = [str(key) for key, value in evidence.items() if isinstance(value, Mapping | list)]
    text = ", ".join(plain)
    if nested:
        text += ("; " if text else "") + f"in the ticket's data: {', '.join(nested)}"
    return [text]


def _wrapped(label: str, lines: list[str]) -> list[str]:
    """`label` then each line, wrapped at word boundaries (never cut mid-word) and indented."""
    indent = " " * len(label)
    out: list[str] = []
    for line in lines:
        pieces = textwrap.wrap(
            line,
            width=_WIDTH,
            initial_indent=label if not out else indent,
            subsequent_indent=indent + "  ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        out += pieces or [label if not out else indent]
    return out


def format_work_order(event: ReceivedTicketEvent) -> str:
    """One readable block, as a maintenance planner would scan it."""
    d = event.data
    peak = d.get("peak_value")
    evidence = d.get("evidence")
    unit = evidence.get("unit") if isinstance(evidence, Mapping) else None
    unit_text = f" {unit}" if isinstance(unit, str) and unit else ""
    peak_text = f", peak {peak:.4g}{unit_text}" if isinstance(peak, int | float) else ""
    condition = "active" if d.get("condition_active") else "cleared"
    title = {
        "opened": "NEW WORK ORDER",
        "condition_cleared": "CONDITION CLEARED",
        "sla_warning": "SLA WARNING",
        "sla_breached": "SLA BREACHED: ESCALATED",
        "sla_escalated": "ESCALATED TO THE NEXT LEVEL",
        "unattended": "UNATTENDED: EVERY LEVEL ESCALATED",
        "accepted": "ACCEPTED BY A TECHNICIAN",
        "in_progress": "WORK IN PROGRESS",
        "on_hold": "ON HOLD",
        "verified": "REPAIR VERIFIED: AWAITING SIGN-OFF",
        "closed": "CLOSED",
        "eradicated": "ERADICATED: NOT BACK IN 30 DAYS",
    }.get(event.kind, f"UPDATE ({event.kind})")
    if d.get("fault_code") == "alarm.flood" and event.kind == "opened":
        title = "NEW INCIDENT (ALARM FLOOD)"
    return "\n".join(
        [
            f"=== {event.work_order}  {d.get('priority', '?')}  {title} ===",
            f"  Asset:       {d.get('asset')}  (site {d.get('site')}, gateway {d.get('gateway')})",
            f"  Fault:       {d.get('fault_code')}  [ISO 14224 {d.get('iso14224_failure_mode')}]"
            f"  detected by {d.get('detector')}",
            *_wrapped("  Message:     ", [str(d.get("message"))]),
            f"  Seen:        {d.get('occurrences')} time(s), first {d.get('first_seen')}, "
            f"last {d.get('last_seen')}{peak_text}; condition {condition}",
            *_wrapped(_LABEL, _evidence_lines(d.get("evidence"))),
            *_planning_lines(d),
            f"  Edge ticket: {event.ticket_id} rev {d.get('revision')} (event {event.event_id})",
        ]
    )


def _planning_lines(d: Mapping[str, Any]) -> list[str]:
    """What a planner acts on: deadlines, routing and the recommended actions."""
    lines = []
    if d.get("respond_by") or d.get("resolve_by"):
        lines.append(f"  Respond by:  {d.get('respond_by')}; resolve by {d.get('resolve_by')}")
    routing = d.get("routing")
    if isinstance(routing, Mapping):
        where = ", ".join(f"{k} {v}" for k, v in routing.items() if v)
        if where:
            lines.append(f"  Route to:    {where}")
    knowledge = d.get("knowledge")
    entries = knowledge if isinstance(knowledge, list) else [knowledge]
    actions = [
        action
        for entry in entries
        if isinstance(entry, Mapping)
        for action in entry.get("actions", [])
    ]
    lines += [f"  Action:      {action}" for action in actions]
    return lines
