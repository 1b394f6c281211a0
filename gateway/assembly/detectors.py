"""The detectors of every rule of every device, each built by its rule kind's plugin."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.assembly.plant import ConfiguredDevice
from gateway.core.interfaces import Detector
from gateway.core.plugins import PluginTable, RulePlugin


def build_detectors(
    devices: Sequence[ConfiguredDevice], rules: PluginTable[RulePlugin]
) -> list[Detector]:
    return [
        rules.get(rule.kind).detector(rule, device.spec)
        for device in devices
        for rule in device.config.rules
    ]
