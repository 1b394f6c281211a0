"""The broker probe (issue 11, item 6): an answer means the broker itself answered an MQTT
CONNECT, not that something accepted a TCP connection."""

from __future__ import annotations

import pytest

from tests.faults.support import StallingProxy
from tests.support.broker import MosquittoBroker, free_loopback_port
from uplink.probe import broker_answers, connect_packet

pytestmark = pytest.mark.broker


def test_the_connect_packet_is_mqtt_5_with_a_clean_start():
    packet = connect_packet("edge-probe")
    assert packet[0] == 0x10 and packet[1] == len(packet) - 2
    assert packet[2:10] == b"\x00\x04MQTT\x05\x02"
    assert packet.endswith(b"\x00\x0aedge-probe")


async def test_a_broker_answers(mosquitto: MosquittoBroker):
    assert await broker_answers("127.0.0.1", mosquitto.port, "p-1")


async def test_nothing_listening_is_no_answer():
    assert not await broker_answers("127.0.0.1", free_loopback_port(), "p-2", timeout_s=1.0)


async def test_a_proxy_that_accepts_but_black_holes_is_no_answer(mosquitto: MosquittoBroker):
    async with StallingProxy(mosquitto.port) as proxy:
        assert await broker_answers("127.0.0.1", proxy.port, "p-3")
        proxy.blackhole()
        assert not await broker_answers("127.0.0.1", proxy.port, "p-4", timeout_s=1.0)
        proxy.restore()
        assert await broker_answers("127.0.0.1", proxy.port, "p-5")
