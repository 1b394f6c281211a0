"""Live updates of the site page, bounded in rate and shared between viewers.

One feed per page (`overview`, `device/pump-1?point=bearing_temp`, ...). A feed runs only while
at least one browser watches it: it renders the page's live part at most once per `period_s`,
whatever the number of viewers, and passes it on only when it changed. Nobody watching means
no task and no work. Each viewer holds at most one pending update (the newest replaces an
older one), so a slow tablet on a weak Wi-Fi link never makes the gateway queue data for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from gateway.core.errors import GatewayError

log = logging.getLogger(__name__)


class TooManyViewers(Exception):
    """The page's viewer limit is reached; the caller answers 503."""


@dataclass
class _Feed:
    key: str
    viewers: set[asyncio.Queue[str | None]] = field(default_factory=set)
    last: str | None = None
    task: asyncio.Task[None] | None = None
    failing: bool = False


class LiveFeeds:
    def __init__(
        self, render: Callable[[str], Awaitable[str]], period_s: float, max_viewers: int
    ) -> None:
        self._render = render
        self.period_s = period_s
        self.max_viewers = max_viewers
        self._feeds: dict[str, _Feed] = {}
        self.renders = 0  # live parts rendered, for the tests and the benchmark

    @property
    def viewers(self) -> int:
        return sum(len(feed.viewers) for feed in self._feeds.values())

    @contextlib.asynccontextmanager
    async def watch(self, key: str) -> AsyncIterator[asyncio.Queue[str | None]]:
        """A queue receiving the live part of page `key` whenever it changes (None: the feed
        ended). Raises `TooManyViewers` beyond `max_viewers`."""
        if self.viewers >= self.max_viewers:
            raise TooManyViewers(f"{self.max_viewers} pages already receive live updates")
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = _Feed(key)
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1)
        feed.viewers.add(queue)
        if feed.last is not None:
            queue.put_nowait(feed.last)  # a reconnecting browser gets the current state
        if feed.task is None:
            feed.task = asyncio.create_task(self._run(feed), name=f"site-page.feed[{key}]")
        try:
            yield queue
        finally:
            feed.viewers.discard(queue)
            if not feed.viewers:
                await self._stop(feed)

    async def close(self) -> None:
        """End every feed; each viewer's queue receives None."""
        for feed in list(self._feeds.values()):
            for queue in feed.viewers:
                _offer(queue, None)
            await self._stop(feed)

    async def _stop(self, feed: _Feed) -> None:
        if self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]
        task, feed.task = feed.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, feed: _Feed) -> None:
        while True:
            try:
                self.renders += 1
                payload = await self._render(feed.key)
            except GatewayError as exc:  # a store refusing a read: try again next period
                if not feed.failing:
                    log.warning("Site page `%s` not updated: %s", feed.key, exc)
                feed.failing = True
            except Exception:
                # A bug in the page: its viewers stop receiving updates, the plant goes on.
                log.exception("Site page `%s` failed; its live updates stop.", feed.key)
                for queue in feed.viewers:
                    _offer(queue, None)
                return
            else:
                if feed.failing:
                    log.info("Site page `%s` updated again.", feed.key)
                    feed.failing = False
                if payload != feed.last:
                    feed.last = payload
                    for queue in feed.viewers:
                        _offer(queue, payload)
            await asyncio.sleep(self.period_s)


def _offer(queue: asyncio.Queue[str | None], item: str | None) -> None:
    """Put `item`, replacing an update the viewer has not taken yet."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)
