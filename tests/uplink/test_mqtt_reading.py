"""How `uplink.mqtt`'s client reads packets off its socket: what the socket has in one system
call, every packet in it handed on before paho's thread goes back to sleep, none of it kept for
another connection."""

from typing import Any

from uplink import mqtt


class ScriptedSocket:
    """A socket that gives its chunks one `recv` at a time (at most what is asked for), then
    has nothing more to read."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.reads = 0

    def recv(self, size: int) -> bytes:
        self.reads += 1
        if not self.chunks:
            raise BlockingIOError
        chunk = self.chunks.pop(0)
        if len(chunk) > size:
            self.chunks.insert(0, chunk[size:])
            chunk = chunk[:size]
        return chunk

    def close(self) -> None:
        self.chunks = []


def publish_packet(topic: str, mid: int, payload: bytes) -> bytes:
    """A QoS 1 MQTT 5 PUBLISH without properties (3.3)."""
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name + mid.to_bytes(2, "big") + b"\x00" + payload
    assert len(body) < 128  # one byte of remaining length
    return bytes([0x32, len(body)]) + body


def client_on(sock: ScriptedSocket) -> tuple[Any, list[tuple[str, int, bytes]]]:
    client = mqtt._Client(
        min_delay_s=0.1,
        max_delay_s=1.0,
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id="reader",
        protocol=mqtt.MQTTProtocolVersion.MQTTv5,
        manual_ack=True,
    )
    received: list[tuple[str, int, bytes]] = []
    client.on_message = lambda _client, _userdata, m: received.append((m.topic, m.mid, m.payload))
    client._sock = sock
    return client, received


def test_a_burst_of_packets_is_read_in_one_call_and_handed_on_whole():
    stream = b"".join(publish_packet("t/x", mid, b"p%d" % mid) for mid in range(1, 6))
    # The last packet arrives in two pieces, as TCP may cut it.
    sock = ScriptedSocket(stream[:-3], stream[-3:])
    client, received = client_on(sock)

    assert client.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    assert received == [("t/x", mid, b"p%d" % mid) for mid in range(1, 6)]
    assert sock.reads <= 3  # paho alone: three per packet at least


def test_what_was_read_on_one_connection_is_not_served_on_the_next():
    name = b"t/x"
    # Property 0x7f does not exist: paho drops the connection as a protocol error, with the
    # packet after it read already.
    body = len(name).to_bytes(2, "big") + name + b"\x00\x01" + b"\x02\x7f\x00"
    malformed = bytes([0x32, len(body)]) + body
    old = ScriptedSocket(malformed + publish_packet("t/x", 2, b"stale"))
    client, received = client_on(old)
    assert client.loop_read() != mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert received == []

    client._sock = ScriptedSocket(publish_packet("t/y", 3, b"fresh"))
    client.loop_read()

    assert received == [("t/y", 3, b"fresh")]
