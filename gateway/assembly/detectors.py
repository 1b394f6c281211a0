"""The detectors of every rule of every device, each built by its rule kind's plugin."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from gateway.assembly.plant import ConfiguredDevice
from gateway.core.interfaces import Detector
from gateway.core.plugins import PluginTable, RulePlugin


def build_detectors(
    devices: Sequence[ConfiguredDevice], rules: PluginTable[RulePlugin]
) -> list[Detector]:
    units = {tag.id: tag.unit for device in devices for tag in device.tags if tag.unit}
    return [
        rules.get(rule.kind).detector(rule, dataclasses.replace(device.spec, units=units))
        for device in devices
        for rule in device.config.rules
    ]
