"""`Recovery.wait`: the backoff delay, cut short only when the probe sees the endpoint come
back after having seen it down (or after a failed connect)."""

from __future__ import annotations

import asyncio
import time

from gateway.pipeline.supervision import Recovery


class Probe:
    """Answers in turn, then keeps giving its last answer; counts its calls."""

    def __init__(self, *answers: bool) -> None:
        self.answers, self.calls = list(answers), 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def test_a_return_seen_by_the_probe_ends_the_wait_early() -> None:
    probe = Probe(False, False, True)
    started = time.monotonic()
    cut = await Recovery(probe, interval_s=0.02).wait(5.0, connect_failed=False)
    assert cut and time.monotonic() - started < 1.0 and probe.calls == 3


async def test_a_failed_connect_counts_as_seen_down() -> None:
    probe = Probe(True)
    cut = await Recovery(probe, interval_s=0.02).wait(5.0, connect_failed=True)
    assert cut and probe.calls == 1


async def test_an_endpoint_that_accepts_but_failed_its_requests_waits_the_whole_delay() -> None:
    probe = Probe(True)
    started = time.monotonic()
    cut = await Recovery(probe, interval_s=0.02).wait(0.3, connect_failed=False)
    assert not cut and time.monotonic() - started >= 0.3 and probe.calls >= 5


async def test_without_a_probe_the_wait_is_the_delay_and_ticks_keep_their_rate() -> None:
    ticks: list[float] = []

    async def tick() -> None:
        ticks.append(time.monotonic())

    started = time.monotonic()
    cut = await Recovery(None).wait(0.25, connect_failed=True, every_s=0.05, on_tick=tick)
    assert not cut and time.monotonic() - started >= 0.25
    assert 5 <= len(ticks) <= 6 and ticks[0] - started < 0.02
    await asyncio.sleep(0)
