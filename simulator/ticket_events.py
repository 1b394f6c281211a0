"""Reading the gateway's ticket CloudEvents, as the simulated consumers on the broker do (the
central ticket system, and the plant learning of a repair)."""

from __future__ import annotations

import json
from typing import Any

from uplink.events import TICKET_TYPE_PREFIX


def parse_ticket_event(payload: bytes) -> tuple[str, str, str, dict[str, Any]] | None:
    """`(event id, kind, sequence, data)` of a ticket CloudEvent, None for anything else."""
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(document, dict) or document.get("specversion") != "1.0":
        return None
    event_id, event_type, data = document.get("id"), document.get("type"), document.get("data")
    if not isinstance(event_id, str) or not isinstance(event_type, str):
        return None
    if not event_type.startswith(TICKET_TYPE_PREFIX):
        return None
    if not isinstance(data, dict) or "id" not in data:
        return None
    kind = event_type[len(TICKET_TYPE_PREFIX) :]
    return event_id, kind, str(document.get("sequence", "")), data
