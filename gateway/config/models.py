"""The configuration an OT engineer edits (DESIGN.md section 4).

`gateway.yaml` holds the site, storage, uplink and ticketing policy and names the device files;
each `devices/*.yaml` holds one device: its connection, its points and the rules on them.
Unknown keys are errors everywhere (`extra="forbid"`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
    model_validator,
)
from pydantic import Strict as PydanticStrict

from detectors import RULES
from gateway.core.plugins import (
    DeviceSpec,
    NamedFile,
    PluginTable,
    ProtocolPlugin,
    RulePlugin,
)
from gateway.core.records import Priority
from protocols import PROTOCOLS

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]*$"


class Strict(BaseModel):
    # strict: as strict as the shipped JSON Schema (`port: "502"` or `unit_id: true` is an
    # error, not a silent conversion); enum fields opt out (`strict=False`) because YAML gives
    # their values as text.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- gateway.yaml -------------------------------------------------------------------------


class StorageConfig(Strict):
    directory: str | None = Field(
        None,
        description=(
            "Folder for state.db and telemetry.db, relative to gateway.yaml. Unset: "
            "$STATE_DIRECTORY when systemd sets it (StateDirectory=), else "
            "$XDG_STATE_HOME/edge-gateway/<site>-<gateway_id> (~/.local/state/...)."
        ),
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
    There is no switch to skip verification and no plaintext fallback."""

    ca_file: str = Field(
        description="CA certificate(s) of the broker, PEM, relative to gateway.yaml."
    )
    cert_file: str = Field(description="Client certificate, PEM.")
    key_file: str = Field(description="Client private key, PEM (readable by the service only).")


class UplinkConfig(Strict):
    host: str = Field("127.0.0.1", description="MQTT broker host.")
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port (8883 usual with TLS).")
    topic_prefix: str = Field(
        "factory",
        pattern=r"^[A-Za-z0-9_\-/]+$",
        description="First topic level(s): topics are <prefix>/<site>/<gateway_id>/...",
    )
    client_id: str | None = Field(None, description="Defaults to edge-<site>-<gateway_id>.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval.")
    resend_interval_s: float = Field(
        30.0, gt=0, description="An unacknowledged ticket message is resent after this long."
    )
    username: str | None = Field(None, description="MQTT user name; null: no login.")
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

    def named_files(self) -> tuple[NamedFile, ...]:
        """The password file and TLS files, checked by `check-config` (relative to
        gateway.yaml, as the uplink resolves them)."""
        files = []
        if self.password_file is not None:
            files.append(NamedFile("password_file", self.password_file, "MQTT password file"))
        if self.tls is not None:
            files += [
                NamedFile("tls.ca_file", self.tls.ca_file, "broker CA certificate"),
                NamedFile("tls.cert_file", self.tls.cert_file, "client certificate"),
                NamedFile("tls.key_file", self.tls.key_file, "client private key"),
            ]
        return tuple(files)


class SlaTarget(Strict):
    """How fast a ticket of one priority must be responded to and resolved, and whom a breach
    escalates to."""

    respond_min: float = Field(
        gt=0, description="Minutes to the first response: a person's `accept` or `start`."
    )
    resolve_min: float = Field(gt=0, description="Minutes to resolution (the repair reported).")
    warn_before_pct: float = Field(
        20.0, ge=0, lt=100, description="Warn when this share of the target is left."
    )
    levels: list[str] = Field(
        default_factory=lambda: ["maintenance-supervisor"],
        description="Escalation levels: the role or group each level goes to, in order; level "
        "1 gets the breach. After the last level one `unattended` event, then silence.",
    )
    repeat_min: float = Field(
        30.0, gt=0, description="Minutes between one escalation level and the next."
    )
    working_time: bool = Field(
        False,
        description="Count only the site's working hours (`working_calendar`), as targets in "
        "working days do; without a calendar every hour counts.",
    )


