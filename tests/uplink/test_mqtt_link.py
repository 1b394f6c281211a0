"""MqttLink against a real mosquitto: PUBACKs, MQTT 5 properties, Will, reconnect, close."""

import asyncio
import dataclasses
import threading
from typing import Any

import pytest

from gateway.core.errors import UplinkError
from tests.support.broker import MosquittoBroker
from tests.uplink.helpers import TcpProxy, eventually
from uplink.mqtt import LinkSettings, MessageProperties, MqttLink, OutgoingMessage

pytestmark = pytest.mark.broker


def settings(port: int, client_id: str, **changes) -> LinkSettings:
    fields: dict[str, Any] = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.5, "keepalive_s": 10}
    fields.update(changes)
    return LinkSettings("127.0.0.1", port, client_id, **fields)


async def connected(link: MqttLink) -> MqttLink:
    async with asyncio.timeout(10):
        await link.wait_connected()
    return link


async def receive(link: MqttLink):
    async with asyncio.timeout(10):
        return await link.receive()


def paho_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("paho-mqtt-client-")]


async def test_publish_waits_for_puback_and_carries_mqtt5_properties(mosquitto):
    async with (
        MqttLink(settings(mosquitto.port, "sender")) as sender,
        MqttLink(settings(mosquitto.port, "receiver", subscriptions=("t/#",))) as receiver,
    ):
        await connected(sender)
        await connected(receiver)
        await asyncio.sleep(0.05)  # let the SUBACK land before publishing
        props = MessageProperties(
            content_type="application/json",
            response_topic="t/replies",
            correlation_data=b"\x00\x01",
            user_properties=(("ce_id", "abc"), ("ticket", "T-1")),
        )
        code = await sender.publish(OutgoingMessage("t/x", b'{"a":1}', properties=props))
        got = await receive(receiver)

    assert code == 0  # success; 0x10 would mean "no matching subscribers"
    assert got.topic == "t/x" and got.payload == b'{"a":1}' and got.qos == 1
    assert got.properties == props
    assert sender.statistics().published == 1


async def test_puback_without_subscribers_is_still_a_success(mosquitto):
    async with MqttLink(settings(mosquitto.port, "lonely")) as link:
        await connected(link)
        assert await link.publish(OutgoingMessage("nobody/listens", b"x")) == 0x10


async def test_publish_while_not_connected_fails_at_once(mosquitto):
    mosquitto.stop()
    async with MqttLink(settings(mosquitto.port, "offline")) as link:
        with pytest.raises(UplinkError, match="not connected"):
            await link.publish(OutgoingMessage("t/x", b"x"))
        await eventually(lambda: link.statistics().connect_failures >= 1)


async def test_will_is_published_when_the_connection_drops_without_disconnect(mosquitto):
    will = OutgoingMessage("gw/status", b'{"state":"offline"}', retain=True)
    watching = settings(mosquitto.port, "watcher", subscriptions=("gw/status",))
    async with TcpProxy(mosquitto.port) as proxy, MqttLink(watching) as watcher:  # noqa: SIM117
        # (the proxy's port is known only inside the first block)
        async with MqttLink(settings(proxy.port, "gw", will=will)) as gateway:
            await connected(gateway)
            await connected(watcher)
            proxy.sever()
            got = await receive(watcher)
            assert got.payload == b'{"state":"offline"}'
            # ... and the gateway comes back by itself.
            await eventually(lambda: gateway.generation == 2 and gateway.connected)
    assert gateway.statistics().connection_losses >= 2  # the severed one and the final close


async def test_pending_publish_fails_when_the_broker_dies_and_link_reconnects(mosquitto):
    async with MqttLink(settings(mosquitto.port, "gw")) as link:
        await connected(link)
        mosquitto.pause()  # the broker will never PUBACK this one
        future = link.send(OutgoingMessage("t/x", b"x"))
        await asyncio.sleep(0.05)
        assert not future.done()
        mosquitto.kill()
        with pytest.raises(UplinkError, match="lost before PUBACK"):
            async with asyncio.timeout(10):
                await future
        mosquitto.start()
        await eventually(lambda: link.connected and link.generation == 2)
        assert await link.publish(OutgoingMessage("t/x", b"again")) == 0x10


async def test_commands_queued_while_away_arrive_with_the_persistent_session(mosquitto):
    # clean_start False + session expiry: the broker keeps our subscription and queues QoS 1.
    subscriber = settings(mosquitto.port, "gw", subscriptions=("gw/cmd/+",))
    async with MqttLink(subscriber) as link:
        await connected(link)
    async with MqttLink(settings(mosquitto.port, "central")) as central:
        await connected(central)
        await central.publish(OutgoingMessage("gw/cmd/ack", b"queued"))
    async with MqttLink(subscriber) as link:
        await connected(link)
        got = await receive(link)
    assert got.payload == b"queued"


