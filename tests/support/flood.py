"""A central system gone wrong, as a process of its own: `python -m tests.support.flood` publishes
a burst of commands from one actor as fast as the broker takes them and counts the replies.
Prints `started` when it begins, then one JSON line with the counts and wall-clock times.
Used by tests/support/command_burst.py (the gateway side must not share its event loop)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from tests.uplink.helpers import TOPICS
from uplink.mqtt import LinkSettings, MessageProperties, MqttLink, OutgoingMessage

REPLY_TOPIC = "flood/replies"


async def flood(port: int, count: int, verb: str, actor: str) -> dict[str, float]:
    counts = {"replies": 0, "accepted": 0, "rate_limited": 0, "busy": 0}
    last_reply = 0.0
    done = asyncio.Event()
    settings = LinkSettings("127.0.0.1", port, "flooder", subscriptions=(REPLY_TOPIC,),
                            clean_start=True, inbound_queue_size=65_535)  # fmt: skip
    async with MqttLink(settings) as link:
        async with asyncio.timeout(10):
            await link.wait_connected()

        async def replies() -> None:
            nonlocal last_reply
            while True:
                message = await link.receive()
                document = json.loads(message.payload)
                counts["replies"] += 1
                counts["accepted"] += bool(document["accepted"])
                counts["rate_limited"] += document["reason"].startswith("rate limited")
                counts["busy"] += document["reason"].startswith("busy")
                last_reply = time.time()
                link.acknowledge(message)
                if counts["replies"] >= count:
                    done.set()

        task = asyncio.create_task(replies(), name="flood.replies")
        print("started", flush=True)
        first_sent = time.time()
        pending: list[asyncio.Future[int]] = []
        for n in range(count):
            body = {"command_id": f"f-{n}", "actor": actor, "asset": "pump-0"}
            props = MessageProperties(response_topic=REPLY_TOPIC, correlation_data=b"%d" % n)
            payload = json.dumps(body).encode()
            pending.append(link.send(OutgoingMessage(TOPICS.cmd(verb), payload, properties=props)))
            if len(pending) >= 500:  # paho queues without bound; keep in step with the broker
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        sent_all = time.time()
        await done.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return {**counts, "first_sent": first_sent, "sent_all": sent_all, "last_reply": last_reply}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--verb", default="snapshot")
    parser.add_argument("--actor", default="flood")
    args = parser.parse_args()
    result = asyncio.run(flood(args.port, args.count, args.verb, args.actor))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
