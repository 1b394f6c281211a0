"""The ticket policy's defaults are written once, in the configuration models: the ticketing
package's plain policy values have none of their own, so a default changed in
`gateway.config.models` is the daemon's default, and a field the root forgets to convert fails at
start instead of quietly keeping a second value."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.assembly.ticketing import lifecycle_policy
from gateway.config.models import TicketingConfig
from gateway.core.records import Priority
from gateway.ticketing.policy import LifecyclePolicy, SlaTarget


@pytest.mark.parametrize("record", [LifecyclePolicy, SlaTarget], ids=lambda r: r.__name__)
def test_policy_values_have_no_defaults_of_their_own(record: type) -> None:
    with_default = [
        f.name
        for f in dataclasses.fields(record)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    assert with_default == []


def test_a_changed_config_value_reaches_the_policy() -> None:
    # One field of each kind of conversion: plain, hours to seconds, and one added late.
    cfg = TicketingConfig(
        chatter_cycles=7, stale_after_h=2.0, incident_update_interval_s=15.0, group_wait_s=5.0
    )
    policy = lifecycle_policy(cfg)
    assert policy.chatter_cycles == 7
    assert policy.stale_after_s == 7200.0
    assert policy.incident_update_interval_s == 15.0
    assert policy.group_wait_s == 5.0
    assert set(policy.sla) == set(Priority)
