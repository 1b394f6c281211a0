"""Live updates of the site page are bounded in rate (issue 16, item 5; docs/SITE_PAGE.md, How
it works): a watched page gets at most one update per `update_s` however fast its values
change, and a page nobody watches is never rendered.

A real server on loopback, real server-sent events read with aiohttp; values are fed 200 times
a second, far faster than the page may update."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from gateway.core.records import Sample
from gateway.runtime.site.live_values import LiveValues
from gateway.runtime.site.server import SitePageServer

from .sources import NOW, Telemetry, make_pages, report

UPDATE_S = 0.5  # the shortest period `site_page.update_s` accepts
WATCH_S = 2.6
FEED_EVERY_S = 0.005


@contextlib.asynccontextmanager
async def fast_values(live: LiveValues) -> AsyncIterator[list[float]]:
    """Feeds a new `press-3.oil_temp` every `FEED_EVERY_S`; yields the values fed so far."""
    fed: list[float] = []

    async def feed() -> None:
        while True:
            value = 40.0 + len(fed) * 0.01
            live.add([Sample("press-3.oil_temp", NOW, value)])
            fed.append(value)
            await asyncio.sleep(FEED_EVERY_S)

    task = asyncio.create_task(feed(), name="test.fast-values")
    try:
        yield fed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def events(reply: aiohttp.ClientResponse, seconds: float) -> list[tuple[float, str]]:
    """(arrival time, data) of each server-sent event within `seconds`."""
    loop = asyncio.get_running_loop()
    out: list[tuple[float, str]] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                line = (await reply.content.readline()).decode()
                if line.startswith("data: "):
                    out.append((loop.time(), line[len("data: ") :]))
    return out


def oil_temp(data: str) -> float:
    html = json.loads(data)["html"]
    found = re.search(r"(\d+(?:\.\d+)?) degC", html)
    assert found is not None, html
    return float(found.group(1))


class Counted:
    """The overview's health report, counting how often it is read."""

    def __init__(self) -> None:
        self.reads = 0

    async def __call__(self) -> dict[str, Any]:
        self.reads += 1
        return await report()


class CountedTelemetry(Telemetry):
    """telemetry.db, counting the trend reads a device page makes each time it is drawn."""

    def __init__(self) -> None:
        self.reads = 0

    async def read_samples(self, tag: str, start: float, end: float) -> list[Sample]:
        self.reads += 1
        return await super().read_samples(tag, start, end)


async def test_a_watched_page_gets_at_most_one_update_per_period_however_fast_values_come(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    live, overview, telemetry = LiveValues(), Counted(), CountedTelemetry()
    pages = make_pages(tmp_path, live, report=overview, telemetry=telemetry)
    server = SitePageServer(pages, "127.0.0.1", 0, update_s=UPDATE_S)
    await server.start()
    try:
        url = f"{server.url}live?page=/device/press-3"
        async with fast_values(live) as fed:
            # Nobody looks for longer than a period: nothing is rendered.
            await asyncio.sleep(1.5 * UPDATE_S)
            assert server.feeds.renders == telemetry.reads == overview.reads == 0
            assert len(fed) > 50
            async with http.get(url) as first, http.get(url) as second:
                got = await asyncio.gather(events(first, WATCH_S), events(second, WATCH_S))
            fed_while_watched = len(fed)
        renders = server.feeds.renders
    finally:
        await server.close()

    most = int(WATCH_S / UPDATE_S) + 1  # the first at once, then one per period
    for received in got:
        times = [t for t, _ in received]
        # Each render differs from the last (values changed in between), so each one is sent:
        # as many updates as the periods allow, and no more.
        assert most - 1 <= len(received) <= most, times
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) > 0.75 * UPDATE_S, gaps  # arrival jitter aside, a period apart
        values = [oil_temp(data) for _, data in received]
        assert values == sorted(values) and len(set(values)) == len(values), values
    # Hundreds of values, a handful of renders, shared by both viewers of the page.
    assert fed_while_watched > 10 * most
    assert most - 1 <= renders <= most
    assert telemetry.reads == renders  # one trend read per render, none per viewer
    # The overview was not watched: its data was never read to render it.
    assert overview.reads == 0


async def test_each_page_is_bounded_on_its_own_and_an_unwatched_page_is_not_rendered(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    live, overview = LiveValues(), Counted()
    pages = make_pages(tmp_path, live, report=overview)
    server = SitePageServer(pages, "127.0.0.1", 0, update_s=UPDATE_S)
    await server.start()
    try:
        device = f"{server.url}live?page=/device/press-3"
        trend = f"{server.url}live?page=/device/press-3?point=oil_temp"
        async with fast_values(live), http.get(device) as one, http.get(trend) as other:
            got = await asyncio.gather(events(one, WATCH_S), events(other, WATCH_S))
        renders = server.feeds.renders
    finally:
        await server.close()
    most = int(WATCH_S / UPDATE_S) + 1
    for received in got:
        assert most - 1 <= len(received) <= most, [t for t, _ in received]
    assert 2 * (most - 1) <= renders <= 2 * most
    assert overview.reads == 0
