"""Ticketing: the edge-owned condition per dedup key and the tickets it opens or enriches
(DESIGN.md section 6): noise control, storms, SLA, knowledge base,
verification after repair, recurrence, central commands and KPIs. Imports only `gateway.core`;
the store and the encoder come in through the interfaces.
"""

from gateway.ticketing.commands import TicketCommands
from gateway.ticketing.conditions import ConditionPolicy, ConditionStep, Trigger
from gateway.ticketing.knowledge import KnowledgeBase
from gateway.ticketing.policy import AssetProfile, LifecyclePolicy, SlaTarget
from gateway.ticketing.service import TicketService, TicketServiceStatistics
from gateway.ticketing.topology import Link

__all__ = [
    "AssetProfile",
    "ConditionPolicy",
    "ConditionStep",
    "KnowledgeBase",
    "LifecyclePolicy",
    "Link",
    "SlaTarget",
    "TicketCommands",
    "TicketService",
    "TicketServiceStatistics",
    "Trigger",
]
