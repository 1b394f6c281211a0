"""The PUBLISH properties as `uplink.mqtt` packs them: the bytes MQTT 5 (3.3.2.3) and paho's own
`Properties.pack()` give for the same values, and a property MQTT cannot carry refused as the
message's fault, not raised from the depths of paho."""

import asyncio

import pytest

from uplink import mqtt
from uplink.mqtt import (
    LinkSettings,
    MessageProperties,
    MqttLink,
    OutgoingMessage,
    PublishRejected,
)

CASES = [
    MessageProperties(),
    MessageProperties(utf8_payload=True),
    MessageProperties(content_type="application/json", utf8_payload=True),
    MessageProperties(message_expiry_s=0),
    MessageProperties(message_expiry_s=2**32 - 1),
    MessageProperties(
        content_type="application/cloudevents+json; charset=utf-8",
        user_properties=(("id", "9f2c"), ("type", "com.edge-gateway.ticket.opened"), ("id", "")),
        message_expiry_s=3600,
        utf8_payload=True,
    ),
    MessageProperties(
        content_type="application/json",
        response_topic="factory/central/replies/ü",
        correlation_data=b"\x00\xff" * 300,
        user_properties=(("température", "92 °C"), ("revision", "12")),
        message_expiry_s=86_400,
        utf8_payload=True,
    ),
    # Long enough that the property length needs two bytes of its variable byte integer.
    MessageProperties(user_properties=tuple((f"k{i}", "v" * 40) for i in range(10))),
    MessageProperties(correlation_data=b""),
    MessageProperties(response_topic=""),
]


@pytest.mark.parametrize("props", CASES)
def test_packed_as_paho_packs_the_same_values(props):
    ours = mqtt._PublishProperties(props)
    paho = mqtt._to_paho_properties(mqtt.PacketTypes.PUBLISH, props)

    assert ours.pack() == (paho.pack() if paho is not None else b"\x00")


def test_a_property_longer_than_mqtt_allows_is_refused():
    with pytest.raises(ValueError, match="65535"):
        mqtt._PublishProperties(MessageProperties(content_type="x" * 65_536))
    with pytest.raises(ValueError, match="65535"):
        mqtt._PublishProperties(MessageProperties(correlation_data=bytes(65_536)))


@pytest.mark.broker
async def test_publishing_an_oversized_property_raises_publish_rejected(mosquitto):
    settings = LinkSettings("127.0.0.1", mosquitto.port, "oversized", reconnect_min_s=0.05)
    async with MqttLink(settings) as link:
        async with asyncio.timeout(10):
            await link.wait_connected()
        too_long = MessageProperties(user_properties=(("note", "x" * 70_000),))
        with pytest.raises(PublishRejected, match="cannot publish"):
            link.send(OutgoingMessage("t/x", b"{}", properties=too_long))
        # The link is unharmed: the next message goes out.
        assert await link.publish(OutgoingMessage("t/x", b"{}")) == 0x10


def _publish_body(topic: str, mid: int | None, properties: bytes, payload: bytes) -> bytes:
    """A PUBLISH's variable header and payload (MQTT 5, 3.3.2): topic, packet id (QoS > 0),
    properties."""
    name = topic.encode()
    packet_id = b"" if mid is None else mid.to_bytes(2, "big")
    return len(name).to_bytes(2, "big") + name + packet_id + properties + payload


def _paho_reads(properties: bytes) -> MessageProperties:
    """What paho's own reader makes of packed PUBLISH properties, in our values."""
    read = mqtt.Properties(mqtt.PacketTypes.PUBLISH)
    read.unpack(properties)
    return mqtt._from_paho_properties(read)


@pytest.mark.parametrize("props", CASES)
@pytest.mark.parametrize(("header", "mid"), [(0x30, None), (0x32, 4711)])
def test_a_publish_is_read_as_packed_and_as_paho_reads_it(props, header, mid):
    packed = mqtt._PublishProperties(props).pack()
    body = _publish_body("factory/plant-a/gw-1/cmd/ack", mid, packed, b'{"a": 1}')

    read = mqtt._decode_publish(header, bytearray(body))

    assert read is not None
    assert read.properties == props == _paho_reads(packed)
    assert read.topic == b"factory/plant-a/gw-1/cmd/ack"
    assert read.mid == (mid or 0)
    assert read.payload == b'{"a": 1}'


def _raw_properties(*fields: bytes) -> bytes:
    body = b"".join(fields)
    assert len(body) < 128
    return bytes([len(body)]) + body


@pytest.mark.parametrize(
    ("header", "properties", "why"),
    [
        (0x34, b"\x00", "QoS 2 is paho's (PUBREC, PUBREL)"),
        (0x32, _raw_properties(b"\x23\x00\x01"), "a topic alias"),
        (0x32, _raw_properties(b"\x0b\x05"), "a subscription identifier"),
        (0x32, _raw_properties(b"\x03\x00\x01a", b"\x03\x00\x01b"), "content type twice"),
        (0x32, _raw_properties(b"\x01\x01", b"\x01\x00"), "payload format indicator twice"),
        (0x32, _raw_properties(b"\x03\x00\x03a\x00b"), "U+0000 in a string (1.5.4-2)"),
        (0x32, _raw_properties(b"\x03\x00\x05\xef\xbb\xbfab"), "U+FEFF in a string (1.5.4-3)"),
        (0x32, _raw_properties(b"\x03\x00\x02\xff\xfe"), "not UTF-8"),
        (0x32, _raw_properties(b"\x03\x00\x09abc"), "a string past the properties"),
        (0x32, b"\x05\x02\x00\x00", "the properties past the packet"),
        (0x32, b"\xff\xff\xff\xff\x7f", "a property length of five bytes"),
    ],
)
def test_a_publish_the_fast_reader_does_not_vouch_for_is_left_to_paho(header, properties, why):
    assert mqtt._decode_publish(header, _publish_body("t/x", 1, properties, b"")) is None, why


def test_user_properties_may_repeat_and_keep_their_order():
    packed = _raw_properties(b"\x26\x00\x01k\x00\x01a", b"\x26\x00\x01k\x00\x01b")
    read = mqtt._decode_publish(0x32, _publish_body("t/x", 1, packed, b""))

    assert read is not None
    expected = (("k", "a"), ("k", "b"))
    assert read.properties.user_properties == expected == _paho_reads(packed).user_properties


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\x00\x07", (7, 0x00)),  # reason code left out: success (MQTT 5, 3.4.2.1)
        (b"\x01\x00\x10", (256, 0x10)),  # no matching subscribers
        (b"\x00\x07\x87\x00", (7, 0x87)),  # not authorised, property length 0
        (b"\x00\x07\x87\x04\x1f\x00\x01x", None),  # a reason string: paho's to read
        (b"\x00", None),
    ],
)
def test_a_puback_without_properties_is_read_here(body, expected):
    assert mqtt._decode_puback(bytearray(body)) == expected


def test_a_puback_reason_is_pahos_and_made_once():
    first = mqtt._puback_reason(0x87)

    assert first is not None and (first.value, first.getName()) == (0x87, "Not authorized")
    assert mqtt._puback_reason(0x87) is first
    assert mqtt._puback_reason(0x05) is None  # not a PUBACK reason code
