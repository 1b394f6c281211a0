"""The MQTT uplink from `gateway.yaml`'s `uplink:` section: its topics, the encoder that turns
ticket changes into messages, and the link settings (certificate paths resolved against
gateway.yaml's folder, the password read from its file)."""

from __future__ import annotations

from collections.abc import Callable

from gateway.config.loader import LoadedConfig
from gateway.core.interfaces import MessageEncoder
from uplink.events import Topics, make_ticket_encoder
from uplink.mqtt import TlsSettings
from uplink.service import UplinkSettings


def topics(loaded: LoadedConfig) -> Topics:
    cfg = loaded.gateway
    return Topics(cfg.uplink.topic_prefix, cfg.site, cfg.gateway_id)


def ticket_encoder(loaded: LoadedConfig, sequence: Callable[[], int]) -> MessageEncoder:
    """`sequence` gives the next per-gateway CloudEvents sequence number (state.db owns it)."""
    cfg = loaded.gateway
    source = f"urn:edge:{cfg.site}:{cfg.gateway_id}"
    return make_ticket_encoder(topics(loaded), source=source, sequence=sequence)


def uplink_settings(loaded: LoadedConfig) -> UplinkSettings:
    cfg = loaded.gateway
    return UplinkSettings.from_config(
        cfg.uplink,
        cfg.site,
        cfg.gateway_id,
        password=_password(loaded),
        tls=_tls(loaded),
    )


def _tls(loaded: LoadedConfig) -> TlsSettings | None:
    """No TLS section means a plaintext link (loopback only)."""
    tls = loaded.gateway.uplink.tls
    if tls is None:
        return None
    return TlsSettings(
        ca_file=str(loaded.resolve(tls.ca_file)),
        cert_file=str(loaded.resolve(tls.cert_file)),
        key_file=str(loaded.resolve(tls.key_file)),
    )


def _password(loaded: LoadedConfig) -> str | None:
    """Secrets come from a file named in the config, never from the config itself."""
    name = loaded.gateway.uplink.password_file
    return None if name is None else loaded.resolve(name).read_text().strip()
