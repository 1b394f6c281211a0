"""`/metrics`: the health report in the Prometheus exposition format, through prometheus_client.

The only module that imports prometheus_client. A custom collector turns one snapshot of the
health report (`HealthReport.collect()`, the document `edge-gateway status` prints) into metric
families, so each family is declared once with every device's, kind's or reason's samples
under it, however many there are. Beside it, the library's own process collector (CPU, memory,
open files, start time), platform collector (`python_info`) and garbage-collector figures, and
`edge_gateway_build_info` with the version.

Names are `edge_gateway_<what>_<unit>`; counters get `_total` from the library. Every number of
the report is a metric; a value that is null (no poll yet, no response yet) has no sample.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from gateway import __version__

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "edge_gateway_"

COUNTER = "counter"
GAUGE = "gauge"

Path = tuple[str, ...]

# One number of the report -> one unlabelled family: (path in the report, kind, name, help).
SCALARS: tuple[tuple[Path, str, str, str], ...] = (
    (("ready",), GAUGE, "ready", "1 once the sources run, 0 while starting or stopping."),
    (("uptime_s",), GAUGE, "uptime_seconds", "Seconds since the daemon started."),
    (("pipeline", "queue_depth"), GAUGE, "queue_depth", "Records waiting for the detectors."),
    (("pipeline", "records"), COUNTER, "records", "Records taken from the queue."),
    (("pipeline", "samples_stored"), COUNTER, "samples_stored", "Samples handed to storage."),
    (("pipeline", "waveforms"), COUNTER, "waveforms", "Waveform blocks taken from the queue."),
    (("pipeline", "findings"), COUNTER, "findings", "Findings raised or cleared."),
    (("pipeline", "detectors_disabled"), GAUGE, "detectors_disabled",
     "Detectors disabled after a failure."),
    (("pipeline", "detector_seconds"), COUNTER, "detector_seconds", "Time spent in detectors."),
    (("uplink", "connected"), GAUGE, "uplink_connected", "1 while connected to the broker."),
    (("uplink", "connects"), COUNTER, "uplink_connects", "Connections to the broker."),
    (("uplink", "reconnects"), COUNTER, "uplink_reconnects", "Connections after the first."),
    (("uplink", "connection_losses"), COUNTER, "uplink_connection_losses",
     "Broker connections lost."),
    (("uplink", "published"), COUNTER, "uplink_published",
     "Outbox messages acknowledged by the broker (PUBACK)."),
    (("uplink", "resent"), COUNTER, "uplink_resent", "Ticket messages resent with the same id."),
    (("uplink", "publish_failures"), COUNTER, "uplink_publish_failures",
     "Publishes that failed or were refused by the broker."),
    (("uplink", "half_open_aborts"), COUNTER, "uplink_half_open_aborts",
     "Links dropped for a missing PUBACK."),
    (("uplink", "acks"), COUNTER, "uplink_central_acks", "Central acks accepted."),
    (("uplink", "commands"), COUNTER, "uplink_commands", "Commands received from central."),
    (("uplink", "rejected_commands"), COUNTER, "uplink_rejected_commands",
     "Commands rejected (invalid, unauthorised or stale)."),
    (("uplink", "rate_limited_commands"), COUNTER, "uplink_rate_limited_commands",
     "Commands refused by the per-actor rate limit."),
    (("uplink", "busy_commands"), COUNTER, "uplink_busy_commands",
     "Commands refused because their lane was full."),
    (("uplink", "failed_commands"), COUNTER, "uplink_failed_commands",
     "Commands whose handling failed inside the gateway (answered as an internal error)."),
    (("outbox", "depth"), GAUGE, "outbox_depth", "Unsettled outbox messages."),
    (("outbox", "oldest_age_s"), GAUGE, "outbox_oldest_age_seconds",
     "Age of the oldest unsettled message."),
    (("outbox", "max_messages"), GAUGE, "outbox_max_messages",
     "Outbox size above which health and summaries are dropped."),
    (("telemetry", "samples_written"), COUNTER, "telemetry_samples_written",
     "Samples stored in telemetry.db."),
    (("telemetry", "waveforms_written"), COUNTER, "telemetry_waveforms_written",
     "Waveform blocks stored in telemetry.db."),
    (("telemetry", "samples_refused"), COUNTER, "telemetry_samples_refused",
     "Samples telemetry.db refused (disk full or failing)."),
    (("telemetry", "waveforms_refused"), COUNTER, "telemetry_waveforms_refused",
     "Waveform blocks telemetry.db refused."),
    (("telemetry", "rows_pruned"), COUNTER, "telemetry_rows_pruned", "Rows deleted by age."),
    (("telemetry", "rows_trimmed_for_size"), COUNTER, "telemetry_rows_trimmed",
     "Rows deleted for size."),
    (("telemetry", "refusing"), GAUGE, "telemetry_refusing",
     "1 while telemetry.db refuses writes."),
    (("residency", "acquired_bytes"), COUNTER, "bytes_in",
     "Value bytes acquired from devices (8 per value)."),
    # Ticketing KPIs, present when the ticket service runs.
    (("tickets", "open_tickets"), GAUGE, "tickets_open", "Open tickets."),
    (("tickets", "opened"), COUNTER, "tickets_opened", "Tickets opened."),
    (("tickets", "recurrences"), COUNTER, "tickets_recurrences",
     "Tickets opened again for a recurring fault."),
    (("tickets", "renotified"), COUNTER, "tickets_renotified",
     "Escalation messages sent (warnings, breaches, levels, unattended)."),
    (("tickets", "incidents"), COUNTER, "incidents", "Incidents opened for alarm floods."),
    (("tickets", "floods_started"), COUNTER, "floods_started", "Alarm floods started."),
    (("tickets", "time_in_flood_s"), COUNTER, "time_in_flood_seconds",
     "Time any area spent in an alarm flood."),
    (("tickets", "top10_share"), GAUGE, "conditions_top10_share",
     "Share of conditions from the ten most frequent sources."),
    # Outcome KPIs, over `window_days`, computed from the tickets in state.db.
    (("tickets", "window_days"), GAUGE, "tickets_kpi_window_days", "Window of the outcome KPIs."),
    (("tickets", "repeat_report_rate"), GAUGE, "tickets_repeat_report_rate",
     "Resolutions re-reported within 30 days per resolution in the window."),
    (("tickets", "resolutions"), GAUGE, "tickets_resolutions", "Closes in the window."),
    (("tickets", "re_reported"), GAUGE, "tickets_re_reported",
     "Closes in the window whose fault came back within 30 days."),
    (("tickets", "eradication_rate"), GAUGE, "tickets_eradication_rate",
     "Closes not followed by their fault for 30 days, per close checked."),
    (("tickets", "eradication_checked"), GAUGE, "tickets_eradication_checked",
     "Closes whose 30 days have passed."),
    (("tickets", "eradicated"), GAUGE, "tickets_eradicated", "Closes eradicated."),
    (("tickets", "mean_time_to_respond_s"), GAUGE, "tickets_mean_time_to_respond_seconds",
     "Mean time from open to a person accepting or starting the work."),
    (("tickets", "responses"), GAUGE, "tickets_responses", "First responses in the window."),
    (("tickets", "mean_time_to_resolve_s"), GAUGE, "tickets_mean_time_to_resolve_seconds",
     "Mean time from open to the repair reported."),
    (("tickets", "resolved"), GAUGE, "tickets_resolved", "Repairs reported in the window."),
    (("tickets", "resolve_sla_rate"), GAUGE, "tickets_resolve_sla_rate",
     "Resolutions within their resolve-by."),
    (("tickets", "first_time_fix_rate"), GAUGE, "tickets_first_time_fix_rate",
     "Tickets whose first repair passed verification."),
    (("tickets", "overdue_share"), GAUGE, "tickets_overdue_share",
     "Open tickets past their resolve-by."),
    (("tickets", "overdue"), GAUGE, "tickets_overdue", "Open tickets past their resolve-by."),
    (("tickets", "unattended"), GAUGE, "tickets_unattended",
     "Tickets in the window that exhausted every escalation level."),
)  # fmt: skip

# A mapping of the report -> one family with one label: (path, kind, name, label, help).
MAPPINGS: tuple[tuple[Path, str, str, str, str], ...] = (
    (("outbox", "by_kind"), GAUGE, "outbox_depth_by_kind", "kind",
     "Unsettled outbox messages by type."),
    (("residency", "sent_bytes"), COUNTER, "bytes_out", "kind",
     "Payload bytes sent off-site, by message type."),
    (("residency", "sent_messages"), COUNTER, "messages_out", "kind",
     "Messages sent off-site, by message type."),
    (("residency", "refused_by_guard"), COUNTER, "guard_refused", "kind",
     "Messages the egress guard refused, by message type."),
    (("tickets", "conditions_per_10min"), GAUGE, "conditions_per_10min", "area",
     "New conditions in the last 10 minutes, by area."),
    (("tickets", "priority_distribution"), GAUGE, "tickets_open_by_priority", "priority",
     "Open tickets by priority."),
    (("tickets", "escalations"), COUNTER, "tickets_escalations", "kind",
     "Escalation events of this run by kind."),
)  # fmt: skip

# Conditions per flag, from several numbers of the ticket KPIs.
CONDITION_FLAGS = ("chattering", "stale", "shelved", "suppressed", "out_of_service")

# Per device: (key, kind, name, help).
DEVICE_FIGURES: tuple[tuple[str, str, str, str], ...] = (
    ("polls", COUNTER, "device_polls", "Successful reads per device."),
    ("errors", COUNTER, "device_errors", "Failed connects and reads per device."),
    ("reconnects", COUNTER, "device_reconnects",
     "Recoveries after a device was unreachable."),
    ("latency_s", GAUGE, "device_poll_latency_seconds", "Duration of the last poll."),
    ("bad_samples", COUNTER, "device_bad_samples", "BAD samples inside good reads."),
    ("uncertain_samples", COUNTER, "device_uncertain_samples", "UNCERTAIN samples per device."),
)  # fmt: skip


def render_metrics(report: Mapping[str, Any]) -> bytes:
    """The exposition of one report snapshot, with the process and build figures."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReportCollector(report))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return generate_latest(registry)


