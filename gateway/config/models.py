"""The configuration an OT engineer edits (DESIGN.md section 4).

`gateway.yaml` holds the site, storage, uplink and ticketing policy and names the device files;
each `devices/*.yaml` holds one device: its connection, its points and the rules on them.
Unknown keys are errors everywhere (`extra="forbid"`).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from gateway.core.records import Priority
from protocols.can.config import CanConnection, CanSignal
from protocols.modbus.config import ModbusPoint, ModbusRtuConnection, ModbusTcpConnection
from protocols.opcua.config import OpcUaConnection, OpcUaNode

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- gateway.yaml -------------------------------------------------------------------------


class StorageConfig(Strict):
    directory: str = Field(
        "var", description="Folder for state.db and telemetry.db, relative to gateway.yaml."
    )
    telemetry_retention_h: float = Field(
        168.0, gt=0, description="Raw samples older than this are deleted from telemetry.db."
    )
    telemetry_max_mb: float = Field(
        1024.0,
        gt=0,
        description="telemetry.db is trimmed oldest-first when its data exceeds this size (MB).",
    )
    retention_check_s: float = Field(
        300.0, gt=0, description="How often the retention task enforces age and size limits."
    )
    telemetry_flush_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description=(
            "Samples are written to telemetry.db in one transaction at least this often (0: "
            "every batch at once). Fewer, larger writes cost less CPU and flash wear; a power "
            "failure can lose this much raw history."
        ),
    )


class TlsConfig(Strict):
    """Server verified against `ca_file`; the client proves itself with its certificate and key.
    There is no switch to skip verification and no plaintext fallback (issue 6)."""

    ca_file: str = Field(
        description="CA certificate(s) of the broker, PEM, relative to gateway.yaml."
    )
    cert_file: str = Field(description="Client certificate, PEM.")
    key_file: str = Field(description="Client private key, PEM (readable by the service only).")


class UplinkConfig(Strict):
    host: str = Field("127.0.0.1", description="MQTT broker host.")
    port: int = Field(1883, ge=1, le=65535)
    topic_prefix: str = Field("factory", pattern=r"^[A-Za-z0-9_\-/]+$")
    client_id: str | None = Field(None, description="Defaults to edge-<site>-<gateway_id>.")
    keepalive_s: int = Field(30, ge=5, le=3600)
    resend_interval_s: float = Field(
        30.0, gt=0, description="An unacknowledged ticket message is resent after this long."
    )
    username: str | None = None
    password_file: str | None = Field(None, description="File holding the MQTT password.")
    tls: TlsConfig | None = Field(
        None, description="TLS to the broker; without it the link is plaintext (loopback only)."
    )
    ack_timeout_s: float = Field(
        15.0,
        gt=0,
        description="No PUBACK for this long means a half-open link: reconnect and resend.",
    )
    outbox_max_messages: int = Field(
        10_000,
        ge=10,
        description="Above this many unsettled messages, summaries and health are dropped "
        "oldest-first; ticket messages never are.",
    )
    health_period_s: float | None = Field(
        60.0, gt=0, description="Period of the `health` topic; null turns it off."
    )
    summary_period_s: float | None = Field(
        None, gt=0, description="Period of `summaries/<asset>` (detector features); null is off."
    )
    commands_per_s: float = Field(
        20.0,
        gt=0,
        description="Commands (all but `ack`) one actor may send per second; more are rejected "
        "at once as rate limited.",
    )
    command_burst: int = Field(
        100,
        ge=1,
        description="Commands one actor may send at once before `commands_per_s` applies.",
    )
    acks_per_s: float = Field(
        500.0, gt=0, description="`ack` commands one actor may send per second."
    )
    ack_burst: int = Field(
        2000,
        ge=1,
        description="`ack` commands one actor may send at once (a backlog after an outage).",
    )


class SlaTarget(Strict):
    """How fast a ticket of one priority must be acknowledged and resolved."""

    respond_min: float = Field(gt=0, description="Minutes to the first response (central ack).")
    resolve_min: float = Field(gt=0, description="Minutes to resolution (central close).")


def _default_sla() -> dict[Priority, SlaTarget]:
    return {
        Priority.P0: SlaTarget(respond_min=5, resolve_min=60),
        Priority.P1: SlaTarget(respond_min=15, resolve_min=120),
        Priority.P2: SlaTarget(respond_min=60, resolve_min=480),
        Priority.P3: SlaTarget(respond_min=240, resolve_min=2880),
    }


class TicketingConfig(Strict):
    """Ticket policy (issue 5): SLA, noise control, storms, verification, recurrence, commands."""

    default_priority: Priority = Priority.P2
    sla: dict[Priority, SlaTarget] = Field(
        default_factory=_default_sla,
        description="Respond-by / resolve-by per priority, computed when a ticket opens.",
    )
    knowledge_file: str | None = Field(
        "knowledge.yaml",
        description="Fault code + asset class -> recommended actions, relative to gateway.yaml.",
    )
    cmms_codes: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Site CMMS codes per fault code (e.g. {damage: BRG-WEAR}), in the payload.",
    )
    command_actors: list[str] = Field(
        default_factory=list,
        description="Actors allowed to send commands; empty accepts any actor.",
    )
    command_log_window_h: float = Field(
        24.0,
        gt=0,
        le=24 * 30,
        description="Idempotency window: a command id repeated within this many hours gets the "
        "first reply back and has no second effect.",
    )
    command_log_max: int = Field(
        20_000,
        ge=100,
        description="At most this many accepted commands are remembered (the newest); older "
        "ones are forgotten even inside the window, to bound state.db.",
    )
    safety_detectors: list[str] = Field(
        default_factory=list,
        description="Detector ids (threshold:<rule>) that open their own ticket during a flood.",
    )
    chatter_cycles: int = Field(3, ge=2, description="Active/clear cycles that mean chattering.")
    chatter_window_s: float = Field(60.0, gt=0)
    flood_threshold: int = Field(
        10, ge=1, description="More than this many new conditions per window in an area: flood."
    )
    flood_window_s: float = Field(600.0, gt=0)
    flood_end_below: int = Field(5, ge=1, description="A flood ends below this many per window.")
    flood_p0_per_hour: int = Field(50, ge=1, description="Above this per hour the incident is P0.")
    stale_after_h: float = Field(24.0, gt=0, description="An active condition this old is stale.")
    max_shelve_h: float = Field(8.0, gt=0, le=24)
    verification_window_h: float = Field(
        24.0, gt=0, description="Running time watched after a repair before it is verified."
    )
    verification_tolerance: float = Field(
        0.15, gt=0, description="Relative deviation from the pre-fault baseline that still passes."
    )
    reopen_within_h: float = Field(72.0, ge=0)
    recurrence_within_days: float = Field(30.0, ge=0)
    evidence_window_s: float = Field(
        600.0, gt=0, description="Window of the per-tag min/mean/max/last evidence summary."
    )


class HealthConfig(Strict):
    """Local health and metrics endpoints: `/healthz`, `/readyz`, `/metrics`, `/status`."""

    port: int | None = Field(
        None, ge=1, le=65535, description="TCP port of the health endpoints; null (default) is off."
    )
    host: str = Field("127.0.0.1", description="Address to bind; keep it local (loopback).")


class GatewayConfig(Strict):
    """The root file, `gateway.yaml`."""

    site: str = Field(pattern=ID_PATTERN, description="Site id, used in topics and dedup keys.")
    gateway_id: str = Field(pattern=ID_PATTERN, description="This gateway's id within the site.")
    devices: list[str] = Field(
        default_factory=lambda: ["devices/*.yaml"],
        description="Device files or glob patterns, relative to gateway.yaml.",
    )
    storage: StorageConfig = Field(default_factory=StorageConfig)
    uplink: UplinkConfig = Field(default_factory=UplinkConfig)
    ticketing: TicketingConfig = Field(default_factory=TicketingConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)


# --- devices/*.yaml -----------------------------------------------------------------------


class AssetInfo(Strict):
    """What the asset is and where it stands; used for routing tickets."""

    id: str | None = Field(None, pattern=ID_PATTERN, description="Defaults to the device id.")
    name: str = ""
    asset_class: str = Field("generic", alias="class", description="pump, motor, fan, press...")
    area: str = ""
    line: str = ""
    business_line: str = ""
    region: str = ""
    skill: str = Field("", description="Trade that handles this asset's tickets (mechanical...).")
    run_signal: str | None = Field(
        None,
        description=(
            "Speed or run-state tag (point name or full tag id); while it is at or below "
            "`run_above` the asset is stopped and its findings open nothing."
        ),
    )
    run_above: float = Field(0.0, description="The asset runs while run_signal is above this.")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RuleKind(enum.StrEnum):
    THRESHOLD = "threshold"
    VIBRATION = "vibration"


class ThresholdRule(Strict):
    """hi / hihi / lo / lolo limits with deadband, on-delay and off-delay."""

    name: str = Field(pattern=ID_PATTERN)
    kind: Literal[RuleKind.THRESHOLD] = RuleKind.THRESHOLD
    signal: str = Field(description="Point name in this device, or a full tag id device.point.")
    hihi: float | None = None
    hi: float | None = None
    lo: float | None = None
    lolo: float | None = None
    deadband: float = Field(0.0, ge=0, description="A limit clears only past limit -/+ deadband.")
    on_delay_s: float = Field(0.0, ge=0, description="Limit must be exceeded this long to raise.")
    off_delay_s: float = Field(0.0, ge=0, description="Value must be back this long to clear.")
    priority: Priority = Field(Priority.P2, description="Priority when the hi/lo limit is crossed.")
    priority_hihi: Priority = Field(
        Priority.P1, description="Priority when the hihi/lolo limit is crossed."
    )
    message: str = Field("", description="Extra words for the technician, added to the ticket.")


class BearingGeometryConfig(Strict):
    """Rolling-element bearing geometry, for bearings not in configs/bearings.yaml."""

    balls: int = Field(ge=3, le=100, description="Number of rolling elements per row.")
    ball_diameter_mm: float = Field(gt=0)
    pitch_diameter_mm: float = Field(gt=0)
    contact_angle_deg: float = Field(0.0, ge=0, lt=90)


class VibrationRule(Strict):
    """The vibration family on a waveform signal: ISO 20816 severity, unbalance, misalignment,
    looseness and bearing defects, each confirmed over several blocks before a ticket opens."""

    name: str = Field(pattern=ID_PATTERN)
    kind: Literal[RuleKind.VIBRATION]
    signal: str = Field(description="Waveform point of this device, or a full tag id.")
    bearing: str | BearingGeometryConfig | None = Field(
        None, description="Bearing name from configs/bearings.yaml, or its geometry."
    )
    rpm_signal: str | None = Field(
        None, description="Tag giving the running speed in rpm (point name or full tag id)."
    )
    rpm: float | None = Field(
        None, gt=0, description="Fixed running speed in rpm when no speed tag exists."
    )
    machine_group: Literal[1, 2] = Field(
        2, description="ISO 20816-3 group: 1 large (>300 kW), 2 medium (15-300 kW)."
    )
    foundation: Literal["rigid", "flexible"] = "rigid"
    confirm_blocks: int = Field(
        3,
        ge=1,
        le=100,
        description=(
            "Consecutive analyses (blocks, or rounds of `average_blocks` blocks) that must "
            "show a fault before it opens."
        ),
    )
    baseline_blocks: int = Field(
        20,
        ge=1,
        description=(
            "Analyses (blocks, or rounds of `average_blocks`) of normal running learnt as the "
            "asset's baseline."
        ),
    )
    average_blocks: int = Field(
        1,
        ge=1,
        le=1024,
        description=(
            "Blocks whose spectra are averaged into one analysis (severity, orders, envelope, "
            "bearing combs, confirmation). 1 analyses every block; 64 lets a continuous "
            "25.6 kHz channel cost about twice a bare rFFT per block (bench/vibration)."
        ),
    )


def _rule_kind(value: Any) -> str:
    # `kind` may be left out for threshold rules, the common case.
    if isinstance(value, dict):
        return str(value.get("kind", RuleKind.THRESHOLD))
    return str(getattr(value, "kind", RuleKind.THRESHOLD))


Rule = Annotated[
    Annotated[ThresholdRule, Tag(RuleKind.THRESHOLD)]
    | Annotated[VibrationRule, Tag(RuleKind.VIBRATION)],
    Discriminator(
        _rule_kind,
        custom_error_type="rule_kind",
        custom_error_message="kind must be one of: threshold, vibration",
    ),
]

Connection = Annotated[
    ModbusTcpConnection | ModbusRtuConnection | OpcUaConnection | CanConnection,
    Field(discriminator="protocol"),
]

# Which list of values each protocol reads: `points` (Modbus registers), `nodes` (OPC UA
# NodeIds) or `signals` (DBC signals). One field per protocol keeps the YAML explicit and the
# error messages about one shape, instead of a union of point types.
POINTS_FIELD = {"modbus_tcp": "points", "modbus_rtu": "points", "opcua": "nodes", "can": "signals"}


class DeviceConfig(Strict):
    """One device file."""

    id: str = Field(pattern=ID_PATTERN, description="Device id; tag ids are <device>.<point>.")
    asset: AssetInfo = Field(default_factory=AssetInfo)
    connection: Connection
    poll_period_s: float = Field(
        1.0,
        gt=0,
        description=(
            "Fixed polling period (OPC UA poll-mode nodes use it too). Devices sharing a "
            "period are staggered across it."
        ),
    )
    points: list[ModbusPoint] = Field(
        default_factory=list, description="Modbus devices: the registers to read."
    )
    nodes: list[OpcUaNode] = Field(
        default_factory=list, description="OPC UA devices: the nodes to subscribe to or poll."
    )
    signals: list[CanSignal] = Field(
        default_factory=list, description="CAN devices: the DBC signals to decode."
    )
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_match_protocol(self) -> DeviceConfig:
        wanted = POINTS_FIELD[self.connection.protocol]
        if not getattr(self, wanted):
            raise ValueError(
                f"a {self.connection.protocol} device needs at least one entry in `{wanted}`"
            )
        for field_name in POINTS_FIELD.values():
            if field_name != wanted and getattr(self, field_name):
                raise ValueError(
                    f"`{field_name}` does not apply to a {self.connection.protocol} device; "
                    f"use `{wanted}`"
                )
        return self

    @property
    def value_names(self) -> list[str]:
        """Names of everything this device reads, whatever its protocol."""
        items: list[ModbusPoint] | list[OpcUaNode] | list[CanSignal] = getattr(
            self, POINTS_FIELD[self.connection.protocol]
        )
        return [item.name for item in items]

    @property
    def asset_id(self) -> str:
        return self.asset.id or self.id

    def tag_id(self, point_name: str) -> str:
        return f"{self.id}.{point_name}"
