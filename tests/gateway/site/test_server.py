"""The site page's server on a real loopback socket: pages, access control, live updates.

The data sources are small in-memory stand-ins with the shapes the daemon gives (the health
report, the newest samples, open tickets; tests/gateway/site/sources.py); the browser test
(tests/test_site_page.py) runs the same server in the demo plant."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.core.records import Quality, Sample
from gateway.runtime.site.live_values import LiveValues
from gateway.runtime.site.server import SitePageServer

from .sources import NOW, TICKET, make_server


@pytest.fixture
def live() -> LiveValues:
    values = LiveValues()
    values.add([
        Sample("press-3.oil_temp", NOW - 1, 41.5, source_ts=NOW - 1.2),
        Sample("press-3.mode", NOW - 1, 1.0),
        Sample("press-3.pressure", NOW - 1, 3.0, quality=Quality.BAD,
               reason="exception code 2 (illegal data address)"),
    ])  # fmt: skip
    return values


@pytest.fixture
async def server(tmp_path: Path, live: LiveValues) -> AsyncIterator[SitePageServer]:
    page = make_server(tmp_path, live, update_s=0.05)
    await page.start()
    yield page
    await page.close()


async def test_overview_lists_devices_with_quality_counts_and_tickets_with_deadlines(server, http):
    async with http.get(server.url) as reply:
        assert reply.status == 200
        html = await reply.text()
        assert "default-src 'none'" in reply.headers["Content-Security-Policy"]
    assert 'data-device="press-3" data-state="polling"' in html
    assert '<td class="num bad" data-count="bad">1</td>' in html
    assert 'data-ticket="T-plant-a-edge-01-20260101-0001"' in html
    assert "late by 1 min 00 s" in html  # respond-by passed a minute ago, no acknowledgement
    assert "disconnected" in html and "<b id=\"outbox-depth\">7</b>" in html
    assert "threshold:hot" in html  # the open condition


async def test_device_page_shows_values_enum_labels_quality_and_reasons(server, http):
    async with http.get(f"{server.url}device/press-3?point=oil_temp") as reply:
        html = await reply.text()
    assert reply.status == 200
    assert "41.5 degC" in html
    assert '<td>auto</td>' in html
    assert 'data-point="pressure" data-quality="BAD"' in html
    assert "exception code 2 (illegal data address)" in html
    assert '<svg class="chart trend"' in html


async def test_ticket_page_has_its_timeline_with_actors_and_the_evidence_sent(server, http):
    async with http.get(f"{server.url}ticket/{TICKET.id}") as reply:
        html = await reply.text()
    assert reply.status == 200
    assert 'data-revision="2" data-kind="shelved"' in html
    assert "<td>anna</td>" in html and "<td>gateway</td>" in html
    assert "&#34;peak&#34;: 97.0" in html or '"peak": 97.0' in html
    assert "No spectrum kept for this ticket" in html


@pytest.mark.parametrize(
    "path", ["device/nope", "ticket/T-unknown", "ticket/..%2F..%2Fetc", "vibration/x.y", "x"]
)
async def test_unknown_pages_are_404(server, http, path: str):
    async with http.get(f"{server.url}{path}") as reply:
        assert reply.status == 404


async def test_the_page_is_read_only(server, http):
    async with http.post(server.url, data=b"x") as reply:
        assert reply.status == 405


async def test_without_a_password_only_loopback_host_names_are_answered(server, http):
    async with http.get(server.url, headers={"Host": "attacker.example"}) as reply:
        assert reply.status == 421
    async with http.get(server.url, headers={"Host": f"localhost:{server.port}"}) as reply:
        assert reply.status == 200


async def test_with_a_password_every_request_needs_it(tmp_path, live, http, caplog):
    page = make_server(tmp_path, live, password="s3cret")
    with caplog.at_level(logging.INFO):
        await page.start()
    try:
        assert "password required" in caplog.text
        async with http.get(page.url) as reply:
            assert reply.status == 401 and "Basic" in reply.headers["WWW-Authenticate"]
        wrong = base64.b64encode(b"site:guess").decode()
        async with http.get(page.url, headers={"Authorization": f"Basic {wrong}"}) as reply:
            assert reply.status == 401
        right = base64.b64encode(b"anyone:s3cret").decode()
        headers = {"Authorization": f"Basic {right}", "Host": "gateway.plant.example"}
        async with http.get(page.url, headers=headers) as reply:
            assert reply.status == 200
        async with http.get(f"{page.url}live?page=/", headers={"Host": "x"}) as reply:
            assert reply.status == 401
    finally:
        await page.close()


async def read_event(reply: aiohttp.ClientResponse, within_s: float = 5.0) -> str:
    async with asyncio.timeout(within_s):
        while True:
            line = (await reply.content.readline()).decode()
            if line.startswith("data: "):
                return line[len("data: "):]


async def test_live_updates_follow_the_values_and_stop_when_nobody_watches(server, live, http):
    assert server.feeds.renders == 0  # nobody looking: nothing rendered
    url = f"{server.url}live?page=/device/press-3"
    async with http.get(url) as first, http.get(url) as second:
        assert first.headers["Content-Type"] == "text/event-stream"
        assert "41.5 degC" in await read_event(first)
        assert "41.5 degC" in await read_event(second)
        live.add([Sample("press-3.oil_temp", NOW, 55.25)])
        assert "55.25 degC" in await read_event(first)
        assert "55.25 degC" in await read_event(second)
        renders = server.feeds.renders
        assert server.feeds.viewers == 2
    # Both viewers shared one feed: at most one render per period, not one per viewer.
    for _ in range(100):
        if server.feeds.viewers == 0:
            break
        await asyncio.sleep(0.02)
    assert server.feeds.viewers == 0
    after = server.feeds.renders
    await asyncio.sleep(0.1)  # two periods of 0.05 s
    assert server.feeds.renders == after, "a feed kept rendering with nobody watching"
    assert renders >= 2


async def test_an_unchanged_page_sends_no_update(server, http):
    async with http.get(f"{server.url}live?page=/tickets") as reply:
        await read_event(reply)
        before = server.feeds.renders
        with pytest.raises(TimeoutError):
            await read_event(reply, within_s=0.1)
        assert server.feeds.renders > before  # it looked, found nothing new and sent nothing


async def test_viewers_beyond_the_limit_are_told_to_come_back(tmp_path, live, http):
    page = make_server(tmp_path, live, update_s=0.05, max_viewers=1)
    await page.start()
    try:
        async with http.get(f"{page.url}live?page=/") as first:
            await read_event(first)
            async with http.get(f"{page.url}live?page=/") as second:
                assert second.status == 503 and second.headers["Retry-After"] == "30"
        async with http.get(f"{page.url}live?page=/nope") as unknown:
            assert unknown.status == 404
    finally:
        await page.close()


async def test_static_files_come_from_the_package(server, http):
    async with http.get(f"{server.url}static/site.css") as reply:
        assert reply.status == 200 and reply.content_type == "text/css"
    async with http.get(f"{server.url}static/live.js") as reply:
        assert reply.status == 200 and "EventSource" in await reply.text()
    async with http.get(f"{server.url}static/..%2Fserver.py") as reply:
        assert reply.status == 404
