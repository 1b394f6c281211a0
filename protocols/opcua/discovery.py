"""`edge-gateway browse opc.tcp://HOST:PORT [--node NODE] [--depth N]`: an OPC UA server's
variables, with their data types, arrays marked as waveform candidates and the security modes
offered, drafted as a device file.

Read-only: GetEndpoints, a session, Browse and Read, nothing else (the driver's session, with
the security and login options given here exactly as a device file would give them). The
draft is built by `protocols.opcua.browse`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.core.clock import SystemClock
from gateway.core.plugins import DeviceDraft, DiscoveryCommand, Option
from gateway.core.yaml_text import flow_mapping, scalar
from protocols.opcua.browse import device_id_for, draft_from_browse, offered_text
from protocols.opcua.config import (
    OpcUaConnection,
    SecurityMode,
    SecurityPolicy,
    UsernameLogin,
    is_node_id,
)

_PATH_KEYS = ("certificate", "private_key", "trust_list")


def connection_from(options: Mapping[str, Any]) -> OpcUaConnection:
    """The connection the options describe, validated like a device file's."""
    endpoint = options["endpoint"]
    if not str(endpoint).startswith("opc.tcp://"):
        raise ValueError(f"`{endpoint}` is not an endpoint URL such as opc.tcp://10.0.0.5:4840")
    fields: dict[str, Any] = {"protocol": "opcua", "endpoint": endpoint}
    for key in ("security_policy", "security_mode", *_PATH_KEYS):
        if options.get(key):
            fields[key] = options[key]
    if options.get("username"):
        fields["login"] = {"method": "username", "username": options["username"],
                           "password_file": options.get("password_file") or ""}  # fmt: skip
    if options.get("timeout"):
        fields["timeout_s"] = options["timeout"]
    from pydantic import ValidationError

    try:
        return OpcUaConnection.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            ".".join(str(part) for part in e["loc"]) + ": " + e["msg"].removeprefix("Value error, ")
            if e["loc"] else e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )  # fmt: skip
        raise ValueError(problems) from None


def connection_lines(connection: OpcUaConnection, folder: Path | None) -> list[str]:
    """The connection keys after `endpoint` for the draft: security, files, login."""
    lines: list[str] = []
    if connection.security_mode is not SecurityMode.NONE:
        lines += [
            f"  security_policy: {scalar(str(connection.security_policy))}",
            f"  security_mode: {scalar(str(connection.security_mode))}",
        ]
        for key in _PATH_KEYS:
            value = getattr(connection, key)
            if value is not None:
                lines.append(f"  {key}: {scalar(_reference(value, folder))}")
    login = connection.login
    if isinstance(login, UsernameLogin):
        entry = {"method": "username", "username": login.username,
                 "password_file": _reference(login.password_file, folder)}  # fmt: skip
        lines.append(f"  login: {flow_mapping(entry)}")
    if connection.timeout_s is not None:
        lines.append(f"  timeout_s: {scalar(connection.timeout_s)}")
    return lines


def _reference(name: str, folder: Path | None) -> str:
    """A file named on the command line (relative to the working directory), as the draft
    must name it: relative to the draft's folder, or absolute for standard output."""
    absolute = os.path.abspath(name)
    if folder is None:
        return absolute
    relative = os.path.relpath(absolute, os.path.abspath(folder))
    return absolute if relative.startswith(os.path.join(os.pardir, os.pardir)) else relative


async def _draft(options: Mapping[str, Any], folder: Path | None) -> DeviceDraft:
    from protocols.opcua.driver import OpcUaDriver, offered_endpoints  # asyncua, lazily

    start = options["node"]
    if start is not None and not is_node_id(start):
        raise ValueError(f"--node `{start}` is not a NodeId such as ns=2;s=Pump or i=85")
    if options["depth"] < 1 or options["max_nodes"] < 1:
        raise ValueError("--depth and --max-nodes must be at least 1")
    connection = connection_from(options)
    timeout = connection.request_timeout_s()
    offered = await offered_endpoints(connection.endpoint, timeout)
    wanted = (str(connection.security_policy), str(connection.security_mode))
    if not any((e.policy, e.mode) == wanted for e in offered):
        raise ValueError(
            f"the server offers no endpoint with security {wanted[0]} {wanted[1]}; it offers: "
            + "; ".join(offered_text(offered))
            + ". Give --security-policy and --security-mode with --certificate, --private-key"
            " and --trust-list"
        )
    driver = OpcUaDriver("browse", connection, [], [], SystemClock())
    async with driver:
        result = await driver.browse(start, options["depth"], options["max_nodes"])
    result = dataclasses.replace(result, endpoints=tuple(offered))
    command = f"edge-gateway browse {connection.endpoint}" + (f" --node {start}" if start else "")
    return draft_from_browse(
        result,
        endpoint=connection.endpoint,
        device_id=options["id"] or device_id_for(connection.endpoint),
        connection_lines=connection_lines(connection, folder),
        command=options.get("command_line") or command,
    )


BROWSE = DiscoveryCommand(
    name="browse",
    help="browse an OPC UA server (read-only): its variables, data types, arrays as waveform"
    " candidates and the security modes offered, drafted as a device file",
    options=(
        Option(("endpoint",), "the server's endpoint URL", metavar="opc.tcp://HOST:PORT"),
        Option(("--node",), "start at this NodeId (default: the Objects folder)"),
        Option(("--depth",), "levels below the start node (default 4)", type=int, default=4),
        Option(("--max-nodes",), "nodes visited at most (default 1000)", type=int,
               default=1000),
        Option(("--security-policy",), "security policy (default None)",
               choices=tuple(p.value for p in SecurityPolicy)),
        Option(("--security-mode",), "security mode (default None)",
               choices=tuple(m.value for m in SecurityMode)),
        Option(("--certificate",), "the gateway's application instance certificate"),
        Option(("--private-key",), "its private key"),
        Option(("--trust-list",), "folder of trusted server certificates"),
        Option(("--username",), "log in with this user name (with --password-file)"),
        Option(("--password-file",), "file holding the password"),
        Option(("--timeout",), "seconds per request (default 4)", type=float),
        Option(("--id",), "device id (default: from the endpoint URL)"),
    ),
    draft=_draft,
)
