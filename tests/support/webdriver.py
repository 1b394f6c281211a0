"""A small W3C WebDriver client for Debian's `chromium` and `chromium-driver` (standard library
only): start chromedriver on a free loopback port, open one headless session, load pages, run
scripts, read the browser console and take screenshots.

The flags keep a machine without internet quiet: without the background-networking switches
Chromium keeps trying to reach Google's services and floods refused connections.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.broker import free_loopback_port

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--hide-scrollbars",
)  # fmt: skip


def find_chromium() -> tuple[str, str] | None:
    """(browser, driver) paths when both Debian packages are installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


class WebDriverError(AssertionError):
    pass


class Browser:
    """One headless Chromium session; use as a context manager."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        found = find_chromium()
        if found is None:
            raise WebDriverError("chromium and chromedriver are missing (./dev installs them)")
        self._browser, self._driver = found
        self._size = (width, height)
        self._port = free_loopback_port()
        self._profile = tempfile.TemporaryDirectory(prefix="site-page-chromium-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._session = ""

    def __enter__(self) -> Browser:
        self._proc = subprocess.Popen(
            [self._driver, f"--port={self._port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/status")
                break
            except (OSError, WebDriverError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        width, height = self._size
        args = [*CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}",
                f"--window-size={width},{height}"]  # fmt: skip
        reply = self._call("POST", "/session", {
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": self._browser, "args": args},
                "goog:loggingPrefs": {"browser": "ALL"},
            }},
        })  # fmt: skip
        self._session = reply["value"]["sessionId"]
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._session:
                self._call("DELETE", f"/session/{self._session}")
        finally:
            if self._proc is not None:
                self._proc.terminate()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._profile.cleanup()

    # -- commands ---------------------------------------------------------------------------

    def get(self, url: str) -> None:
        self._command("POST", "/url", {"url": url})

    def script(self, source: str, *args: Any) -> Any:
        """Run `source` as a function body in the page; returns its value."""
        return self._command("POST", "/execute/sync", {"script": source, "args": list(args)})

    def wait_for(self, source: str, *args: Any, within_s: float = 30.0) -> Any:
        """Run `source` until it returns something truthy; that value is returned."""
        deadline = time.monotonic() + within_s
        while True:
            value = self.script(source, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise WebDriverError(f"not true within {within_s:.0f} s: {source}")
            time.sleep(0.1)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._command("GET", "/screenshot")))
        return path

    def full_page_screenshot(self, path: Path, max_height: int = 8000) -> Path:
        """The whole page (up to `max_height` pixels): the window is made as tall as the
        document first."""
        width, _ = self._size
        height = int(self.script("return document.documentElement.scrollHeight;"))
        self._command("POST", "/window/rect",
                      {"width": width, "height": min(height + 120, max_height)})  # fmt: skip
        try:
            return self.screenshot(path)
        finally:
            self._command("POST", "/window/rect", {"width": width, "height": self._size[1]})

    def console(self) -> list[dict[str, Any]]:
        """Browser console entries since the last call (level, message)."""
        entries = self._command("POST", "/se/log", {"type": "browser"})
        return list(entries or [])

    # -- transport --------------------------------------------------------------------------

    def _command(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call(method, f"/session/{self._session}{path}", body)["value"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self._port}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise WebDriverError(f"{method} {path}: {exc.code} {detail}") from None