async def test_close_sends_the_final_message_and_leaves_no_thread(mosquitto):
    final = OutgoingMessage("gw/status", b"bye", retain=True)
    will = OutgoingMessage("gw/status", b"crashed", retain=True)
    link = MqttLink(settings(mosquitto.port, "gw", will=will))
    link.start()
    await connected(link)
    assert paho_threads() == ["paho-mqtt-client-gw"]
    await link.close(final)
    await link.close(final)  # idempotent
    # a clean DISCONNECT: the Will is dropped, the retained value is our final message
    async with MqttLink(settings(mosquitto.port, "watcher", subscriptions=("gw/status",))) as w:
        got = await receive(w)
        await asyncio.sleep(0.1)
        assert w.statistics().received == 1
    assert got.payload == b"bye" and got.retain
    await eventually(lambda: paho_threads() == [])


async def test_a_command_not_yet_acknowledged_is_delivered_again_after_a_reconnect(mosquitto):
    # manual PUBACK: a message counts as delivered only once our consumer acknowledged it.
    async with TcpProxy(mosquitto.port) as proxy, MqttLink(settings(mosquitto.port, "c")) as c:
        gw_settings = settings(proxy.port, "gw", subscriptions=("gw/cmd/+",))
        async with MqttLink(gw_settings) as gateway:
            await connected(gateway)
            await connected(c)
            await c.publish(OutgoingMessage("gw/cmd/ack", b"first"))
            first = await receive(gateway)  # ... and the gateway dies before handling it
            proxy.sever()
            again = await receive(gateway)
            gateway.acknowledge(again)
            await c.publish(OutgoingMessage("gw/cmd/ack", b"second"))
            second = await receive(gateway)
            gateway.acknowledge(second)
            gateway.acknowledge(first)  # from the old connection: ignored, not misapplied
    assert (first.payload, again.payload, second.payload) == (b"first", b"first", b"second")
    assert again.connection == first.connection + 1


# --- TLS (issue 6): CA, client certificate and key, password; never a plaintext fallback ----


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    from tests.faults.tls import TlsBroker, make_pki

    directory = tmp_path_factory.mktemp("tls")
    pki = make_pki(directory / "pki")
    with TlsBroker(directory, pki, {"edge": "s3cret-pass"}) as broker:
        yield broker


def tls_settings(broker, client_id: str, port: int | None = None, **changes) -> LinkSettings:
    from uplink.mqtt import TlsSettings

    pki = broker.pki
    fields: dict[str, Any] = {
        "username": "edge",
        "password": "s3cret-pass",
        "tls": TlsSettings(str(pki.ca_file), str(pki.client_cert), str(pki.client_key)),
    }
    fields.update(changes)
    return settings(port or broker.tls_port, client_id, **fields)


async def test_tls_with_client_certificate_and_password_delivers(tls_broker):
    observer = MqttLink(settings(tls_broker.plain_port, "observer-tls", subscriptions=("t/#",)))
    async with observer, MqttLink(tls_settings(tls_broker, "edge-tls")) as link:
        await connected(observer)
        await connected(link)
        assert await link.publish(OutgoingMessage("t/tls", b'{"over":"tls"}')) < 0x80
        got = await receive(observer)
    assert got.payload == b'{"over":"tls"}'
    assert link.statistics().connects == 1


async def test_tls_link_never_falls_back_to_plaintext(tls_broker, tmp_path):
    """Pointed at the plaintext listener, or given a CA that did not sign the broker, the link
    keeps failing to connect: it never sends anything in the clear."""
    from tests.faults.tls import make_pki
    from uplink.mqtt import TlsSettings

    stranger = make_pki(tmp_path / "other", ca_name="other-ca")
    wrong_ca = tls_settings(
        tls_broker,
        "edge-wrong-ca",
        tls=TlsSettings(
            str(stranger.ca_file), str(tls_broker.pki.client_cert), str(tls_broker.pki.client_key)
        ),
    )
    plaintext_port = tls_settings(tls_broker, "edge-plain-port", port=tls_broker.plain_port)
    links = [MqttLink(wrong_ca), MqttLink(plaintext_port)]
    for link in links:
        link.start()
    try:
        await eventually(lambda: all(link.statistics().connect_failures >= 2 for link in links))
        assert not any(link.connected for link in links)
    finally:
        for link in links:
            await link.close()
    log_text = tls_broker.log_file.read_text()
    assert "edge-plain-port" not in log_text  # no MQTT CONNECT ever reached the broker


