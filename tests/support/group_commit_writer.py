"""A process that commits ticket changes in bursts while its uplink publishes them, for the
SIGKILL test of group commits (tests/store/test_group_commit_crash.py).

    python -m tests.support.group_commit_writer STATE_DB BROKER_PORT FIRST_NUMBER

Each burst submits `BURST` ticket changes (a new ticket, its `opened` event and message) at
once, so they share group commits; once every change of the burst returned, i.e. is durable,
their event ids are printed, one `acked <event_id>` line each: what a caller was told is
committed. Runs until killed.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

from gateway.store import StateDatabase
from tests.faults.support import make_uplink
from tests.uplink.helpers import GATEWAY, SITE, TOPICS, make_event, make_ticket, running
from uplink.events import make_ticket_encoder, source_urn

BURST = 8


async def main(path: Path, port: int, first: int) -> None:
    state = await StateDatabase.open(path)
    encode = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), state.outbox.next_sequence)
    numbers = itertools.count(first)
    async with running(make_uplink(state, port).run_uplink(), "uplink"):
        while True:
            writes, ids = [], []
            for number in itertools.islice(numbers, BURST):
                ticket = make_ticket(f"T-{number:06d}", key=f"{SITE}/pump-{number}/t/d")
                event = make_event("opened", ticket.id)
                message = encode(ticket, event)
                ids.append(message.event_id)
                writes.append(state.tickets.commit_ticket_change(ticket, [event], [message]))
            await asyncio.gather(*writes)
            sys.stdout.write("".join(f"acked {event_id}\n" for event_id in ids))
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
