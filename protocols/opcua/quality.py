"""OPC UA StatusCode -> gateway quality (Part 4, 7.39: the two top bits are the severity)."""

from __future__ import annotations

from gateway.core.records import Quality

_SEVERITY_MASK = 0xC000_0000
_GOOD = 0x0000_0000
_UNCERTAIN = 0x4000_0000
# The low 16 bits carry info bits (overflow, limit, ...); the code itself is the high half.
CODE_MASK = 0xFFFF_0000


def quality_of(status_code: int) -> Quality:
    """Severity 00 is Good, 01 Uncertain; 10 is Bad and 11 (reserved) must be treated as Bad."""
    severity = status_code & _SEVERITY_MASK
    if severity == _GOOD:
        return Quality.GOOD
    if severity == _UNCERTAIN:
        return Quality.UNCERTAIN
    return Quality.BAD


def status_label(status_code: int, name: str | None) -> str:
    """The symbolic name when the library knows it, else the code in hex, never empty."""
    return name if name else f"0x{status_code & CODE_MASK:08X}"
