"""Ticketing: the edge-owned condition per dedup key and the tickets it opens or enriches
(DESIGN.md section 6). Imports only `gateway.core`; the store and the encoder come in through
the interfaces.
"""

from gateway.ticketing.conditions import ConditionPolicy, ConditionStep, Trigger
from gateway.ticketing.service import TicketService, TicketServiceStatistics

__all__ = [
    "ConditionPolicy",
    "ConditionStep",
    "TicketService",
    "TicketServiceStatistics",
    "Trigger",
]
