"""The site's default ticket policy, as the daemon builds it from an empty `ticketing:`
section, with the changes a test needs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.assembly.ticketing import lifecycle_policy
from gateway.config.models import TicketingConfig
from gateway.ticketing.policy import LifecyclePolicy


def default_policy(**changes: Any) -> LifecyclePolicy:
    return replace(lifecycle_policy(TicketingConfig()), **changes)
