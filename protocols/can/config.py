"""CAN configuration models. Pydantic only: no python-can or cantools import here (STYLE.md).

A CAN device file names one channel (`connection`), the DBC file that describes its frames and
the DBC signals that become tags (`signals`). Which interface names python-can knows, and
whether the DBC parses and holds the named signals, are checked by `protocols.can.dbc` and the
driver, because only they may import the libraries.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.core.plugins import NamedFile


class Strict(BaseModel):
    # strict: as strict as the shipped JSON Schema (`port: "502"` or `unit_id: true` is an
    # error, not a silent conversion); enum fields opt out (`strict=False`) because YAML gives
    # their values as text.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CanFilter(Strict):
    """Accept a frame when `frame_id & can_mask == can_id & can_mask` (python-can semantics)."""

    can_id: int = Field(ge=0, le=0x1FFFFFFF, description="Identifier to match.")
    can_mask: int = Field(
        default=0x1FFFFFFF,
        ge=0,
        le=0x1FFFFFFF,
        description="Bits of the identifier that must match.",
    )
    extended: bool | None = Field(
        default=None,
        description="Match only extended (true) or standard (false) frames; null for both.",
    )


class CanConnection(Strict):
    """One CAN channel. The gateway only listens: it never sends on the bus."""

    protocol: Literal["can"] = Field(
        description="can: a CAN channel (selects this connection type)."
    )
    interface: str = Field(
        description="python-can interface name: socketcan, virtual, pcan, kvaser, vector, ...",
        min_length=1,
    )
    channel: str = Field(min_length=1, description="Channel, for example can0 or PCAN_USBBUS1.")
    bitrate: int | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="Bit rate in bit/s where the interface sets it (socketcan uses `ip link`).",
    )
    receive_own_messages: bool = Field(
        False, description="Also receive frames this interface sent (python-can option)."
    )
    filters: list[CanFilter] = Field(
        default_factory=list, description="Acceptance filters; empty accepts every frame."
    )
    dbc: str = Field(
        min_length=1, description="DBC file describing the frames, relative to this device file."
    )
    error_frames_per_s_limit: int = Field(
        default=10,
        ge=1,
        description=(
            "This many error frames within one second count as a lost bus (comm.lost); "
            "bus-off counts at once."
        ),
    )
    receive_buffer_frames: int = Field(
        default=10_000,
        ge=16,
        description=(
            "Frames held between the receive thread and the pipeline. When the pipeline cannot "
            "keep up and the buffer is full, the oldest frames are dropped and counted."
        ),
    )

    def named_files(self) -> tuple[NamedFile, ...]:
        """The DBC must exist and be readable (`check-config`); its contents are checked by
        the plugin."""
        return (NamedFile("dbc", self.dbc, "DBC file"),)


class CanSignal(Strict):
    """One DBC signal that becomes a tag `<device>.<name>`."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$", description="Tag name, unique in the device."
    )
    message: str | int = Field(
        description="DBC message name, or its frame id (for example 0x100 or 0x18FF1001)."
    )
    signal: str = Field(min_length=1, description="Signal name inside the DBC message.")
    unit: str | None = Field(default=None, description="Overrides the unit given by the DBC.")
    cycle_ms: float | None = Field(
        default=None,
        gt=0,
        description="Expected period of the message; defaults to the DBC GenMsgCycleTime.",
    )
    stale_after_cycles: float = Field(
        default=3.0,
        gt=1.0,
        description="The signal turns stale when no frame came for this many cycles.",
    )

    @model_validator(mode="after")
    def _frame_id_in_range(self) -> CanSignal:
        if isinstance(self.message, int) and not 0 <= self.message <= 0x1FFFFFFF:
            raise ValueError(f"frame id {self.message:#x} is outside 0..0x1FFFFFFF")
        return self
