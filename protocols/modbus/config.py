"""Modbus configuration models. Pydantic only: no pymodbus import here (STYLE.md).

A device file names one connection (`modbus_tcp` or `modbus_rtu`) and its points. Several
device files naming the same RTU `port` are units on one line; `protocols.modbus.line`
groups them so that one task polls the line.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import Strict as PydanticStrict


class Strict(BaseModel):
    # strict: as strict as the shipped JSON Schema (`port: "502"` or `unit_id: true` is an
    # error, not a silent conversion); enum fields opt out (`strict=False`) because YAML gives
    # their values as text.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RegisterTable(enum.StrEnum):
    """The four Modbus tables, read with function codes 1-4."""

    HOLDING = "holding"  # FC 3
    INPUT = "input"  # FC 4
    COILS = "coils"  # FC 1
    DISCRETE = "discrete"  # FC 2

    @property
    def is_bits(self) -> bool:
        return self in (RegisterTable.COILS, RegisterTable.DISCRETE)

    @property
    def function_code(self) -> int:
        """The read function code of the table (Modbus Application Protocol 6.1-6.4)."""
        return _READ_FUNCTION[self]


_READ_FUNCTION = {"coils": 1, "discrete": 2, "holding": 3, "input": 4}


class DataType(enum.StrEnum):
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    UINT64 = "uint64"
    INT64 = "int64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"  # `length` registers of text, two characters per register
    BIT = "bit"  # one coil or discrete input, or one bit of a register (with `bit`)

    @property
    def registers(self) -> int:
        """Registers one value occupies; a string's length is the point's `length`."""
        return _REGISTERS[self]


_REGISTERS: dict[DataType, int] = {
    DataType.UINT16: 1,
    DataType.INT16: 1,
    DataType.UINT32: 2,
    DataType.INT32: 2,
    DataType.UINT64: 4,
    DataType.INT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
    DataType.STRING: 1,
    DataType.BIT: 1,
}
NUMERIC_TYPES = frozenset(DataType) - {DataType.STRING, DataType.BIT}
ENUM_TYPES = (NUMERIC_TYPES - {DataType.FLOAT32, DataType.FLOAT64}) | {DataType.BIT}


class WordOrder(enum.StrEnum):
    """Order of bytes and 16-bit words in a multi-register value. ABCD is big-endian (Modbus
    default); for strings it means the first character in the high byte of each register."""

    ABCD = "ABCD"  # big-endian words, big-endian bytes
    CDAB = "CDAB"  # word-swapped (common on many PLCs)
    BADC = "BADC"  # byte-swapped inside each word
    DCBA = "DCBA"  # little-endian


class DeadbandMode(enum.StrEnum):
    ABSOLUTE = "absolute"  # report when |value - last reported| > deadband
    PERCENT = "percent"  # ... > deadband % of |last reported|


class WaveformBlock(Strict):
    """A register range holding one block of samples, as smart vibration sensors expose it.

    The point's `type`, `word_order`, `scale`, `offset` and `unit` apply to every sample.
    """

    samples: int = Field(ge=2, le=8192, description="Number of samples in the block.")
    sample_rate_hz: float | None = Field(
        None, gt=0, description="Fixed sample rate; or name a point with `sample_rate_point`."
    )
    sample_rate_point: str | None = Field(
        None,
        description="Name of a scalar point of the same device holding the sample rate in Hz"
        " (read in the same poll, scale applied).",
    )

    @model_validator(mode="after")
    def _one_rate_source(self) -> WaveformBlock:
        if (self.sample_rate_hz is None) == (self.sample_rate_point is None):
            raise ValueError("set exactly one of `sample_rate_hz` and `sample_rate_point`")
        return self


class ModbusPoint(Strict):
    """One value read from a Modbus device (or one waveform block, with `waveform`)."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$", description="Tag name, unique in the device."
    )
    table: RegisterTable = Field(
        RegisterTable.HOLDING, strict=False, description="Table to read."
    )
    address: int = Field(ge=0, le=65535, description="Zero-based register or bit address.")
    type: DataType = Field(
        DataType.UINT16,
        strict=False,
        description="Value type: (u)int16/32/64, float32/64, string or bit.",
    )
    word_order: WordOrder = Field(
        WordOrder.ABCD,
        strict=False, description="Byte and word order of multi-register values."
    )
    bit: int | None = Field(
        None, ge=0, le=15, description="Type `bit` in a register table: bit 0 (LSB) .. 15."
    )
    length: int | None = Field(
        None, ge=1, le=125, description="Type `string`: number of registers (2 chars each)."
    )
    scale: float = Field(1.0, description="Engineering value = raw * scale + offset.")
    offset: float = Field(0.0, description="Added after scale.")
    unit: str = Field("", description="Engineering unit, for example degC or bar.")
    # Keys lax: YAML mapping keys reach the model as text (gateway/config/yaml_marks.py).
    enum: dict[Annotated[int, PydanticStrict(False)], str] | None = Field(
        None,
        description="State register: raw value -> label, e.g. {0: stopped, 1: running}. The"
        " value stays numeric; a value outside the map is UNCERTAIN.",
    )
    deadband: float | None = Field(
        None, ge=0, description="Report only changes larger than this (see deadband_mode)."
    )
    deadband_mode: DeadbandMode = Field(
        DeadbandMode.ABSOLUTE,
        strict=False,
        description="absolute, or percent of the last reported value.",
    )
    heartbeat_s: float | None = Field(
        None, gt=0, description="With a deadband: report at least this often anyway."
    )
    waveform: WaveformBlock | None = Field(
        None, description="The point is a block of `samples` values of `type` (a waveform)."
    )

    @property
    def register_count(self) -> int:
        """Registers (or bits, in a bit table) this point occupies."""
        if self.type is DataType.STRING:
            return self.length or 0
        per_value = self.type.registers
        return per_value * self.waveform.samples if self.waveform else per_value

    @model_validator(mode="after")
    def _consistent(self) -> ModbusPoint:
        bits_table = self.table.is_bits
        if bits_table and self.type is not DataType.BIT:
            raise ValueError(f"points in `{self.table}` have type `bit`, not `{self.type}`")
        if self.type is DataType.BIT and not bits_table and self.bit is None:
            raise ValueError("type `bit` in a register table needs `bit: 0..15`")
        if self.bit is not None and (bits_table or self.type is not DataType.BIT):
            raise ValueError("`bit` applies only to type `bit` in a holding or input register")
        if (self.type is DataType.STRING) != (self.length is not None):
            raise ValueError("type `string` needs `length` (registers), other types do not")
        if self.waveform is not None and self.type not in NUMERIC_TYPES:
            raise ValueError(f"a waveform holds numbers, not `{self.type}`")
        if self.enum is not None and self.type not in ENUM_TYPES:
            raise ValueError("`enum` applies to integer and bit points")
        if self.deadband is None and self.heartbeat_s is not None:
            raise ValueError("`heartbeat_s` needs a `deadband` (without one every poll reports)")
        if self.deadband is not None and self.type not in NUMERIC_TYPES | {DataType.BIT}:
            raise ValueError(f"`deadband` does not apply to `{self.type}`")
        if self.waveform is not None and self.deadband is not None:
            raise ValueError("`deadband` does not apply to waveforms")
        limit = 65535
        if self.address + self.register_count - 1 > limit:
            raise ValueError(
                f"address {self.address} with {self.register_count} registers runs past {limit}"
            )
        return self


