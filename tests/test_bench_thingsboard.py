"""The ThingsBoard comparison's stand-in for a ThingsBoard server, against a real mosquitto:
TB publishes nothing until its `getSessionLimits` RPC is answered, so a stand-in that answers
on the wrong topic, or counts what it should not, silently turns the comparison into one with
a TB that does less work than ours (as the figures before 2026-12-08 did)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import cast

from bench.polling.thingsboard import SESSION_LIMITS, PlatformStandIn, slave
from tests.support.broker import MosquittoBroker
from uplink.mqtt import LinkSettings, MqttLink, OutgoingMessage

REQUEST = json.dumps({"method": "getSessionLimits", "params": {"timeout": 5000}}).encode()


async def as_tb(port: int, *, wait_s: float) -> list[tuple[str, dict[str, object]]]:
    """What TB's client does: ask for the session limits, publish telemetry of two devices,
    and collect the RPC responses it gets within `wait_s`."""
    settings = LinkSettings("127.0.0.1", port, "tb-like",
                            subscriptions=("v1/devices/me/rpc/response/+",),
                            clean_start=True)  # fmt: skip
    answers: list[tuple[str, dict[str, object]]] = []
    async with MqttLink(settings) as link:
        await link.wait_connected()
        await link.send(OutgoingMessage("v1/devices/me/rpc/request/7", REQUEST))
        await link.send(OutgoingMessage("v1/devices/me/rpc/request/8", b'{"method": "other"}'))
        telemetry = {
            "dev-0000": [{"ts": 1, "values": {"r0": 0.0, "r1": 0.1, "r2": 0.2}}],
            "dev-0001": [
                {"ts": 1, "values": {"r0": 0.0}},
                {"ts": 2, "values": {"r0": 0.0, "r1": 0.1}},
            ],
        }
        await link.send(OutgoingMessage("v1/gateway/telemetry", json.dumps(telemetry).encode()))
        deadline = asyncio.get_running_loop().time() + wait_s
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                async with asyncio.timeout(left):
                    message = await link.receive()
            except TimeoutError:
                break
            answers.append((message.topic, json.loads(message.payload)))
            link.acknowledge(message)
    return answers


def settled(platform: PlatformStandIn, values: int) -> tuple[int, int]:
    deadline = time.monotonic() + 10
    while platform.snapshot()[1] < values and time.monotonic() < deadline:
        time.sleep(0.05)
    return platform.snapshot()


def test_the_session_limits_rpc_is_answered_on_its_response_topic_and_values_are_counted():
    with MosquittoBroker() as broker, PlatformStandIn(broker.port) as platform:
        answers = asyncio.run(as_tb(broker.port, wait_s=2.0))
        messages, values = settled(platform, 6)
    # Only the session limits are answered, on the request's own id, as a server without
    # rate limits would (TB reads `rateLimits` and goes on; without it TB never publishes).
    assert answers == [("v1/devices/me/rpc/response/7", SESSION_LIMITS)]
    assert "rateLimits" in SESSION_LIMITS
    assert (messages, values) == (1, 6)
    assert platform.devices == {"dev-0000", "dev-0001"}
    assert platform.limits_answered == 1


def test_a_silent_platform_answers_nothing_but_still_counts():
    with MosquittoBroker() as broker, PlatformStandIn(broker.port, answer=False) as platform:
        answers = asyncio.run(as_tb(broker.port, wait_s=1.0))
        assert settled(platform, 6) == (1, 6)
    assert answers == []
    assert platform.limits_answered == 0


def keys(layout: str) -> list[dict[str, object]]:
    config = slave(3, 15003, 30, 1.0, layout, 30)
    assert config["port"] == 15003 and config["pollPeriod"] == 1000
    return cast(list[dict[str, object]], config["timeseries"])


def test_the_range_layout_reads_a_device_in_one_request_and_names_every_register():
    # One wide-range key: TB reads registers 0..29 in one request (at most
    # `maxRegistersPerRequest` registers) and publishes one value per address, `r0` ... `r29`.
    (series,) = keys("range")
    assert series["address"] == "0-29"
    assert series["maxRegistersPerRequest"] == 30
    assert series["objectsCount"] == 1
    assert "${address}" in str(series["tag"])
    # TB's default: a key (and a request) per register; `block`: one key of 30 registers.
    assert len(keys("default")) == 30
    (block,) = keys("block")
    assert block["objectsCount"] == 30
