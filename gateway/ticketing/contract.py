"""What ticketing contributes to the contract (DESIGN.md section 7).

- The command schemas: `commands.schema.json`, shipped in the package beside this module, is
  one JSON Schema document with the body of every verb of `commands.VERBS` under
  `$defs/<verb>`, for integrators; the AsyncAPI document (`uplink/asyncapi.json`) carries the
  same schemas, one message per verb.
- The ticket event kinds (`event_kinds()`): every state of `TicketState` as a transition, and
  the changes that are not state changes (`ANNOTATIONS`). `tests/test_contract.py`
  finds every kind the ticketing code emits and fails when one is missing here.

A test fails when a shipped file differs from the code; regenerate all of them with
`python -m gateway.cli.contract --write`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.core.records import TicketState
from gateway.ticketing.commands import command_schemas
from gateway.ticketing.escalation import ESCALATION_KINDS

SCHEMA_FILE = Path(__file__).with_name("commands.schema.json")

# Ticket event kinds that are not a state transition (published on `updated`).
ANNOTATIONS: dict[str, str] = {
    "updated": "Enrichment: a re-trigger, a more urgent finding (priority raised), a catch-up "
    "after a flood (`change.reason`); on incidents, the members and root cause.",
    "condition_cleared": "The edge condition returned to normal; the ticket stays open.",
    "condition_stale": "The condition has been active for longer than `stale_after_h`.",
    "accepted": "A person accepted the work (`cmd/accept`): the first response, with its actor.",
    "eradicated": "30 days (`eradication_days`) after the close without the same signature "
    "coming back: the fault counts as eradicated.",
    "shelved": "The condition was shelved (`cmd/shelve`).",
    "unshelved": "The shelving ended (`cmd/unshelve`, timed out, or the condition cleared).",
    "resync": "Republished on `cmd/resync`: the ticket at its current revision.",
    # `verified` is also a state; a failed verification uses the kind without moving the
    # ticket to VERIFIED, and, like every transition kind, is published on `transition`.
    "verified": "A repair verification: `change.result` pass (the ticket moves to VERIFIED) "
    "or fail (it stays, and is reopened).",
    # The escalation policy with an end (`escalation.py`): warnings, breaches, levels, and
    # one `unattended` after the last level.
    **{kind: text[0].upper() + text[1:] + "." for kind, text in ESCALATION_KINDS.items()},
}


def event_kinds() -> dict[str, str]:
    """Every ticket event kind with a description: `opened`, one per state transition (the
    state in lower case), and the annotations."""
    kinds = {"opened": "A new ticket (revision 1)."}
    for state in TicketState:
        if state is not TicketState.OPENED:
            kinds[state.value.lower()] = f"The ticket moved to {state.value}."
    kinds.update(ANNOTATIONS)
    return kinds


def schema_document() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Edge gateway commands",
        "description": "The JSON body of each command published on `<prefix>/<site>/<gateway>/"
        "cmd/<verb>` (MQTT 5, QoS 1, with a response topic and correlation data); see "
        "docs/TICKETS.md. At most 64 KiB, nesting at most 8 deep, no duplicate keys, finite "
        "numbers only.",
        "$defs": command_schemas(),
    }


def render_schema() -> str:
    return json.dumps(schema_document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    SCHEMA_FILE.write_text(render_schema(), encoding="utf-8")
    print(f"wrote {SCHEMA_FILE} (the AsyncAPI document: python -m gateway.cli.contract --write)")
