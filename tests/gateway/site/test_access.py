"""Who may open the site page: loopback by default; beyond loopback only with the password from
`site_page.password_file`, which `check-config` requires and the log names (issue 16: "If the
page can be bound beyond loopback, it then needs a token or password from a file, and says so
in the log"; docs/SITE_PAGE.md, Turning it on).

The page is started as the daemon starts it (`gateway/assembly/site.py` with the loaded
gateway.yaml) on a real socket; requests are real HTTP to 127.0.0.1. Which address the socket is
bound to is read from the kernel (/proc/net/tcp), not from the server's own idea of it."""

from __future__ import annotations

import base64
import logging
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from gateway.assembly.site import SitePage, start_site_page
from gateway.config.loader import LoadedConfig, load_config
from gateway.config.models import SitePageConfig, is_loopback
from gateway.core.clock import SystemClock
from gateway.core.errors import ConfigError

from .sources import History, Telemetry, Tickets, report

PASSWORD = "s3cret-42"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def free_port(host: str = "0.0.0.0") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def site(tmp_path: Path, site_page: str, password: bytes | None = None) -> Path:
    """A gateway.yaml with no device and the given `site_page:` lines, beside a password file
    `page.password` holding `password` (none when None)."""
    (tmp_path / "gateway.yaml").write_text(
        "site: plant-a\ngateway_id: edge-01\ndevices: []\n"
        f"storage:\n  directory: state\nsite_page:\n{site_page}",
        encoding="utf-8",
    )
    if password is not None:
        (tmp_path / "page.password").write_bytes(password)
    return tmp_path / "gateway.yaml"