def _default_sla() -> dict[Priority, SlaTarget]:
    return {
        Priority.P0: SlaTarget(
            respond_min=5,
            resolve_min=60,
            levels=["shift-supervisor", "maintenance-manager", "plant-manager"],
            repeat_min=15,
        ),
        Priority.P1: SlaTarget(
            respond_min=15,
            resolve_min=120,
            levels=["shift-supervisor", "maintenance-supervisor", "maintenance-manager"],
            repeat_min=30,
        ),
        Priority.P2: SlaTarget(
            respond_min=60,
            resolve_min=480,
            levels=["maintenance-planner", "maintenance-supervisor"],
            repeat_min=240,
            working_time=True,
        ),
        Priority.P3: SlaTarget(
            respond_min=240,
            resolve_min=2880,
            levels=["maintenance-planner"],
            repeat_min=1440,
            working_time=True,
        ),
    }


GroupLabel = Literal["site", "fault_code", "asset_class", "line", "area", "feed", "plc"]


def _default_group_by() -> list[GroupLabel]:
    return ["site", "fault_code", "asset_class"]
HoldReason = Literal["parts", "access", "production"]
DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _default_days() -> list[DayName]:
    return ["mon", "tue", "wed", "thu", "fri"]


def _default_hold_rules() -> dict[HoldReason, bool]:
    return {"parts": False, "access": True, "production": True}


