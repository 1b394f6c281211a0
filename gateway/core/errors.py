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

from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One configuration problem, located in its file and line."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        path = self.path or "<root>"
        return f"{where}: {path}: {self.message}"


class ConfigError(GatewayError):
    """The configuration is invalid. `problems` lists every problem, not only the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
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