def listeners(port: int) -> set[str]:
    """The local addresses the kernel has a TCP socket listening on `port` at, as
    `127.0.0.1` or `0.0.0.0` (IPv4) and `::1` or `::` (IPv6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:  # a kernel without IPv6
            continue
        for line in lines:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            # The kernel writes each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, width, 8))
            family = socket.AF_INET if width == 8 else socket.AF_INET6
            found.add(socket.inet_ntop(family, raw))
    return found


async def start(loaded: LoadedConfig) -> SitePage | None:
    """The page as the daemon starts it, on stand-ins of its data sources."""
    return await start_site_page(
        loaded,
        SystemClock(),
        health=SimpleNamespace(collect=report),
        devices=[],
        detectors=[],
        telemetry=Telemetry(),
        state=SimpleNamespace(tickets=History(), outbox=History()),
        tickets=Tickets(),
    )


# --- check-config --------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.10.5", "::", "gateway.plant-a.example"])
def test_a_page_bound_beyond_loopback_without_a_password_file_is_a_config_error(
    tmp_path: Path, host: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(site(tmp_path, f"  port: 8080\n  host: '{host}'\n"))
    [problem] = raised.value.problems
    assert problem.file.endswith("gateway.yaml") and problem.path == "site_page"
    assert f"`{host}`" in problem.message and "`password_file`" in problem.message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_a_page_on_loopback_needs_no_password_file(tmp_path: Path, host: str) -> None:
    loaded = load_config(site(tmp_path, f"  port: 8080\n  host: '{host}'\n"))
    assert loaded.gateway.site_page.password_file is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "not found"),
        (b"", "is empty"),
        (b" \n\t\n", "is empty"),
        (b"\xff\xfepassword", "is not UTF-8 text"),
    ],
)
def test_a_password_file_missing_empty_or_not_text_is_a_config_error(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    gateway = site(
        tmp_path, "  port: 8080\n  host: 0.0.0.0\n  password_file: page.password\n", content
    )
    with pytest.raises(ConfigError) as raised:
        load_config(gateway)
    [problem] = raised.value.problems
    assert (problem.path, problem.line) == ("site_page.password_file", 9)
    assert problem.message.startswith("site page password file `page.password` "), problem
    assert reason in problem.message


def test_a_password_file_that_is_a_folder_is_a_config_error(tmp_path: Path) -> None:
    gateway = site(tmp_path, "  port: 8080\n  host: 0.0.0.0\n  password_file: page.password\n")
    (tmp_path / "page.password").mkdir()
    with pytest.raises(ConfigError, match=r"site_page.password_file: .* is a folder, not a file"):
        load_config(gateway)


# --- the page beyond loopback ----------------------------------------------------------------


async def test_beyond_loopback_every_request_needs_the_password_and_the_log_says_so(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    # An editor's final newline is not part of the password.
    config = f"  port: {port}\n  host: 0.0.0.0\n  password_file: page.password\n"
    loaded = load_config(site(tmp_path, config, f"{PASSWORD}\n".encode()))
    with caplog.at_level(logging.INFO, logger="gateway"):
        page = await start(loaded)
    assert page is not None
    try:
        said = [r.getMessage() for r in caplog.records if r.name.startswith("gateway")]
        assert f"Site page on `http://0.0.0.0:{port}/` (read-only; password required (bound " \
            "beyond loopback))." in said  # fmt: skip
        assert listeners(port) == {"0.0.0.0"}
        url = f"http://127.0.0.1:{port}"
        # A browser elsewhere on the plant network names the gateway by its LAN name.
        lan = {"Host": f"gateway.plant-a.example:{port}"}
        for path in ("/", "/tickets", "/live?page=/", "/static/site.css", "/device/x"):
            async with http.get(url + path, headers=lan) as reply:
                assert reply.status == 401, path
                assert reply.headers["WWW-Authenticate"].startswith("Basic "), path
                assert "outbox-depth" not in await reply.text(), path
        for wrong in ("", "s3cret", f"{PASSWORD}\n", f"{PASSWORD}x", PASSWORD.upper()):
            async with http.get(url, headers={**lan, **basic("site", wrong)}) as reply:
                assert reply.status == 401, repr(wrong)
        async with http.get(url, headers={**lan, "Authorization": "Bearer " + PASSWORD}) as reply:
            assert reply.status == 401
        # Any user name: the password is the secret.
        for user in ("site", "anna", ""):
            async with http.get(url, headers={**lan, **basic(user, PASSWORD)}) as reply:
                assert reply.status == 200, user
                assert '<b id="outbox-depth">7</b>' in await reply.text()  # the overview
        async with http.get(f"{url}/static/site.css", headers=basic("x", PASSWORD)) as reply:
            assert reply.status == 200
        async with http.get(f"{url}/live?page=/", headers=basic("x", PASSWORD)) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"] == "text/event-stream"
        assert page.server.refused == 5 + 5 + 1
        refusals = [r.getMessage() for r in caplog.records if "refused a request" in r.message]
        assert len(refusals) == 1, refusals  # once, not once per request
    finally:
        await page.server.close()
    assert listeners(port) == set()


@pytest.mark.parametrize("spoil", ["delete", "empty", "folder", "garble"])
async def test_a_password_file_spoiled_after_the_check_keeps_the_page_off_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, spoil: str
) -> None:
    """The file is checked with the configuration; the daemon reads it at start. A file
    changed in between costs the page (never started, never listening), not the plant."""
    port = free_port()
    config = f"  port: {port}\n  host: 0.0.0.0\n  password_file: page.password\n"
    loaded = load_config(site(tmp_path, config, PASSWORD.encode()))
    secret = tmp_path / "page.password"
    secret.unlink()
    if spoil == "empty":
        secret.write_bytes(b"\n")
    elif spoil == "folder":
        secret.mkdir()
    elif spoil == "garble":
        secret.write_bytes(b"\xc3\x28")
    with caplog.at_level(logging.INFO, logger="gateway"):
        page = await start(loaded)
    assert page is None
    assert listeners(port) == set()
    [said] = [r for r in caplog.records if r.name.startswith("gateway")]
    expected: dict[str, Any] = {
        "delete": "cannot read its password file",
        "folder": "cannot read its password file",
        "empty": "is empty",
        "garble": "is not UTF-8 text",
    }
    assert said.levelno == logging.ERROR
    message = said.getMessage()
    assert message.startswith("Site page not started:"), message
    assert f"`{secret}`" in message and expected[spoil] in message, message


# --- the default: loopback -------------------------------------------------------------------


def test_the_default_host_is_loopback() -> None:
    config = SitePageConfig.model_validate({"port": 8080})
    assert config.host == "127.0.0.1" and is_loopback(config.host)
    assert config.password_file is None


async def test_a_page_given_only_a_port_listens_on_loopback_only(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port("127.0.0.1")
    loaded = load_config(site(tmp_path, f"  port: {port}\n"))
    assert loaded.gateway.site_page.host == "127.0.0.1"
    with caplog.at_level(logging.INFO, logger="gateway"):
        page = await start(loaded)
    assert page is not None
    try:
        assert listeners(port) == {"127.0.0.1"}
        assert (
            f"Site page on `http://127.0.0.1:{port}/` (read-only; loopback only, no password)."
            in [r.getMessage() for r in caplog.records]
        )
        async with http.get(f"http://127.0.0.1:{port}/") as reply:
            assert reply.status == 200
    finally:
        await page.server.close()