async def test_tls_without_client_certificate_or_with_a_wrong_password_is_refused(tls_broker):
    from uplink.mqtt import TlsSettings

    no_cert = tls_settings(
        tls_broker, "edge-no-cert", tls=TlsSettings(str(tls_broker.pki.ca_file))
    )
    bad_password = tls_settings(tls_broker, "edge-bad-password", password="wrong")
    links = [MqttLink(no_cert), MqttLink(bad_password)]
    for link in links:
        link.start()
    try:
        await eventually(lambda: all(link.statistics().connect_failures >= 1 for link in links))
        assert not any(link.statistics().connects for link in links)
    finally:
        for link in links:
            await link.close()


async def test_the_broker_probe_speaks_tls_with_the_link_s_certificates(tls_broker):
    """Over TLS the probe's answer is the broker's CONNACK after a verified handshake (it sends
    no credentials: the refusal is still an answer); a plaintext probe of the TLS port gets
    none."""
    import ssl

    from uplink.probe import broker_answers

    pki = tls_broker.pki
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    assert await broker_answers("127.0.0.1", tls_broker.tls_port, "probe-tls", tls=context)
    assert not await broker_answers("127.0.0.1", tls_broker.tls_port, "probe-plain", timeout_s=1)


class _CountingSocket:
    """Stands in for the write end of paho's wake-up socket pair, counting the writes."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.writes = 0

    def send(self, data: bytes) -> int:
        self.writes += 1
        return int(self.sock.send(data))

    def close(self) -> None:
        self.sock.close()


async def count_wakeups(link: MqttLink) -> _CountingSocket:
    client = link._client
    # Read from another thread: what paho's thread sees, the socket itself.
    counting = _CountingSocket(await asyncio.to_thread(lambda: client._sockpairW))
    client._sockpairW = counting
    return counting


async def test_a_burst_of_publishes_and_acks_from_the_loop_wakes_paho_s_thread_once(mosquitto):
    receiving = settings(mosquitto.port, "burst-receiver", subscriptions=("t/#",))
    async with (
        MqttLink(settings(mosquitto.port, "burst-sender")) as sender,
        # Receive Maximum 5: the broker delivers no more while 5 messages await a PUBACK.
        MqttLink(dataclasses.replace(receiving, inbound_queue_size=5)) as receiver,
    ):
        await connected(sender)
        await connected(receiver)
        await asyncio.sleep(0.05)  # let the SUBACK land before publishing
        publishes = await count_wakeups(sender)
        acks = await count_wakeups(receiver)
        # One turn of the loop: 20 packets queued (paho's own window: past 20 in flight it
        # holds the rest, and its thread sends them), one wake-up written when the turn ends.
        sent = [sender.send(OutgoingMessage("t/x", b"%d" % i)) for i in range(20)]
        assert publishes.writes == 0
        async with asyncio.timeout(10):
            codes = await asyncio.gather(*sent)
        assert codes == [0] * 20
        assert publishes.writes == 1
        sent = [sender.send(OutgoingMessage("t/x", b"%d" % i)) for i in range(20, 50)]
        async with asyncio.timeout(10):
            await asyncio.gather(*sent)

        # The PUBACKs of 5 messages acknowledged in one turn share a wake-up, and reach the
        # broker: otherwise it would stop delivering.
        received = []
        for _ in range(10):
            burst = [await receive(receiver) for _ in range(5)]
            for message in burst:
                receiver.acknowledge(message)
            received += burst
        assert [m.payload for m in received] == [b"%d" % i for i in range(50)]
    assert acks.writes <= 10


@pytest.mark.parametrize(
    ("broker_config", "window"),
    [((), 20), (("max_inflight_messages 0",), 65_535), (("max_inflight_messages 5",), 5)],
)
async def test_as_many_publishes_are_in_flight_as_the_broker_takes(broker_config, window):
    """The broker's Receive Maximum (mosquitto: `max_inflight_messages`, 20 by default, none
    when 0), not paho's fixed 20; past it the rest waits in paho, and all arrive."""
    with MosquittoBroker(extra_config=broker_config) as broker:
        async with MqttLink(settings(broker.port, "window")) as link:
            await connected(link)
            assert link._client._max_inflight_messages == window
            sent = [link.send(OutgoingMessage("t/x", b"%d" % i)) for i in range(60)]
            async with asyncio.timeout(10):
                assert await asyncio.gather(*sent) == [0x10] * 60
            assert link.connected and link.statistics().connection_losses == 0