class ModbusLimits(Strict):
    """Request planning limits shared by TCP and RTU connections."""

    max_registers_per_read: int = Field(
        125,
        ge=1,
        le=125,
        description="Largest register read (FC 3/4); lower it for devices that reject long reads.",
    )
    max_bits_per_read: int = Field(
        2000, ge=1, le=2000, description="Largest coil or discrete input read (FC 1/2)."
    )
    max_register_gap: int = Field(
        4,
        ge=0,
        le=124,
        description="Unused registers a read may bridge to merge two points into one request"
        " (bits: 16 times this).",
    )


class ModbusTcpConnection(ModbusLimits):
    protocol: Literal["modbus_tcp"] = Field(
        description="modbus_tcp: Modbus over TCP (selects this connection type)."
    )
    host: str = Field(description="IP address or host name of the device or Modbus gateway.")
    port: int = Field(502, ge=1, le=65535, description="TCP port.")
    unit_id: int = Field(1, ge=0, le=255, description="Modbus unit (slave) id.")
    timeout_s: float = Field(
        0.5, gt=0, description="Per-request timeout; must be shorter than the poll period."
    )

    def resource_claims(self) -> tuple[str, ...]:
        """Exclusive resources this connection polls; two devices may not claim the same one
        (checked by gateway/config/crosscheck.py). Units behind one Modbus gateway differ."""
        return (f"modbus_tcp {self.host}:{self.port} unit {self.unit_id}",)


class ModbusRtuConnection(ModbusLimits):
    """One unit on an RS-485 line. Device files naming the same `port` share the line; their
    serial settings must agree (checked by `protocols.modbus.line.group_rtu_devices`)."""

    protocol: Literal["modbus_rtu"] = Field(
        description="modbus_rtu: Modbus on a serial line (selects this connection type)."
    )
    port: str = Field(description="Serial device, for example /dev/ttyUSB0 or /dev/ttyS1.")
    unit_id: int = Field(1, ge=1, le=247, description="Modbus unit (slave) address.")
    baudrate: int = Field(19200, gt=0, description="Serial line speed in bit/s.")
    parity: Literal["N", "E", "O"] = Field("E", description="Modbus RTU default is even.")
    stopbits: Literal[1, 2] = Field(1, description="Stop bits.")
    bytesize: Literal[7, 8] = Field(8, description="Data bits per character.")
    timeout_s: float = Field(0.5, gt=0, description="Per-request timeout.")
    inter_request_pause_ms: float = Field(
        5.0,
        ge=0,
        description="Silence on the line between an answer and the next request, for slow"
        " units and RS-485 converters that need turnaround time.",
    )

    def resource_claims(self) -> tuple[str, ...]:
        """Units on one line share the port; the same unit twice is a conflict."""
        return (f"modbus_rtu {self.port} unit {self.unit_id}",)

    def line_settings(self) -> tuple[int, str, int, int]:
        """Serial settings every unit of one line must share."""
        return (self.baudrate, self.parity, self.stopbits, self.bytesize)
