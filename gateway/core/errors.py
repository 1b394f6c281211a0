"""The one error tree of the gateway.

    GatewayError
    ├── ConfigError            invalid configuration; carries every problem found at once
    ├── DriverError            a device could not be read (the source task retries)
    │   ├── DeviceUnreachable  connection refused, host down, port closed
    │   ├── DeviceTimeout      no answer within the configured timeout
    │   └── BadResponse        an answer that cannot be trusted (exception code, wrong function
    │                          code, short payload, bad status)
    ├── StoreError             state.db or telemetry.db refused a write or read
    ├── UplinkError            the MQTT uplink failed (connect, publish refused)
    └── PolicyViolation        the egress guard refused an outgoing message

Expected failures are caught where they happen; anything outside this tree is a bug.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class Severity(enum.StrEnum):
    """An error stops the configuration from loading; a warning is printed and loading goes
    on (something that is probably a mistake but may be what the plant really has, such as
    a register address that looks like Modicon notation)."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One configuration problem, located in its file and line."""

    file: str
    line: int | None
    path: str
    message: str
    severity: Severity = Severity.ERROR

    @property
    def is_warning(self) -> bool:
        return self.severity is Severity.WARNING

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        path = self.path or "<root>"
        marker = "warning: " if self.is_warning else ""
        return f"{where}: {path}: {marker}{self.message}"


class ConfigError(GatewayError):
    """The configuration is invalid. `problems` lists every error, not only the first;
    `warnings` the warnings found in the same run (reported with them, never alone)."""

    def __init__(
        self, problems: list[ConfigProblem], warnings: list[ConfigProblem] | None = None
    ) -> None:
        self.problems = problems
        self.warnings = list(warnings or ())
        super().__init__("\n".join(str(p) for p in problems))


class DriverError(GatewayError):
    """A device could not be read. The source task turns it into BAD samples and a retry."""


class DeviceUnreachable(DriverError):
    """The device refused or dropped the connection."""


class DeviceTimeout(DriverError):
    """The device did not answer within the configured timeout."""


class BadResponse(DriverError):
    """The device answered with something that cannot be trusted as a value."""


class StoreError(GatewayError):
    """A database refused a read or a write."""


class UplinkError(GatewayError):
    """The MQTT uplink failed."""


class PolicyViolation(GatewayError):
    """The egress guard refused an outgoing message (data residency)."""
