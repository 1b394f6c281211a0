"""Every message on the wire checked against the shipped contract (issue 14, item 2).

`watching_the_wire(port)` subscribes to `#` on the broker and keeps everything anyone
published; `violations()` checks each message against the AsyncAPI document shipped in the
package (`uplink/asyncapi.json`), with a JSON Schema validator (jsonschema), independent of the
code that built the messages:
- its topic is a channel of the contract, or the response topic a command named (a reply);
- its payload is valid against the channel's message schema; a command that is not (the
  hostile-input tests send such) must have been answered `accepted: false`;
- what the gateway publishes says UTF-8 (Payload Format Indicator 1) and its content type;
  ticket events repeat their CloudEvents attributes as user properties under the same names;
  health and summaries carry a Message Expiry Interval no longer than the contract's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft7Validator

from uplink.asyncapi import shipped_document
from uplink.mqtt import InboundMessage, LinkSettings, MqttLink


@dataclass(frozen=True)
class _Channel:
    pattern: re.Pattern[str]
    name: str  # the message name
    message: dict[str, Any]
    sent_by_gateway: bool


class Contract:
    def __init__(self, document: dict[str, Any] | None = None) -> None:
        self.document = document or shipped_document()
        components = self.document["components"]
        self._validators = {
            name: Draft7Validator(schema) for name, schema in components["schemas"].items()
        }
        self._channels: list[_Channel] = []
        received = {
            op["channel"]["$ref"].rsplit("/", 1)[1]
            for op in self.document["operations"].values()
            if op["action"] == "receive"
        }
        for channel_id, channel in self.document["channels"].items():
            address = channel["address"]
            if address is None:
                continue
            regex = "/".join(
                "[^/+#]+" if re.fullmatch(r"\{\w+\}", level) else re.escape(level)
                for level in address.split("/")
            )
            [name] = channel["messages"]
            self._channels.append(
                _Channel(
                    re.compile(f"^{regex}$"),
                    name,
                    components["messages"][name],
                    channel_id not in received,
                )
            )
        self.reply = components["messages"]["CommandReply"]

    def channel_of(self, topic: str) -> _Channel | None:
        found = [channel for channel in self._channels if channel.pattern.match(topic)]
        return found[0] if len(found) == 1 else None

    def violations(self, messages: list[InboundMessage]) -> list[str]:
        response_topics = {
            m.properties.response_topic
            for m in messages
            if m.properties.response_topic and "/cmd/" in m.topic
        }
        replies: dict[str, bool] = {}
        for message in messages:
            if message.topic in response_topics:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    reply = json.loads(message.payload)
                    replies[str(reply["command_id"])] = bool(reply["accepted"])
        found: list[str] = []
        for message in messages:
            channel = self.channel_of(message.topic)
            if channel is not None and not channel.sent_by_gateway:
                # A command: the sender may break the contract (the hostile-input tests do);
                # the gateway's promise is to reject what does not fit it.
                wrong = self._check(message, channel.name, channel.message, False)
                if wrong and replies.get(_command_id(message.payload) or "") is True:
                    found += [f"{w} - yet accepted" for w in wrong]
            elif channel is not None:
                found += self._check(message, channel.name, channel.message, True)
            elif message.topic in response_topics:
                found += self._check(message, "CommandReply", self.reply, True)
            elif "/cmd/" in message.topic:
                # A verb the contract does not have: it must be rejected.
                if replies.get(_command_id(message.payload) or "") is True:
                    found.append(f"{message.topic}: not a command of the contract, yet accepted")
            else:
                found.append(f"{message.topic}: not a channel of the contract")
        return found

    def _check(
        self, message: InboundMessage, name: str, spec: dict[str, Any], by_gateway: bool
    ) -> list[str]:
        where = f"{message.topic} ({name})"
        try:
            document = json.loads(message.payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return [f"{where}: not UTF-8 JSON: {exc}"]
        found = [
            f"{where}: {'/'.join(map(str, error.absolute_path)) or '$'}: {error.message}"
            for error in self._validators[name].iter_errors(document)
        ]
        if not by_gateway:
            return found  # a command: the central system's properties are its own business
        props = message.properties
        if not props.utf8_payload:
            found.append(f"{where}: no Payload Format Indicator 1")
        if props.content_type != spec["contentType"]:
            found.append(f"{where}: content type {props.content_type!r}")
        if "headers" in spec:
            user = dict(props.user_properties)
            found += [
                f"{where}: user properties: {error.message}"
                for error in Draft7Validator(spec["headers"]).iter_errors(user)
            ]
            for attribute in ("specversion", "id", "source", "type", "time", "subject"):
                if attribute in document and user.get(attribute) != str(document[attribute]):
                    found.append(f"{where}: user property `{attribute}` differs from the event")
        expiry = self._expiry(name)
        if expiry is None and props.message_expiry_s is not None:
            found.append(f"{where}: expires ({props.message_expiry_s} s), the contract says never")
        if expiry is not None and not (
            props.message_expiry_s is not None and 0 < props.message_expiry_s <= expiry
        ):
            found.append(f"{where}: expiry {props.message_expiry_s}, contract {expiry} s")
        return found

    def _expiry(self, name: str) -> int | None:
        for operation in self.document["operations"].values():
            refs = [m["$ref"].rsplit("/", 1)[1] for m in operation["messages"]]
            if operation["action"] == "send" and name in refs:
                expiry = operation["bindings"]["mqtt"].get("messageExpiryInterval")
                return int(expiry) if expiry is not None else None
        return None


def _command_id(payload: bytes) -> str | None:
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return None
    command_id = document.get("command_id") if isinstance(document, dict) else None
    return command_id if isinstance(command_id, str) else None


@dataclass
class WireWatcher:
    contract: Contract
    seen: list[InboundMessage] = field(default_factory=list)

    def violations(self) -> list[str]:
        return self.contract.violations(self.seen)

    def on(self, suffix: str) -> list[InboundMessage]:
        return [m for m in self.seen if m.topic.endswith(suffix)]


@contextlib.asynccontextmanager
async def watching_the_wire(
    port: int, client_id: str = "contract-watcher"
) -> AsyncIterator[WireWatcher]:
    """A subscriber to `#` from before the first message to the end of the block."""
    watcher = WireWatcher(Contract())
    settings = LinkSettings(
        "127.0.0.1", port, client_id, subscriptions=("#",), reconnect_min_s=0.05,
        reconnect_max_s=0.3, clean_start=True,
    )  # fmt: skip

    async def collect(link: MqttLink) -> None:
        while True:
            message = await link.receive()
            watcher.seen.append(message)
            link.acknowledge(message)

    async with MqttLink(settings) as link:
        async with asyncio.timeout(10):
            await link.wait_connected()
        task = asyncio.create_task(collect(link), name="contract-watcher")
        try:
            yield watcher
        finally:
            await asyncio.sleep(0.2)  # what is in flight arrives
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
