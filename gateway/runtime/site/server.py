"""The site page's web server: routes, templates, static files, live updates, access control.
The only module that imports aiohttp and jinja2.

Why aiohttp: it serves on the daemon's own asyncio loop (an `AppRunner` started and stopped like
any other service, no thread, no second loop, no signal handlers of its own), has routing,
streaming responses for server-sent events and a graceful shutdown, and is a mature, actively
kept project already common on industrial Linux boxes (Home Assistant is built on it). An
ASGI stack (Starlette with uvicorn) can share the loop too, but brings a server meant to own the
process (signals, its own logging set-up) for what is a side service here. Jinja2 renders the
pages with autoescaping on, so a point name or a reason from a device is text, never markup.

Templates and static files are package data, read with importlib.resources once at start;
nothing is fetched from anywhere else (no CDN: the plant floor has no internet).

Access: read-only (GET and HEAD), no cookies, no forms. Bound to loopback without a password,
only requests naming a loopback host are answered (a web page elsewhere cannot read the plant's
data through DNS rebinding). With a password (required beyond loopback), every request needs
HTTP Basic credentials with that password; the browser resends them for the live updates.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import mimetypes
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jinja2
from aiohttp import web
from markupsafe import Markup

from gateway.config.models import is_loopback
from gateway.runtime.site import pages as fmt
from gateway.runtime.site.feeds import LiveFeeds, TooManyViewers
from gateway.runtime.site.pages import SitePages

log = logging.getLogger(__name__)

PACKAGE = "gateway.runtime.site"
KEEPALIVE_S = 25.0  # an SSE comment this often keeps proxies and tablets from idling out
MAX_KEY_CHARS = 300
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Page:
    """A page to render: its template, its title and the coroutine producing its values."""

    template: str
    title: str
    model: Callable[[], Awaitable[dict[str, Any] | None]]


class SitePageServer:
    """Serves the pages of `SitePages` on `host:port`; `start()` binds, `close()` stops."""

    def __init__(
        self,
        pages: SitePages,
        host: str,
        port: int,
        *,
        password: str | None = None,
        update_s: float = 2.0,
        max_viewers: int = 16,
    ) -> None:
        self.pages = pages
        self.host = host
        self.port = port
        self._password = password.encode() if password is not None else None
        self.feeds = LiveFeeds(self._render_live, update_s, max_viewers)
        self._env = _environment()
        self._static = _static_files()
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        self.refused = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        """Bind; raises `OSError` when the address cannot be used."""
        app = web.Application(middlewares=[self._guard], client_max_size=1024)
        app.router.add_get("/", self._respond)
        app.router.add_get("/tickets", self._respond)
        app.router.add_get("/device/{device}", self._respond)
        app.router.add_get("/vibration/{tag}", self._respond)
        app.router.add_get("/ticket/{ticket}", self._respond)
        app.router.add_get("/live", self._live)
        app.router.add_get("/static/{name}", self._static_file)
        # handler_cancellation: a closed tab ends its live stream at once (not at the next
        # write), so it stops counting against `max_viewers`.
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        if runner.addresses:  # the port actually bound (port 0: any free one)
            self.port = int(runner.addresses[0][1])
        access = (
            "password required (bound beyond loopback)"
            if self._password is not None and not is_loopback(self.host)
            else "password required"
            if self._password is not None
            else "loopback only, no password"
        )
        log.info("Site page on `%s` (read-only; %s).", self.url, access)

    async def close(self) -> None:
        if self._runner is None:
            return
        await self.feeds.close()
        for task in list(self._streams):
            task.cancel()
        await asyncio.gather(*self._streams, return_exceptions=True)
        await self._runner.cleanup()
        self._runner = None

    # -- access -----------------------------------------------------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning(
                    "Site page refused a request from `%s` (%s; %d refused so far).",
                    request.remote, refusal.reason, self.refused,
                )  # fmt: skip
            return refusal
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def _refusal(self, request: web.Request) -> web.Response | None:
        if self._password is None:
            try:
                host = request.url.host or ""
            except ValueError:  # a Host header that is no host name
                host = ""
            if host in LOOPBACK_HOSTS or host == self.host:
                return None
            return web.Response(status=421, reason="Misdirected Request",
                                text="this page answers on loopback names only\n")  # fmt: skip
        given = _password_of(request.headers.get("Authorization", ""))
        if given is not None and hmac.compare_digest(given, self._password):
            return None
        return web.Response(
            status=401,
            reason="Unauthorized",
            text="password required\n",
            headers={"WWW-Authenticate": 'Basic realm="edge-gateway site page", charset="UTF-8"'},
        )

    # -- pages ------------------------------------------------------------------------------

    def _page(self, request: web.Request) -> Page | None:
        return self._page_for(request.path, request.query.get("point"))

    def _page_for(self, path: str, point: str | None) -> Page | None:
        """The page a path names; None for an unknown page (404)."""
        pages = self.pages
        parts = path.strip("/").split("/")
        if path == "/":
            return Page("overview.html", "Overview", pages.overview)
        if parts == ["tickets"]:
            return Page("tickets.html", "Tickets", pages.tickets)
        if len(parts) != 2:
            return None
        kind, name = parts
        if kind == "device" and name in pages.devices:
            return Page("device.html", f"Device {name}", lambda: pages.device(name, point))
        if kind == "vibration" and name in pages.spectra:
            return Page("vibration.html", f"Vibration {name}", lambda: pages.vibration(name))
        if kind == "ticket" and is_ticket_id(name):
            return Page("ticket.html", f"Ticket {name}", lambda: pages.ticket(name))
        return None

    async def _respond(self, request: web.Request) -> web.Response:
        page = self._page(request)
        model = await page.model() if page is not None else None
        if page is None or model is None:
            return self._not_found()
        key = request.path + (f"?point={request.query['point']}" if "point" in request.query
                              else "")  # fmt: skip
        live = self._env.get_template(page.template).render({**self._common(), **model})
        html = self._env.get_template("page.html").render(
            self._common(), title=page.title, live=Markup(live), live_key=key
        )
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    def _common(self) -> dict[str, Any]:
        return {"site": self.pages.site, "gateway": self.pages.gateway,
                "nav_devices": list(self.pages.devices.values()),
                "nav_vibration": sorted(self.pages.spectra)}  # fmt: skip

    def _not_found(self) -> web.Response:
        html = self._env.get_template("page.html").render(
            self._common(), title="Not found", live=Markup("<p>No such page.</p>"), live_key=""
        )
        return web.Response(status=404, text=html, content_type="text/html", charset="utf-8")

    # -- live updates -----------------------------------------------------------------------

    def _live_page(self, key: str) -> Page | None:
        if len(key) > MAX_KEY_CHARS:
            return None
        parts = urlsplit(key)
        point = parse_qs(parts.query).get("point", [None])[0]
        return self._page_for(parts.path, point)

    async def _render_live(self, key: str) -> str:
        page = self._live_page(key)
        model = await page.model() if page is not None else None
        if page is None or model is None:
            return json.dumps({"gone": True})
        html = self._env.get_template(page.template).render({**self._common(), **model})
        return json.dumps({"html": html})

    async def _live(self, request: web.Request) -> web.StreamResponse:
        key = request.query.get("page", "")
        if self._live_page(key) is None:
            return web.Response(status=404, text="no such page\n")
        task = asyncio.current_task()
        try:
            async with self.feeds.watch(key) as updates:
                if task is not None:
                    self._streams.add(task)
                response = web.StreamResponse(
                    headers={
                        "Content-Type": "text/event-stream",
                        "X-Accel-Buffering": "no",
                        **SECURITY_HEADERS,
                    }
                )
                await response.prepare(request)
                await response.write(b"retry: 5000\n\n")
                with contextlib.suppress(ConnectionError):
                    while True:
                        try:
                            payload = await asyncio.wait_for(updates.get(), KEEPALIVE_S)
                        except TimeoutError:
                            await response.write(b": keepalive\n\n")
                            continue
                        if payload is None:
                            break
                        await response.write(f"data: {payload}\n\n".encode())
                return response
        except TooManyViewers as exc:
            return web.Response(status=503, text=f"{exc}\n", headers={"Retry-After": "30"})
        finally:
            if task is not None:
                self._streams.discard(task)

    async def _static_file(self, request: web.Request) -> web.Response:
        found = self._static.get(request.match_info["name"])
        if found is None:
            return web.Response(status=404, text="not found\n")
        body, content_type = found
        return web.Response(body=body, content_type=content_type)


def is_ticket_id(name: str) -> bool:
    """A ticket id as the gateway makes them (letters, digits, `_`, `-`)."""
    return 0 < len(name) <= 200 and all(c.isalnum() or c in "-_" for c in name) and name.isascii()


def _password_of(header: str) -> bytes | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    _, sep, password = decoded.partition(b":")
    return password if sep else None


def _environment() -> jinja2.Environment:
    folder = resources.files(PACKAGE) / "templates"
    sources = {
        item.name: item.read_text(encoding="utf-8")
        for item in folder.iterdir()
        if item.name.endswith(".html")
    }
    env = jinja2.Environment(
        loader=jinja2.DictLoader(sources),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=fmt.when, duration=fmt.duration, number=fmt.number, bytes=fmt.byte_count,
        svg=lambda markup: Markup(markup) if markup else "",  # our own escaped SVG (charts.py)
        pretty=lambda value: json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False),
    )  # fmt: skip
    return env


def _static_files() -> Mapping[str, tuple[bytes, str]]:
    folder = resources.files(PACKAGE) / "static"
    out = {}
    for item in folder.iterdir():
        content_type = mimetypes.guess_type(item.name)[0] or "application/octet-stream"
        out[item.name] = (item.read_bytes(), content_type)
    return out
