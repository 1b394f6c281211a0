"""The body of every central command, defined once as data (DESIGN.md section 7).

One pydantic model per verb: `commands.VERBS` pairs each with the code that applies it, the
handler validates every body against its model before anything changes, and
`commands.command_schemas()` exports the same models as JSON Schema for the contract (shipped as
`gateway/ticketing/commands.schema.json`, checked against this module by a test).

Strict on purpose: a command is hostile until validated. No coercion ("3" is not 3, true is not
1), no unknown fields, finite numbers only, identifiers without control characters, bounded
text. The JSON itself (size, nesting, NaN, duplicate keys) is checked by the uplink before
this, because that is where the bytes arrive.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

MAX_ID_CHARS = 200
MAX_TEXT_CHARS = 2000
MAX_SHELVE_S = 8 * 3600  # ISA-18.2 shelving is timed; the site may set less (`max_shelve_h`)
# 9999-12-31T23:59:59Z: any later epoch cannot be written as a date, so it cannot be a window.
MAX_EPOCH_S = 253_402_300_799
MAX_REVISION = 2**63 - 1  # SQLite INTEGER

# Printable text with at least one non-blank character: no control characters, which would
# corrupt log lines and terminals of whoever reads them later.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=_PRINTABLE)
]
Text = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS, pattern=_PRINTABLE)
]
Revision = Annotated[int, Field(ge=1, le=MAX_REVISION)]


class CommandBody(BaseModel):
    """What every command carries."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    command_id: Identifier = Field(
        description="Unique per command; a repeat within the idempotency window gets the "
        "first reply back with `detail.replayed = true` and has no second effect."
    )
    actor: Identifier | None = Field(
        default=None,
        description="Who sends the command; must be in `ticketing.command_actors` when that "
        "list is set.",
    )


class TicketCommandBody(CommandBody):
    """A command on one ticket."""

    ticket_id: Identifier = Field(description="The ticket (`data.id` of its messages).")
    if_revision: Revision | None = Field(
        default=None,
        description="Apply only if the ticket is at this revision; otherwise rejected as "
        "stale with `detail.current_revision`.",
    )


class AckCommand(CommandBody):
    """Settles ticket messages (stops their resending) and moves an OPENED or REOPENED ticket
    to ACKNOWLEDGED."""

    verb: Literal["ack"] | None = Field(default=None, description="The topic's verb, if given.")
    event_id: Identifier | None = Field(
        default=None, description="The CloudEvents `id` of the message acknowledged."
    )
    ticket_id: Identifier | None = Field(
        default=None,
        description="The ticket acknowledged. Alone, it settles every message of the ticket "
        "published so far.",
    )
    central_id: Identifier | None = Field(
        default=None, description="The central system's own id for the work order."
    )
    if_revision: Revision | None = Field(
        default=None, description="Apply only if the ticket is at this revision."
    )

    @model_validator(mode="after")
    def _names_something(self) -> Self:
        if self.event_id is None and self.ticket_id is None:
            raise ValueError("`ack` needs `event_id` and/or `ticket_id`")
        return self


class AssignCommand(TicketCommandBody):
    """Moves the ticket to ASSIGNED."""

    verb: Literal["assign"] | None = Field(default=None, description="The topic's verb, if given.")
    assignee: Text = Field(description="Who does the work.")
    team: Text | None = Field(default=None, description="The team of the assignee.")


class CloseCommand(TicketCommandBody):
    """CLOSED, or REPAIRED and VERIFYING when `repaired`; CANCELLED with `cancel_reason`."""

    verb: Literal["close"] | None = Field(default=None, description="The topic's verb, if given.")
    resolution: Text | None = Field(
        default=None, description="What was done; required unless `cancel_reason` is given."
    )
    cause: Text | None = Field(default=None, description="The cause in words (optional).")
    cause_code: Identifier | None = Field(
        default=None,
        description="Failure cause code: ISO 14224 (e.g. `3.4` expected wear and tear) or a "
        "site code from `ticketing.cause_codes`; required unless `cancel_reason` is given.",
    )
    remedy_code: Identifier | None = Field(
        default=None,
        description="Remedy (maintenance activity) code: ISO 14224 (e.g. `1` replace) or a "
        "site code from `ticketing.remedy_codes`; required unless `cancel_reason` is given.",
    )
    repaired: bool = Field(
        default=False,
        description="A repair: the edge verifies it against the pre-fault baseline before "
        "the ticket closes.",
    )
    cancel_reason: Text | None = Field(
        default=None, description="Cancel the ticket instead of closing it (not a repair)."
    )

    @model_validator(mode="after")
    def _resolution_or_cancel(self) -> Self:
        if self.cancel_reason is None and self.resolution is None:
            raise ValueError("`close` needs `resolution` (or `cancel_reason` to cancel)")
        if self.cancel_reason is not None and self.repaired:
            raise ValueError("a cancelled ticket cannot be repaired")
        if self.cancel_reason is None and (self.cause_code is None or self.remedy_code is None):
            raise ValueError(
                "`close` needs a coded cause and remedy: `cause_code` and `remedy_code`"
            )
        return self


