"""A Modbus-only site with no site page never loads the libraries it does not use.

Each of them costs RSS on edge boxes with 1-2 GB (asyncua with cryptography, python-can with
cantools about 50 MB; aiohttp with jinja2 about 13 MB; prometheus_client a few MB), and the
one-device site target is 60 MB. The daemon is run for real (`python -m gateway run`) against a
real broker and the pump's Modbus server, stopped with SIGTERM, and writes the modules it had
loaded when it exited.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.faults.test_gateway_faults import wait_polling
from tests.support.broker import MosquittoBroker, free_loopback_port
from tests.support.site import REPO, make_site
from tests.test_end_to_end import start_pump, stop_task

# Loads the daemon exactly as `python -m gateway` does; at exit writes sys.modules.
RUN_AND_LIST = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from gateway.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def start_listing_daemon(
    gateway_yaml: Path, listing: Path, log_file: Path
) -> subprocess.Popen[bytes]:
    with log_file.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", RUN_AND_LIST, str(listing), "run", str(gateway_yaml)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


NOT_FOR_THIS_SITE = ("asyncua", "cryptography", "can", "cantools", "aiohttp", "jinja2",
                     "prometheus_client")  # fmt: skip


async def test_modbus_site_loads_no_unused_library(tmp_path: Path) -> None:
    modbus_port = free_loopback_port()
    listing = tmp_path / "modules.json"
    with MosquittoBroker() as broker:
        gateway_yaml = make_site(tmp_path, broker_port=broker.port, modbus_port=modbus_port)
        pump, pump_stop = await start_pump(modbus_port)
        try:
            started = time.time()
            process = start_listing_daemon(gateway_yaml, listing, tmp_path / "gateway.log")
            try:
                await wait_polling(tmp_path / "var" / "telemetry.db", started, process)
            finally:
                process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(process.wait, 20)
        finally:
            await stop_task(pump, pump_stop)
    assert process.returncode == 0, (tmp_path / "gateway.log").read_text()
    loaded = {name.split(".")[0] for name in json.loads(listing.read_text())}
    assert {"pymodbus", "paho"} <= loaded, "the listing covers the daemon's own libraries"
    assert sorted(loaded & set(NOT_FOR_THIS_SITE)) == []
