"""Modbus configuration models. Pydantic only: no pymodbus import here (STYLE.md)."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegisterTable(enum.StrEnum):
    HOLDING = "holding"
    INPUT = "input"


class DataType(enum.StrEnum):
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    FLOAT32 = "float32"

    @property
    def registers(self) -> int:
        return 1 if self in (DataType.UINT16, DataType.INT16) else 2


class WordOrder(enum.StrEnum):
    """Order of 16-bit words in a multi-register value. ABCD is big-endian (Modbus default)."""

    ABCD = "ABCD"  # big-endian words, big-endian bytes
    CDAB = "CDAB"  # word-swapped (common on many PLCs)
    BADC = "BADC"  # byte-swapped inside each word
    DCBA = "DCBA"  # little-endian


class ModbusPoint(Strict):
    """One value read from a Modbus device."""

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$", description="Tag name, unique in the device.")
    table: RegisterTable = Field(RegisterTable.HOLDING, description="Register table to read.")
    address: int = Field(ge=0, le=65535, description="Zero-based register address.")
    type: DataType = DataType.UINT16
    word_order: WordOrder = Field(WordOrder.ABCD, description="Byte and word order of multi-register values.")
    scale: float = Field(1.0, description="Engineering value = raw * scale + offset.")
    offset: float = 0.0
    unit: str = Field("", description="Engineering unit, for example degC or bar.")

    @model_validator(mode="after")
    def _fits_address_space(self) -> ModbusPoint:
        if self.address + self.type.registers - 1 > 65535:
            raise ValueError(
                f"address {self.address} with type {self.type} runs past register 65535"
            )
        return self


class ModbusTcpConnection(Strict):
    protocol: Literal["modbus_tcp"]
    host: str = Field(description="IP address or host name of the device or Modbus gateway.")
    port: int = Field(502, ge=1, le=65535)
    unit_id: int = Field(1, ge=0, le=255, description="Modbus unit (slave) id.")
    timeout_s: float = Field(1.0, gt=0, description="Per-request timeout; must be shorter than the poll period.")