class PersonCommandBody(TicketCommandBody):
    """A command only a person sends: `actor` names that person."""

    actor: Identifier = Field(
        description="The person (technician, requester) who acts; stored with the event and, "
        "for `accept`/`start`, as the first response."
    )
    note: Text | None = Field(default=None, description="Free text for the work order.")


class AcceptCommand(PersonCommandBody):
    """A person accepts the work: the first response (stops the response clock); the ticket
    is ASSIGNED to that person unless already assigned."""

    verb: Literal["accept"] | None = Field(default=None, description="The topic's verb, if given.")


class StartCommand(PersonCommandBody):
    """Work starts on site: IN_PROGRESS (a first response when nobody accepted before)."""

    verb: Literal["start"] | None = Field(default=None, description="The topic's verb, if given.")


class HoldCommand(PersonCommandBody):
    """The work waits: ON_HOLD with a reason; the site's rule per reason decides whether the
    resolution clock stops (by default it stops for access and production, not for parts)."""

    verb: Literal["hold"] | None = Field(default=None, description="The topic's verb, if given.")
    reason: Literal["parts", "access", "production"] = Field(
        description="Waiting for spare parts, for access to the asset, or for production to "
        "release it."
    )


class ResumeCommand(PersonCommandBody):
    """The work goes on: ON_HOLD -> IN_PROGRESS; a stopped clock runs again."""

    verb: Literal["resume"] | None = Field(default=None, description="The topic's verb, if given.")


class ConfirmCommand(PersonCommandBody):
    """Sign-off of a verified repair: VERIFIED -> CLOSED. Where the site asks for a requester
    sign-off (`ticketing.signoff_actors`), only those actors may send it."""

    verb: Literal["confirm"] | None = Field(default=None, description="The topic's verb, if given.")


class ShelveCommand(TicketCommandBody):
    """Shelves the ticket's condition: timed (`duration_s`) or until it next clears."""

    verb: Literal["shelve"] | None = Field(default=None, description="The topic's verb, if given.")
    reason: Text = Field(description="Why the condition is shelved.")
    duration_s: Annotated[float, Field(gt=0, le=MAX_SHELVE_S)] | None = Field(
        default=None, description="Timed shelving, in seconds (at most 8 h, ISA-18.2)."
    )
    one_shot: bool = Field(
        default=False, description="Shelved until the condition next clears (no duration)."
    )

    @model_validator(mode="after")
    def _timed_or_one_shot(self) -> Self:
        if (self.duration_s is None) == (not self.one_shot):
            raise ValueError("`shelve` needs either `duration_s` (timed) or `one_shot: true`")
        return self


class UnshelveCommand(TicketCommandBody):
    """Ends the shelving of the ticket's condition."""

    verb: Literal["unshelve"] | None = Field(
        default=None, description="The topic's verb, if given."
    )


class MaintenanceCommand(CommandBody):
    """Puts an asset out of service until a time: its conditions open nothing."""

    verb: Literal["maintenance"] | None = Field(
        default=None, description="The topic's verb, if given."
    )
    asset: Identifier = Field(description="The asset id from the device YAML.")
    until: Annotated[float, Field(gt=0, le=MAX_EPOCH_S)] = Field(
        description="End of maintenance mode, epoch seconds (UTC); must be in the future."
    )


class SnapshotCommand(CommandBody):
    """Replies with a bounded summary of a ticket or an asset; never raw data."""

    verb: Literal["snapshot"] | None = Field(
        default=None, description="The topic's verb, if given."
    )
    ticket_id: Identifier | None = Field(default=None, description="The ticket to summarise.")
    asset: Identifier | None = Field(default=None, description="The asset to summarise.")
    if_revision: Revision | None = Field(
        default=None, description="With `ticket_id`: only if the ticket is at this revision."
    )

    @model_validator(mode="after")
    def _ticket_or_asset(self) -> Self:
        if (self.ticket_id is None) == (self.asset is None):
            raise ValueError("`snapshot` needs exactly one of `ticket_id` and `asset`")
        return self


class ResyncCommand(CommandBody):
    """Republishes every open ticket (coalesced with resync messages still unacknowledged)."""

    verb: Literal["resync"] | None = Field(default=None, description="The topic's verb, if given.")
