"""A small protocol that exists only in the tests: a "ramp" device whose values rise by a fixed
step every poll. It is registered through the protocol table alone, to prove that a protocol is
its folder plus one table line (nothing in gateway/ knows it)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from gateway.core.clock import Clock
from gateway.core.errors import ConfigProblem
from gateway.core.interfaces import PollingDriver, Record
from gateway.core.plugins import DeviceIssue, DeviceSpec, Endpoint, LinkKey, PollingEndpoint
from gateway.core.records import Quality, Sample, Tag


class RampConnection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["ramp"]
    name: str = Field(description="Which ramp generator.")

    def resource_claims(self) -> tuple[str, ...]:
        return (f"ramp {self.name}",)


class RampValue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$", description="Tag name.")
    start: float = Field(0.0, description="First value.")
    step: float = Field(1.0, description="Added every poll; must not be 0.")
    unit: str = Field("", description="Unit.")


class RampDriver:
    def __init__(self, device: DeviceSpec, tags: Sequence[Tag], clock: Clock) -> None:
        self._device, self._tags, self._clock = device, tags, clock
        self._polls = 0

    @property
    def endpoint(self) -> str:
        return f"ramp:{self._device.connection.name}"

    def tags(self) -> Sequence[Tag]:
        return self._tags

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def read(self) -> Sequence[Record]:
        now = self._clock.now()
        values: Sequence[RampValue] = self._device.values
        samples = [
            Sample(tag.id, now, v.start + v.step * self._polls, Quality.GOOD)
            for tag, v in zip(self._tags, values, strict=True)
        ]
        self._polls += 1
        return samples


class Ramp:
    name = "ramp"
    connection_model = RampConnection
    values_field = "ramps"
    value_model = RampValue
    values_description = "Ramp devices: the values generated."

    def tags(self, device: DeviceSpec) -> list[Tag]:
        return [Tag(device.tag_id(v.name), device.asset, v.unit) for v in device.values]

    def endpoints(self, devices: Sequence[DeviceSpec], clock: Clock) -> list[Endpoint]:
        endpoints: list[Endpoint] = []
        for device in devices:
            tags = self.tags(device)

            def driver(device: DeviceSpec = device, tags: list[Tag] = tags) -> PollingDriver:
                return RampDriver(device, tags, clock)

            endpoints.append(
                PollingEndpoint(device.id, driver, device.poll_period_s, device.poll_period_s)
            )
        return endpoints

    def link(self, device: DeviceSpec) -> LinkKey:
        return LinkKey.named(self.name, "ramp", device.connection.name)

    def check(self, devices: Sequence[DeviceSpec]) -> Iterable[DeviceIssue | ConfigProblem]:
        for index, device in enumerate(devices):
            for n, value in enumerate(device.values):
                if value.step == 0:
                    yield DeviceIssue(index, f"ramps.{n}.step", "a ramp with step 0 is flat")


RAMP = Ramp()