class WorkingCalendarConfig(Strict):
    """The site's working days and hours (local time), for priorities with `working_time`."""

    days: list[DayName] = Field(
        default_factory=_default_days,
        description="Working weekdays.",
    )
    start: str = Field("07:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="HH:MM")
    end: str = Field("17:00", pattern=r"^([01][0-9]|2[0-4]):[0-5][0-9]$", description="HH:MM")
    timezone: str = Field("UTC", description="IANA time zone of the site (Europe/Berlin).")
    holidays: list[str] = Field(
        default_factory=list, description="Dates without work, YYYY-MM-DD (local)."
    )


class TicketingConfig(Strict):
    """Ticket policy: SLA, noise control, storms, verification, recurrence, commands."""

    default_priority: Priority = Field(
        Priority.P2, strict=False, description="Priority of a ticket whose finding names none."
    )
    sla: dict[Annotated[Priority, PydanticStrict(False)], SlaTarget] = Field(
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
    chatter_window_s: float = Field(
        60.0, gt=0, description="Window in which chatter_cycles cycles mean chattering."
    )
    flood_threshold: int = Field(
        10, ge=1, description="More than this many new conditions per window in an area: flood."
    )
    flood_window_s: float = Field(
        600.0, gt=0, description="Sliding window of the flood count (ISA-18.2: 10 min)."
    )
    flood_end_below: int = Field(5, ge=1, description="A flood ends below this many per window.")
    flood_p0_per_hour: int = Field(
        50, ge=1, description="Above this per hour an incident (flood or group) is P0."
    )
    group_by: list[GroupLabel] = Field(
        default_factory=_default_group_by,
        min_length=1,
        description="Labels of the group key: new conditions sharing them are one storm "
        "(site, fault_code, asset_class, line, area, feed, plc: the link the device sits "
        "behind). Without `area` a group spanning areas is one site incident.",
    )
    group_threshold: int = Field(
        10,
        ge=1,
        description="More than this many new conditions of one group key within "
        "group_window_h, at any pace, open one incident for the group.",
    )
    group_window_h: float = Field(
        24.0, gt=0, le=24 * 7, description="Sliding window of the group count."
    )
    group_wait_s: float = Field(
        30.0,
        ge=0,
        le=600,
        description="A second new condition of a group within this many seconds of the "
        "first holds the group's next tickets until this long after the first, so a burst "
        "opens one incident instead of a ticket each (Alertmanager's group_wait). P0 and "
        "safety rules are never held.",
    )
    incident_update_interval_s: float = Field(
        60.0,
        ge=1,
        le=3600,
        description="An incident publishes its member updates at most this often (a storm "
        "is hundreds of members); a priority raise is published at once.",
    )
    stale_after_h: float = Field(24.0, gt=0, description="An active condition this old is stale.")
    max_shelve_h: float = Field(
        8.0, gt=0, le=24, description="Longest shelving a central `shelve` command may ask."
    )
    verification_window_h: float = Field(
        24.0, gt=0, description="Running time watched after a repair before it is verified."
    )
    verification_tolerance: float = Field(
        0.15, gt=0, description="Relative deviation from the pre-fault baseline that still passes."
    )
    reopen_within_h: float = Field(
        72.0, ge=0, description="The same fault this soon after a close reopens the ticket."
    )
    recurrence_within_days: float = Field(
        30.0,
        ge=0,
        description="Later, but within this, it opens a new ticket linked as a recurrence.",
    )
    evidence_window_s: float = Field(
        600.0, gt=0, description="Window of the per-tag min/mean/max/last evidence summary."
    )
    working_calendar: WorkingCalendarConfig | None = Field(
        None, description="Working days and hours; null: every hour counts for every priority."
    )
    hold_stops_clock: dict[HoldReason, bool] = Field(
        default_factory=_default_hold_rules,
        description="Per ON_HOLD reason: whether the resolution clock stops meanwhile.",
    )
    require_signoff: bool = Field(
        False, description="A verified repair closes only by `confirm` from `signoff_actors`."
    )
    signoff_actors: list[str] = Field(
        default_factory=list, description="Who may sign off (the requesters)."
    )
    cause_codes: dict[str, str] = Field(
        default_factory=dict,
        description="Site failure cause codes accepted by `close` besides ISO 14224's.",
    )
    remedy_codes: dict[str, str] = Field(
        default_factory=dict,
        description="Site remedy codes accepted by `close` besides ISO 14224's activities.",
    )
    eradication_days: float = Field(
        30.0, gt=0, description="A close not followed by its fault this long is eradicated."
    )
    kpi_window_days: float = Field(
        30.0, gt=0, description="Window of the outcome KPIs (repeat reports, MTTR...)."
    )
    quality_repeats: int = Field(
        3, ge=2, description="The same fault on one asset model this often: quality advisory."
    )
    quality_window_days: float = Field(30.0, gt=0, description="Window of quality_repeats.")


class HealthConfig(Strict):
    """Local health and metrics endpoints: `/healthz`, `/readyz`, `/metrics`, `/status`."""

    port: int | None = Field(
        None, ge=1, le=65535, description="TCP port of the health endpoints; null (default) is off."
    )
    host: str = Field("127.0.0.1", description="Address to bind; keep it local (loopback).")


LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


class SitePageConfig(Strict):
    """The local, read-only site page: devices, point quality, conditions, tickets, spectra.

    Raw values and spectra are shown on site; nothing of the page is sent off-site."""

    port: int | None = Field(
        None, ge=1, le=65535, description="TCP port of the site page; null (default) is off."
    )
    host: str = Field(
        "127.0.0.1",
        description=(
            "Address to bind. Loopback by default; any other address needs `password_file`."
        ),
    )
    password_file: str | None = Field(
        None,
        description=(
            "File holding the page's password (HTTP Basic, any user name), relative to "
            "gateway.yaml; required when `host` is not a loopback address."
        ),
    )
    update_s: float = Field(
        2.0, ge=0.5, le=60, description="Live updates are sent at most this often per page."
    )
    max_viewers: int = Field(
        16, ge=1, le=256, description="Open pages receiving live updates at once, at most."
    )

    def named_files(self) -> tuple[NamedFile, ...]:
        """The password file, checked by `check-config` (relative to gateway.yaml, as the
        page resolves it): a typo found at start would cost the page, not just a warning."""
        if self.password_file is None:
            return ()
        return (NamedFile("password_file", self.password_file, "site page password file"),)

    @model_validator(mode="after")
    def _password_beyond_loopback(self) -> SitePageConfig:
        if self.port is not None and not is_loopback(self.host) and self.password_file is None:
            raise ValueError(
                f"the site page bound to `{self.host}` is reachable from the network: set "
                "`password_file`, or bind it to 127.0.0.1"
            )
        return self


class GatewayConfig(Strict):
    """The root file, `gateway.yaml`."""

    site: str = Field(pattern=ID_PATTERN, description="Site id, used in topics and dedup keys.")
    gateway_id: str = Field(pattern=ID_PATTERN, description="This gateway's id within the site.")
    devices: list[str] = Field(
        default_factory=lambda: ["devices/*.yaml"],
        description="Device files or glob patterns, relative to gateway.yaml.",
    )
    storage: StorageConfig = Field(
        default_factory=StorageConfig, description="Where state and raw data are kept, how long."
    )
    uplink: UplinkConfig = Field(
        default_factory=UplinkConfig, description="The MQTT link to the central ticket system."
    )
    ticketing: TicketingConfig = Field(
        default_factory=TicketingConfig, description="Ticket policy: SLA, noise, storms, ..."
    )
    health: HealthConfig = Field(
        default_factory=HealthConfig, description="Local health and metrics endpoints (off)."
    )
    site_page: SitePageConfig = Field(
        default_factory=SitePageConfig, description="The local read-only site page (off)."
    )


# --- devices/*.yaml -----------------------------------------------------------------------


class AssetInfo(Strict):
    """What the asset is and where it stands; used for routing tickets."""

    id: str | None = Field(None, pattern=ID_PATTERN, description="Defaults to the device id.")
    name: str = Field("", description="Name a technician knows the asset by.")
    asset_class: str = Field("generic", alias="class", description="pump, motor, fan, press...")
    area: str = Field("", description="Plant area (routing; alarm floods count per area).")
    line: str = Field("", description="Production line (routing).")
    business_line: str = Field("", description="Business line (routing).")
    region: str = Field("", description="Region (routing).")
    skill: str = Field("", description="Trade that handles this asset's tickets (mechanical...).")
    model: str = Field(
        "", description="Manufacturer model: repeats of one fault per model raise an advisory."
    )
    run_signal: str | None = Field(
        None,
        description=(
            "Speed or run-state tag (point name or full tag id); while it is at or below "
            "`run_above` the asset is stopped and its findings open nothing."
        ),
    )
    run_above: float = Field(0.0, description="The asset runs while run_signal is above this.")
    feed: str = Field(
        "",
        description="Supply this asset hangs on (power feeder, hydraulic or air supply): a "
        "label that ticket grouping can use (`ticketing.group_by: [..., feed]`).",
    )
    depends_on: list[Annotated[str, Field(pattern=ID_PATTERN)]] = Field(
        default_factory=list,
        description="Assets this one is fed by or driven by (a hydraulic unit, a feeder, a "
        "conveyor upstream). A storm incident names an active condition of one of them as "
        "its root cause before any arrival order.",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


class DeviceConfig(Strict):
    """One device file. The fields every device has are here; `connection`, the list of
    values it reads (`points`, `nodes`, `signals`: one key per protocol, named by its plugin)
    and `rules` are added by `device_model` from the protocol and rule tables, so that a new
    protocol or rule kind needs no change here."""

    id: str = Field(pattern=ID_PATTERN, description="Device id; tag ids are <device>.<point>.")
    asset: AssetInfo = Field(
        default_factory=AssetInfo, description="The asset this device measures, for routing."
    )
    poll_period_s: float = Field(
        1.0,
        gt=0,
        description=(
            "Fixed polling period (OPC UA poll-mode nodes use it too). Devices sharing a "
            "period are staggered across it."
        ),
    )
    # Typed by the subclass `device_model` builds.
    connection: Any
    rules: list[Any] = Field(default_factory=list)

    # protocol name -> the key listing its values; set on the built subclass.
    values_fields: ClassVar[Mapping[str, str]] = {}

    @model_validator(mode="after")
    def _values_match_protocol(self) -> DeviceConfig:
        protocol = self.connection.protocol
        wanted = self.values_fields[protocol]
        if not getattr(self, wanted):
            raise ValueError(f"a {protocol} device needs at least one entry in `{wanted}`")
        for field_name in set(self.values_fields.values()):
            if field_name != wanted and getattr(self, field_name):
                raise ValueError(
                    f"`{field_name}` does not apply to a {protocol} device; use `{wanted}`"
                )
        return self

    @property
    def protocol(self) -> str:
        return str(self.connection.protocol)

    @property
    def values_field(self) -> str:
        return self.values_fields[self.protocol]

    @property
    def values(self) -> list[Any]:
        """Everything this device reads (its points, nodes or signals)."""
        return list(getattr(self, self.values_field))

    @property
    def value_names(self) -> list[str]:
        return [item.name for item in self.values]

    @property
    def asset_id(self) -> str:
        return self.asset.id or self.id

    def tag_id(self, point_name: str) -> str:
        return f"{self.id}.{point_name}"

    def spec(self, file: Path) -> DeviceSpec:
        """This device as the plain values its protocol and rule plugins are given."""
        return DeviceSpec(
            id=self.id,
            asset=self.asset_id,
            file=file,
            connection=self.connection,
            values=tuple(self.values),
            poll_period_s=self.poll_period_s,
        )


def device_model(
    protocols: PluginTable[ProtocolPlugin] = PROTOCOLS,
    rules: PluginTable[RulePlugin] = RULES,
) -> type[DeviceConfig]:
    """The model of a device file for these tables (built once per table content)."""
    key = (protocols.key(), rules.key())
    model = _DEVICE_MODELS.get(key)
    if model is None:
        model = _build_device_model(list(protocols), list(rules))
        _DEVICE_MODELS[key] = model
    return model


_DEVICE_MODELS: dict[object, type[DeviceConfig]] = {}


def _build_device_model(
    protocols: Sequence[ProtocolPlugin], rules: Sequence[RulePlugin]
) -> type[DeviceConfig]:
    value_models: dict[str, type[Any]] = {}
    descriptions: dict[str, str] = {}
    for plugin in protocols:
        known = value_models.setdefault(plugin.values_field, plugin.value_model)
        if known is not plugin.value_model:
            raise TypeError(
                f"protocols sharing `{plugin.values_field}` must share its model "
                f"({known.__name__} vs {plugin.value_model.__name__})"
            )
        descriptions.setdefault(plugin.values_field, plugin.values_description)
    fields: dict[str, Any] = {
        "connection": (
            _union([p.connection_model for p in protocols], Field(discriminator="protocol")),
            Field(description="How to reach the device; `protocol` selects the kind."),
        ),
        **{
            name: (list[value_model], Field(default_factory=list, description=descriptions[name]))  # type: ignore[valid-type]
            for name, value_model in value_models.items()
        },
        "rules": (
            list[_rule_union(rules)],  # type: ignore[misc]
            Field(default_factory=list, description="Detectors on this device's values."),
        ),
    }
    model = create_model(
        "DeviceConfig",
        __base__=DeviceConfig,
        __doc__="One device file: its connection, what it reads and the rules on its values.",
        **fields,
    )
    model.values_fields = {p.name: p.values_field for p in protocols}
    return model


def _union(members: Sequence[type[Any]], *annotations: Any) -> Any:
    if len(members) == 1:
        return members[0]
    return Annotated[Union[tuple(members)], *annotations]  # noqa: UP007


def _rule_union(rules: Sequence[RulePlugin]) -> Any:
    if len(rules) == 1:
        return rules[0].rule_model
    kinds = ", ".join(sorted(rule.kind for rule in rules))
    return Annotated[
        Union[tuple(Annotated[r.rule_model, Tag(r.kind)] for r in rules)],  # noqa: UP007
        Discriminator(
            _rule_kind,
            custom_error_type=RULE_KIND_ERROR,
            custom_error_message=f"kind must be one of: {kinds}",
        ),
    ]


# `kind` may be left out for threshold rules, the common case.
DEFAULT_RULE_KIND = "threshold"
RULE_KIND_ERROR = "rule_kind"  # the error type of an unknown kind, located at its `kind` key


def _rule_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", DEFAULT_RULE_KIND))
    return str(getattr(value, "kind", DEFAULT_RULE_KIND))
