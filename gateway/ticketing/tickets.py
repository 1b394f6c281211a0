"""The ticket machine, pure: a ticket and an input in, the next ticket and its event out.

Every change that is reported is one `TicketEvent` whose revision is the ticket's new revision
(DESIGN.md section 6), so a consumer can order and deduplicate by (ticket id, revision).

Event kinds produced here (the encoder maps them to topics):
    opened              a new ticket (revision 1)
    updated             enrichment: a new occurrence, or an escalation within one episode
    condition_cleared   the condition went back to NORMAL; the ticket stays open
    acknowledged        the central system accepted the ticket (`cmd/ack`)
    assigned, repaired, verifying, verified, reopened, closed, cancelled
                        the other state transitions; `change` names from and to
    accepted            a person accepted the work (first response); ASSIGNED
    in_progress, on_hold  work started; work waits (parts, access, production)
    sla_warning, sla_breached, sla_escalated, unattended
                        the escalation policy (see `escalation`); the priority stays
    eradicated          30 days after a close without the signature coming back
    condition_stale     the condition has been active for longer than the stale limit
    shelved, unshelved  an operator shelved or unshelved the ticket's condition

Peak value: the most extreme value seen while the ticket is open, in the direction that makes
the fault worse. For fault codes in `LOW_IS_WORSE` (a value under a low limit) that is the
minimum; for every other fault code (temperatures, pressures, vibration levels over a limit)
it is the maximum. Findings without a value leave the peak as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gateway.core.interfaces import TicketEvent
from gateway.core.records import FaultCode, Finding, Priority, Ticket, TicketState

LOW_IS_WORSE: frozenset[str] = frozenset({FaultCode.THRESHOLD_LOW})

# The ticket states the central `ack` moves on from: a new ticket and a reopened one.
ACKNOWLEDGEABLE: frozenset[TicketState] = frozenset({TicketState.OPENED, TicketState.REOPENED})


def open_ticket(
    ticket_id: str,
    key: str,
    site: str,
    finding: Finding,
    opened_at: float,
    *,
    respond_by: float | None = None,
    resolve_by: float | None = None,
    attributes: Mapping[str, Any] | None = None,
    extra_evidence: Mapping[str, Any] | None = None,
) -> tuple[Ticket, TicketEvent]:
    ticket = Ticket(
        id=ticket_id,
        key=key,
        site=site,
        asset=finding.asset,
        fault_code=finding.fault_code,
        detector=finding.detector,
        priority=finding.severity,
        state=TicketState.OPENED,
        revision=1,
        opened_at=opened_at,
        first_seen=finding.ts,
        last_seen=finding.ts,
        occurrences=1,
        peak_value=_finite(finding.value),
        message=finding.message,
        condition_active=True,
        evidence=evidence_of(finding) | dict(extra_evidence or {}),
        respond_by=respond_by,
        resolve_by=resolve_by,
        attributes=dict(attributes or {}),
    )
    event = TicketEvent(
        ticket_id=ticket_id,
        revision=1,
        kind="opened",
        ts=finding.ts,
        detail=_clean(
            {"priority": ticket.priority.value, "value": finding.value, "score": finding.score}
        ),
    )
    return ticket, event


def enrich(
    ticket: Ticket, finding: Finding, *, new_occurrence: bool
) -> tuple[Ticket, TicketEvent | None]:
    """Fold an active finding into the open ticket instead of opening another.

    `new_occurrence` is True when the condition was raised anew (a new episode): that is
    always reported. Within one episode the finding is reported only when it escalates the
    priority; otherwise last seen, peak and evidence are refreshed in the returned ticket
    without a new revision, and travel with the next reported change. That keeps a detector
    that re-confirms a fault on every block from flooding the central system.
    """
    priority = Priority.most_urgent(ticket.priority, finding.severity)
    escalated = priority is not ticket.priority
    enriched = replace(
        ticket,
        priority=priority,
        last_seen=max(ticket.last_seen, finding.ts),
        occurrences=ticket.occurrences + (1 if new_occurrence else 0),
        peak_value=more_extreme(ticket.fault_code, ticket.peak_value, finding.value),
        message=finding.message or ticket.message,
        condition_active=True,
        evidence=evidence_of(finding),
    )
    if not (new_occurrence or escalated):
        return enriched, None
    enriched = replace(enriched, revision=ticket.revision + 1)
    event = TicketEvent(
        ticket_id=ticket.id,
        revision=enriched.revision,
        kind="updated",
        ts=finding.ts,
        detail=_clean(
            {
                "reason": "retriggered" if new_occurrence else "escalated",
                "occurrences": enriched.occurrences,
                "priority": priority.value,
                "previous_priority": ticket.priority.value if escalated else None,
                "value": finding.value,
                "peak_value": enriched.peak_value,
            }
        ),
    )
    return enriched, event


def clear_condition(
    ticket: Ticket, finding: Finding | None, ts: float
) -> tuple[Ticket, TicketEvent]:
    """The condition went back to NORMAL. The edge never closes the ticket (section 6)."""
    cleared = replace(ticket, condition_active=False, revision=ticket.revision + 1)
    detail: dict[str, Any] = {"cleared_at": ts, "peak_value": cleared.peak_value}
    if finding is not None:
        detail |= {"value": finding.value, "message": finding.message}
    event = TicketEvent(
        ticket_id=ticket.id,
        revision=cleared.revision,
        kind="condition_cleared",
        ts=ts,
        detail=_clean(detail),
    )
    return cleared, event


def acknowledge(
    ticket: Ticket, central_id: str | None, ts: float
) -> tuple[Ticket, TicketEvent | None]:
    """OPENED (or REOPENED) -> ACKNOWLEDGED. Any later state: unchanged, no event (idempotent)."""
    if ticket.state not in ACKNOWLEDGEABLE:
        return ticket, None
    acked = replace(
        ticket,
        state=TicketState.ACKNOWLEDGED,
        central_id=central_id or ticket.central_id,
        acknowledged_at=ts,
        revision=ticket.revision + 1,
    )
    event = TicketEvent(
        ticket_id=ticket.id,
        revision=acked.revision,
        kind="acknowledged",
        ts=ts,
        detail=_clean({"central_id": acked.central_id, "from_state": ticket.state.value}),
    )
    return acked, event


def more_extreme(fault_code: str, peak: float | None, value: float | None) -> float | None:
    """The new peak: see the module docstring for the direction."""
    value = _finite(value)
    if value is None:
        return peak
    if peak is None:
        return value
    return min(peak, value) if fault_code in LOW_IS_WORSE else max(peak, value)


def evidence_of(finding: Finding) -> dict[str, Any]:
    """What the ticket carries as evidence: the detector's summary, features, signal and value.

    Only small JSON values; non-finite numbers become None because JSON cannot carry them.
    """
    evidence: dict[str, Any] = {str(k): _json_safe(v) for k, v in finding.evidence.items()}
    if finding.features:
        evidence["features"] = {str(k): _finite(float(v)) for k, v in finding.features.items()}
    if finding.signal is not None:
        evidence["signal"] = finding.signal
    if finding.value is not None:
        evidence["value"] = _finite(finding.value)
    evidence["score"] = _finite(finding.score)
    evidence["ts"] = finding.ts
    return evidence


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _json_safe(value: Any) -> Any:
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    # numpy scalars and the like: as a float when they are numbers, else as text.
    try:
        return _finite(float(value))
    except (TypeError, ValueError):
        return str(value)


def _clean(detail: dict[str, Any]) -> dict[str, Any]:
    """Drop absent fields and make numbers JSON-safe."""
    return {k: _json_safe(v) for k, v in detail.items() if v is not None}


# --- the rest of the lifecycle -------------------------------------------------------------

# From which states each central command may move a ticket.
ASSIGNABLE: frozenset[TicketState] = frozenset(
    {TicketState.OPENED, TicketState.ACKNOWLEDGED, TicketState.ASSIGNED, TicketState.REOPENED}
)
CLOSABLE: frozenset[TicketState] = frozenset(
    {
        TicketState.OPENED,
        TicketState.ACKNOWLEDGED,
        TicketState.ASSIGNED,
        TicketState.IN_PROGRESS,
        TicketState.ON_HOLD,
        TicketState.REOPENED,
    }
)
# A person takes the work (`accept`), starts it, puts it on hold.
ACCEPTABLE: frozenset[TicketState] = frozenset(
    {TicketState.OPENED, TicketState.ACKNOWLEDGED, TicketState.ASSIGNED, TicketState.REOPENED}
)
STARTABLE: frozenset[TicketState] = ACCEPTABLE
HOLDABLE: frozenset[TicketState] = frozenset({TicketState.ASSIGNED, TicketState.IN_PROGRESS})


def transition(
    ticket: Ticket,
    to: TicketState,
    ts: float,
    detail: Mapping[str, Any] | None = None,
    **changes: Any,
) -> tuple[Ticket, TicketEvent]:
    """Move a ticket to another state: one event, one revision, kind = the new state in lower
    case (`closed`, `reopened`...), the change naming from and to."""
    moved = replace(ticket, state=to, revision=ticket.revision + 1, **changes)
    event = TicketEvent(
        ticket_id=ticket.id,
        revision=moved.revision,
        kind=to.value.lower(),
        ts=ts,
        detail=_clean({"from": ticket.state.value, "to": to.value} | dict(detail or {})),
    )
    return moved, event


def annotate(
    ticket: Ticket, kind: str, ts: float, detail: Mapping[str, Any], **changes: Any
) -> tuple[Ticket, TicketEvent]:
    """A reported change that is not a state transition (escalation, shelved, stale...)."""
    changed = replace(ticket, revision=ticket.revision + 1, **changes)
    event = TicketEvent(
        ticket_id=ticket.id,
        revision=changed.revision,
        kind=kind,
        ts=ts,
        detail=_clean(dict(detail)),
    )
    return changed, event


def with_attributes(ticket: Ticket, **attributes: Any) -> dict[str, Any]:
    """The ticket's attributes with some replaced (None removes one)."""
    merged = dict(ticket.attributes)
    for name, value in attributes.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = _json_safe(value)
    return merged
