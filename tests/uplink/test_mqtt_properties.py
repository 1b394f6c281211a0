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
