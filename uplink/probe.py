"""Does the broker answer? A cheap end-to-end probe of the MQTT endpoint.

A TCP connect proves little: a proxy, a NAT box or a VPN concentrator in between accepts it
even while the path behind it is a black hole. So the probe asks the broker itself: it opens a
fresh connection (with TLS when the link uses it), sends a minimal MQTT 5 CONNECT with its own
client id and a clean start, and waits for any CONNACK. A refusal (bad credentials, not
authorised) is still an answer: the broker is there. Then DISCONNECT, nothing else. No paho:
one CONNECT packet is all it takes, and the probe must not disturb the link's own session.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

CONNACK = 0x20
DISCONNECT = b"\xe0\x00"  # MQTT 5: normal disconnection, no properties


def connect_packet(client_id: str, keepalive_s: int = 10) -> bytes:
    """MQTT 5 CONNECT: protocol `MQTT` level 5, clean start, no properties, no will, no login."""
    ident = client_id.encode("utf-8")
    variable = (
        b"\x00\x04MQTT\x05\x02"
        + keepalive_s.to_bytes(2, "big")
        + b"\x00"  # no properties
        + len(ident).to_bytes(2, "big")
        + ident
    )
    return b"\x10" + _remaining_length(len(variable)) + variable


def _remaining_length(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


async def broker_answers(
    host: str,
    port: int,
    client_id: str,
    *,
    tls: ssl.SSLContext | None = None,
    timeout_s: float = 2.0,
) -> bool:
    """True when the broker answered a CONNECT within `timeout_s`; never raises for a
    network failure (that is a False)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host if tls is not None else None
            )
            writer.write(connect_packet(client_id))
            await writer.drain()
            first = await reader.read(1)
            answered = first[:1] == bytes([CONNACK])
            if answered:
                writer.write(DISCONNECT)
                await writer.drain()
            return answered
    except (TimeoutError, OSError, ssl.SSLError):
        return False
    finally:
        if writer is not None:
            writer.transport.abort()  # no lingering close handshake through a dead path
            with contextlib.suppress(OSError):  # reset by the other side: closed anyway
                await writer.wait_closed()