class ReportCollector:
    """A prometheus_client collector over one report snapshot."""

    def __init__(self, report: Mapping[str, Any]) -> None:
        self._report = report

    def collect(self) -> Iterator[Metric]:
        report = self._report
        yield GaugeMetricFamily(PREFIX + "up", "1 while the daemon answers.", value=1)
        yield InfoMetricFamily(
            PREFIX + "build",
            "Version of this gateway and of the Python running it.",
            value={
                "version": __version__,
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
            },
        )
        yield InfoMetricFamily(
            PREFIX + "site",
            "The site and gateway ids of this daemon.",
            value={"site": str(report["site"]), "gateway": str(report["gateway"])},
        )
        yield from self._devices(report["devices"])
        for path, kind, name, help_text in SCALARS:
            if _has(report, path):
                family = _family(kind, name, help_text)
                value = _at(report, path)
                if value is not None:
                    family.add_metric([], float(value))
                yield family
        for path, kind, name, label, help_text in MAPPINGS:
            if _has(report, path):
                family = _family(kind, name, help_text, [label])
                for key, value in sorted(_at(report, path).items()):
                    family.add_metric([str(key)], float(value))
                yield family
        yield self._drops(report["drops"])
        if "tickets" in report:
            yield from self._ticket_flags(report["tickets"])
            yield from self._ticket_outcomes(report["tickets"])

    @staticmethod
    def _devices(devices: list[Mapping[str, Any]]) -> Iterator[Metric]:
        for key, kind, name, help_text in DEVICE_FIGURES:
            family = _family(kind, name, help_text, ["device"])
            for device in devices:
                if device[key] is not None:
                    family.add_metric([device["device"]], float(device[key]))
            yield family
        up = GaugeMetricFamily(
            PREFIX + "device_up", "1 while the device answers.", labels=["device"]
        )
        for device in devices:
            up.add_metric([device["device"]], float(device["up"]))
        yield up
        bad_now = GaugeMetricFamily(
            PREFIX + "device_bad_points",
            "Points whose latest reading is BAD.",
            labels=["device"],
        )
        for device in devices:
            bad_now.add_metric([device["device"]], float(len(device["bad_points"])))
        yield bad_now

    @staticmethod
    def _drops(drops: Mapping[str, int]) -> Metric:
        family = CounterMetricFamily(
            PREFIX + "drops",
            "Messages or rows dropped, by reason and type.",
            labels=["reason", "kind"],
        )
        for key, count in sorted(drops.items()):
            reason, _, kind = key.partition(":")
            family.add_metric([reason, kind], float(count))
        return family

    @staticmethod
    def _ticket_outcomes(tickets: Mapping[str, Any]) -> Iterator[Metric]:
        """Open tickets by priority and age; rates per site and asset class; quality."""
        ages = tickets.get("open_by_priority_and_age")
        if isinstance(ages, Mapping):
            family = _family(
                GAUGE, "tickets_open_by_age", "Open tickets by priority and age.",
                ["priority", "age"],
            )
            for priority, buckets in sorted(ages.items()):
                for age, count in sorted(buckets.items()):
                    family.add_metric([str(priority), str(age)], float(count))
            yield family
        groups = tickets.get("by_site_and_class")
        if isinstance(groups, Mapping):
            figures = sorted({
                k for g in groups.values() for k, v in g.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            })
            for figure in figures:
                family = _family(
                    GAUGE, f"tickets_by_class_{figure}",
                    f"Outcome KPI `{figure}` per site and asset class.", ["site", "asset_class"],
                )
                for group in groups.values():
                    value = group.get(figure)
                    if isinstance(value, int | float):
                        family.add_metric(
                            [str(group["site"]), str(group["asset_class"])], float(value)
                        )
                yield family
        advisories = tickets.get("quality_advisories")
        if isinstance(advisories, list):
            family = _family(
                GAUGE, "tickets_quality_repeats",
                "Faults per asset model within the quality window (advisory raised).",
                ["model", "fault_code"],
            )
            for advisory in advisories:
                family.add_metric(
                    [str(advisory["model"]), str(advisory["fault_code"])],
                    float(advisory["count"]),
                )
            yield family

    @staticmethod
    def _ticket_flags(tickets: Mapping[str, Any]) -> Iterator[Metric]:
        flags = GaugeMetricFamily(
            PREFIX + "conditions_flagged",
            "Conditions that are chattering, stale, shelved, suppressed or out of service.",
            labels=["flag"],
        )
        for flag in CONDITION_FLAGS:
            if flag in tickets:
                flags.add_metric([flag], float(tickets[flag]))
        yield flags
        floods = GaugeMetricFamily(
            PREFIX + "flood_active", "1 for each area in an alarm flood.", labels=["area"]
        )
        for area in tickets.get("floods_active", []):
            floods.add_metric([str(area)], 1.0)
        yield floods


def _family(
    kind: str, name: str, help_text: str, labels: list[str] | None = None
) -> CounterMetricFamily | GaugeMetricFamily:
    if kind == COUNTER:
        return CounterMetricFamily(PREFIX + name, help_text, labels=labels)
    return GaugeMetricFamily(PREFIX + name, help_text, labels=labels)


def _has(report: Mapping[str, Any], path: Path) -> bool:
    node: Any = report
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def _at(report: Mapping[str, Any], path: Path) -> Any:
    node: Any = report
    for key in path:
        node = node[key]
    return node
