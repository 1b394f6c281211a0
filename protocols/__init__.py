"""One subpackage per protocol. The table below is how the rest of the gateway finds them:
protocol name (the `connection.protocol` of a device file) -> "module:object" of its plugin
(`gateway.core.plugins.ProtocolPlugin`), imported on first use. Adding a protocol is its
folder plus one line here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.core.plugins import PluginTable

if TYPE_CHECKING:
    from gateway.core.plugins import ProtocolPlugin

PROTOCOLS: PluginTable[ProtocolPlugin] = PluginTable(
    "protocol",
    {
        "modbus_tcp": "protocols.modbus.plugin:MODBUS_TCP",
        "modbus_rtu": "protocols.modbus.plugin:MODBUS_RTU",
        "opcua": "protocols.opcua.plugin:OPCUA",
        "can": "protocols.can.plugin:CAN",
    },
)
