"""Detector families. The table below is how the rest of the gateway finds them: rule kind
(the `kind` of a rule in a device file) -> "module:object" of its plugin
(`gateway.core.plugins.RulePlugin`), imported on first use. Adding a rule kind is its folder
plus one line here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.core.plugins import PluginTable

if TYPE_CHECKING:
    from gateway.core.plugins import RulePlugin

RULES: PluginTable[RulePlugin] = PluginTable(
    "rule kind",
    {
        "threshold": "detectors.threshold.rule:THRESHOLD",
        "vibration": "detectors.vibration.rule:VIBRATION",
    },
)
