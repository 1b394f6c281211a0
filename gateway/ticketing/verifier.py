"""Verification after repair, as ticket changes (DESIGN.md section 6).

When the central `close` reports a repair, the ticket goes REPAIRED then VERIFYING and a
`VerificationWatch` (verification) follows the asset's samples. Once the watch has seen
`verification_window_s` of running time, its tags' means are compared with the pre-fault
baseline stored on the ticket at open: pass publishes VERIFIED and waits for the central
`confirm` (the edge never closes a ticket itself), fail publishes
`verified` with result `fail` then REOPENED. The fault coming back during the window fails the
verification at once. Either way the payload carries before/after figures per tag.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence

from gateway.core.records import Poll, Sample, SampleBatch, Ticket, TicketState
from gateway.ticketing import escalation, tickets
from gateway.ticketing.ledger import Ledger
from gateway.ticketing.verification import VerificationWatch

log = logging.getLogger(__name__)


class RepairVerifier:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def watch(self, verifying: Ticket, before_repair: Ticket, ts: float) -> None:
        """Start watching a ticket that just went VERIFYING."""
        ledger = self._ledger
        baseline = {
            str(k): float(v) for k, v in dict(before_repair.attributes.get("baseline", {})).items()
        }
        window = ledger.policy.verification_window_s
        ledger.watches[verifying.key] = VerificationWatch(
            verifying.key,
            verifying.asset,
            ts,
            baseline,
            window,
            tags=frozenset(ledger.profile(verifying.asset).tags) | frozenset(baseline),
        )
        log.info(
            "Ticket `%s` repaired; verifying `%s` over %.0f s of running time.",
            verifying.id,
            verifying.asset,
            window,
        )

    async def observe(self, samples: Sequence[Sample]) -> None:
        """Feed samples to the watches; finish those that have seen their window."""
        ledger = self._ledger
        for watch in ledger.watches.values():
            running = ledger.run_states.running(watch.asset)
            for sample in watched_samples(samples, watch.tags):
                watch.observe(sample, running)
        for key, watch in list(ledger.watches.items()):
            if watch.due:
                await self.finish(key, watch, reraised=False)

    async def fault_came_back(self, key: str) -> None:
        watch = self._ledger.watches.get(key)
        if watch is not None:
            await self.finish(key, watch, reraised=True)

    async def finish(self, key: str, watch: VerificationWatch, *, reraised: bool) -> None:
        ledger = self._ledger
        ticket = ledger.open.get(key)
        del ledger.watches[key]
        if ticket is None or ticket.state is not TicketState.VERIFYING:
            return
        passed, figures = watch.verdict(
            ledger.policy.verification_tolerance, ledger.profile(watch.asset).rise_floors
        )
        passed = passed and not reraised
        now = ledger.clock.now()
        detail = {
            "result": "pass" if passed else "fail",
            "reason": "the fault came back" if reraised else "compared with the pre-fault baseline",
            "running_s": watch.running_s,
            "figures": figures,
        }
        attrs = tickets.with_attributes(ticket, verification=detail)
        if "first_verification" not in ticket.attributes:
            # First-time fix: whether the first repair of the ticket held.
            attrs["first_verification"] = detail["result"]
        if passed:
            # The edge never closes a ticket: VERIFIED waits for the central `confirm` (the
            # requester's sign-off where the site asks for one).
            verified, event = tickets.transition(
                ticket, TicketState.VERIFIED, now, detail, attributes=attrs
            )
            await ledger.commit(verified, [event])
            ledger.counters.verified_pass += 1
            log.info("Repair of ticket `%s` verified; waiting for the sign-off.", ticket.id)
            return
        failed, first = tickets.annotate(ticket, "verified", now, detail, attributes=attrs)
        clocks = escalation.new_clocks(ledger.policy, ticket.priority, now)
        respond_by, resolve_by = escalation.deadlines(clocks)
        reopened_attrs = dict(attrs) | {"escalation": clocks}
        for done in ("response", "resolved", "unattended"):
            reopened_attrs.pop(done, None)
        reopened, second = tickets.transition(
            failed,
            TicketState.REOPENED,
            now,
            {"reason": "verification failed"},
            condition_active=reraised or ticket.condition_active,
            respond_by=respond_by,
            resolve_by=resolve_by,
            attributes=reopened_attrs,
        )
        await ledger.commit(reopened, [first, second])
        ledger.counters.verified_fail += 1
        ledger.counters.reopened += 1
        log.warning("Repair of ticket `%s` failed verification; ticket reopened.", ticket.id)


def watched_samples(samples: Sequence[Sample], tags: Collection[str]) -> Iterator[Sample]:
    """The samples of `tags`, in order; of a runner's batch without making the samples of
    its polls' other tags."""
    if not isinstance(samples, SampleBatch):
        yield from (sample for sample in samples if sample.tag in tags)
        return
    for part in samples.parts:
        if isinstance(part, Poll):
            for index, tag in enumerate(part.tags):
                if tag in tags:
                    yield part.sample(index)
        elif part.tag in tags:
            yield part
