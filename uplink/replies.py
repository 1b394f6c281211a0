"""Command replies handed to the MQTT client a few at a time, so that ticket messages are not
queued behind a burst of them.

A broker lets a client have only a few QoS 1 messages in flight (mosquitto's receive maximum is
20 by default); the client queues the rest in the order they were published. A flood of
commands, almost all refused by the rate limit, gives one reply each: handed over at once,
thousands of replies sit in the client's queue and every ticket message published meanwhile
waits behind all of them (measured: 2 400 replies ahead, 0.9 s to its PUBACK, 1.9 s to the
central system's ack). Here at most `in_flight` replies are with the client at any time; the
others wait in order in a bounded queue of our own, so a ticket message never has more than
that many replies ahead of it.

The queue is bounded because a reply is worth little: the command was acknowledged already, and
a central system that gets no reply repeats the command. When it is full, the oldest waiting
reply is dropped (the newest answer the freshest commands), and a lost connection drops them all.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass

from gateway.core.errors import UplinkError
from uplink.mqtt import OutgoingMessage

log = logging.getLogger(__name__)

REPLIES_IN_FLIGHT = 16
REPLIES_WAITING = 10_000


@dataclass(frozen=True)
class PacedReply:
    message: OutgoingMessage
    on_sent: Callable[[], None]
    on_lost: Callable[[BaseException], None]


class ReplyPacer:
    """The replies of one MQTT link; `send` is the link's `send`."""

    def __init__(
        self,
        send: Callable[[OutgoingMessage], asyncio.Future[int]],
        *,
        in_flight: int = REPLIES_IN_FLIGHT,
        waiting: int = REPLIES_WAITING,
    ) -> None:
        if in_flight < 1 or waiting < 0:
            raise ValueError("a reply pacer needs at least one reply in flight")
        self._send = send
        self._in_flight_limit = in_flight
        self._waiting: collections.deque[PacedReply] = collections.deque()
        self._waiting_limit = waiting
        self._in_flight = 0
        self.dropped = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, reply: PacedReply) -> None:
        """Send now when fewer than `in_flight` replies are with the client, else queue."""
        if self._in_flight < self._in_flight_limit and not self._waiting:
            self._hand_over(reply)
            return
        if len(self._waiting) >= self._waiting_limit:
            oldest = self._waiting.popleft()
            self.dropped += 1
            oldest.on_lost(UplinkError(f"more than {self._waiting_limit} replies waiting"))
        self._waiting.append(reply)

    def _hand_over(self, reply: PacedReply) -> None:
        try:
            sent = self._send(reply.message)
        except UplinkError as exc:
            # Not connected: this one and every one waiting behind it is lost (the commands
            # were acknowledged; the central system repeats those it got no answer to).
            reply.on_lost(exc)
            self._drop_waiting(exc)
            return
        self._in_flight += 1

        def done(future: asyncio.Future[int]) -> None:
            self._in_flight -= 1
            if not future.cancelled():
                error = future.exception()
                if error is None:
                    reply.on_sent()
                else:
                    reply.on_lost(error)
            self._next()

        sent.add_done_callback(done)

    def _next(self) -> None:
        while self._waiting and self._in_flight < self._in_flight_limit:
            self._hand_over(self._waiting.popleft())

    def _drop_waiting(self, error: BaseException) -> None:
        waiting, self._waiting = self._waiting, collections.deque()
        self.dropped += len(waiting)
        for reply in waiting:
            reply.on_lost(error)
