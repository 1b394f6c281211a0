"""Health endpoints, metrics, the `health` and `summaries/<asset>` topics, the `status`
command and the residency report (issue 6, "Service" and "Data residency")."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.cli import status
from gateway.config.loader import load_config
from gateway.core.clock import SystemClock
from gateway.runtime.health import HealthServer
from gateway.runtime.metrics import render_metrics
from tests.faults.tls import TlsBroker, make_pki
from tests.support.broker import free_loopback_port
from tests.support.site import make_site
from tests.test_end_to_end import start_pump, stop_task
from tests.uplink.helpers import eventually
from uplink.mqtt import LinkSettings, MqttLink

REPORT: dict[str, Any] = {
    "site": "plant-a", "gateway": "edge-01", "time": "2026-01-01T00:00:00.000Z",
    "uptime_s": 12.5, "ready": True,
    "devices": [{"device": "pump-1", "state": "polling", "up": True, "polls": 40, "errors": 2,
                 "reconnects": 1, "latency_s": 0.0042, "last_error": None,
                 "bad_samples": 3, "uncertain_samples": 1, "bad_points": ["flow"],
                 "uncertain_points": [], "silent_points": []}],
    "pipeline": {"queue_depth": 3, "records": 400, "samples_stored": 400, "waveforms": 0,
                 "findings": 1, "detectors_disabled": 0, "detector_seconds": 0.0123},
    "uplink": {"connected": True, "connects": 2, "reconnects": 1, "connection_losses": 1,
               "published": 7, "resent": 2, "publish_failures": 1, "half_open_aborts": 1,
               "acks": 3, "commands": 3, "rejected_commands": 0},
    "outbox": {"depth": 2, "by_kind": {"ticket": 1, "health": 1}, "oldest_age_s": 4.5,
               "max_messages": 10000},
    "drops": {"outbox_full:health": 5, "telemetry_refused:samples": 9},
    "telemetry": {"samples_written": 400, "waveforms_written": 0, "samples_refused": 9,
                  "waveforms_refused": 0, "rows_pruned": 0, "rows_trimmed_for_size": 0,
                  "refusing": False},
    "residency": {"acquired_bytes": 3200, "sent_bytes": {"ticket": 2048, "health": 900},
                  "sent_messages": {"ticket": 2, "health": 1}, "refused_by_guard": {}},
}  # fmt: skip


def test_metrics_are_prometheus_text_with_the_issue_figures():
    parsed = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(render_metrics(REPORT).decode())
        for sample in family.samples
    }
    for name, labels, value in (
        ("edge_gateway_device_poll_latency_seconds", {"device": "pump-1"}, 0.0042),
        ("edge_gateway_device_errors_total", {"device": "pump-1"}, 2),
        ("edge_gateway_uplink_reconnects_total", {}, 1),
        ("edge_gateway_queue_depth", {}, 3),
        ("edge_gateway_outbox_depth", {}, 2),
        ("edge_gateway_outbox_oldest_age_seconds", {}, 4.5),
        ("edge_gateway_drops_total", {"reason": "outbox_full", "kind": "health"}, 5),
        ("edge_gateway_drops_total", {"reason": "telemetry_refused", "kind": "samples"}, 9),
        ("edge_gateway_detector_seconds_total", {}, 0.0123),
        ("edge_gateway_bytes_in_total", {}, 3200),
        ("edge_gateway_bytes_out_total", {"kind": "ticket"}, 2048),
    ):
        assert parsed[(name, tuple(sorted(labels.items())))] == value, name


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_endpoints_answer_on_loopback():
    ready = False

    async def collect() -> dict[str, Any]:
        return REPORT

    server = HealthServer(collect, lambda: ready, "127.0.0.1", 0)
    await server.start()
    try:
        assert await http_get(server.port, "/healthz") == (200, "ok\n")
        assert (await http_get(server.port, "/readyz"))[0] == 503
        ready = True
        assert await http_get(server.port, "/readyz") == (200, "ready\n")
        code, body = await http_get(server.port, "/metrics")
        assert code == 200 and "edge_gateway_outbox_depth 2.0" in body
        code, body = await http_get(server.port, "/status")
        assert code == 200 and json.loads(body) == REPORT
        assert (await http_get(server.port, "/nothing"))[0] == 404
        assert (await http_get(server.port, "/metrics", method="POST"))[0] == 405
    finally:
        await server.close()


def test_status_prints_a_readable_report():
    out = io.StringIO()
    status.print_report(REPORT, out)
    text = out.getvalue()
    assert "Gateway edge-01 of site plant-a — ready" in text
    assert "pump-1" in text and "latency 4.2 ms" in text
    assert "acquired from devices  3.2 kB" in text
    assert "sent off-site          2.9 kB" in text
    assert "ticket" in text and "2.0 kB in 2 message(s)" in text
    assert "outbox_full:health 5" in text


def _with_devices(*up: bool) -> dict[str, Any]:
    report = dict(REPORT)
    report["devices"] = [
        {**REPORT["devices"][0], "device": f"pump-{i}", "up": is_up,
         "state": "polling" if is_up else "unreachable"}
        for i, is_up in enumerate(up, start=1)
    ]  # fmt: skip
    return report


@pytest.mark.parametrize(
    ("up", "headline"),
    [((True, True, True), "— ready, up 12 s"),
     ((True, False, False), "— DEGRADED: 2 of 3 devices down, up 12 s"),
     ((False, False, False), "— NOT READY: no device answers (3 of 3 down), up 12 s")],
)  # fmt: skip
def test_status_headline_is_not_ready_while_every_device_is_down(up, headline):
    out = io.StringIO()
    status.print_report(_with_devices(*up), out)
    assert out.getvalue().splitlines()[0] == f"Gateway edge-01 of site plant-a {headline}"


def test_status_without_a_daemon_says_so(capsys):
    args = argparse.Namespace(url=f"http://127.0.0.1:{free_loopback_port()}", config=None,
                              json=False)  # fmt: skip
    assert status.run(args) == status.EX_UNAVAILABLE
    assert "No gateway answers" in capsys.readouterr().err


@contextlib.asynccontextmanager
async def observer(port: int, topic: str):
    seen: list[Any] = []
    link = MqttLink(LinkSettings("127.0.0.1", port, "health-observer", subscriptions=(topic,)))

    async def collect() -> None:
        while True:
            message = await link.receive()
            seen.append(message)
            link.acknowledge(message)

    async with link:
        async with asyncio.timeout(10):
            await link.wait_connected()
        task = asyncio.create_task(collect(), name="observer")
        try:
            yield seen
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.mark.broker
async def test_gateway_over_tls_serves_health_metrics_status_and_publishes_health_and_summaries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole daemon: TLS with a client certificate, the password from a file, health
    endpoints on loopback, `health` and `summaries/<asset>` on MQTT, and no secret in the log."""
    caplog.set_level(logging.DEBUG)
    password = "pw-that-must-never-be-logged"
    pki = make_pki(tmp_path / "pki")
    modbus_port, health_port = free_loopback_port(), free_loopback_port()
    with TlsBroker(tmp_path, pki, {"edge": password}) as broker:
        gateway_yaml = make_site(tmp_path, broker_port=broker.tls_port, modbus_port=modbus_port)
        (gateway_yaml.parent / "mqtt.password").write_text(password + "\n")
        config = yaml.safe_load(gateway_yaml.read_text())
        config["uplink"].update(
            username="edge", password_file="mqtt.password", health_period_s=0.3,
            summary_period_s=0.3,
            tls={"ca_file": str(pki.ca_file), "cert_file": str(pki.client_cert),
                 "key_file": str(pki.client_key)},
        )  # fmt: skip
        config["health"] = {"port": health_port}
        gateway_yaml.write_text(yaml.safe_dump(config))
        pump, pump_stop = await start_pump(modbus_port)
        stop = asyncio.Event()
        async with observer(broker.plain_port, "factory/plant-a/edge-01/#") as seen:
            gateway = asyncio.create_task(
                Gateway(load_config(gateway_yaml), SystemClock()).run(stop), name="gateway"
            )
            try:
                await eventually(lambda: any(m.topic.endswith("/health") for m in seen), 20)
                await eventually(lambda: any("/summaries/" in m.topic for m in seen), 20)
                code, metrics = await http_get(health_port, "/metrics")
                assert code == 200
                assert "edge_gateway_uplink_connected 1" in metrics
                assert re.search(r'edge_gateway_device_polls_total\{device="pump-1"\} [1-9]',
                                 metrics)  # fmt: skip
                assert (await http_get(health_port, "/readyz"))[0] == 200
                args = argparse.Namespace(url=None, config=str(gateway_yaml), json=True)
                assert await asyncio.to_thread(status.run, args) == 0
            finally:
                stop.set()
                await asyncio.wait_for(gateway, 15)
                await stop_task(pump, pump_stop)
    report = json.loads(capsys.readouterr().out)
    assert report["residency"]["acquired_bytes"] > 0
    assert report["residency"]["sent_bytes"]["health"] > 0
    health = next(json.loads(m.payload) for m in seen if m.topic.endswith("/health"))
    assert health["devices"][0]["device"] == "pump-1"
    assert set(health) >= {"outbox", "drops", "residency", "pipeline", "uplink", "tickets"}
    # The alarm-management KPIs of issue 5 ride on the health topic too.
    assert {"conditions_per_10min", "priority_distribution", "repeat_report_rate"} <= set(
        health["tickets"]
    )
    summary = next(json.loads(m.payload) for m in seen if "/summaries/" in m.topic)
    assert summary["asset"] == "pump-1"
    temperature = summary["tags"]["pump-1.bearing_temp"]
    assert temperature["n"] >= 1 and temperature["min"] <= temperature["max"]
    assert password not in caplog.text
