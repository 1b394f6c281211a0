"""Certificates made in the test (the `cryptography` package) and a mosquitto with a TLS
listener that requires a client certificate and a password (issue 6, "Uplink")."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.broker import find_mosquitto, free_loopback_port


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _issue(
    subject: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer if not ca else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    signing_key = key if ca else issuer_key
    return builder.sign(signing_key, hashes.SHA256()), key


def make_pki(directory: Path, ca_name: str = "test-ca") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _issue(ca_name, ec.generate_private_key(ec.SECP256R1()), _name(ca_name),
                             ca=True)  # fmt: skip
    server_cert, server_key = _issue("broker", ca_key, ca_cert.subject, server=True)
    client_cert, client_key = _issue("edge-plant-a-gw-1", ca_key, ca_cert.subject)
    pem = serialization.Encoding.PEM
    pki = Pki(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )
    pki.ca_file.write_bytes(ca_cert.public_bytes(pem))
    pki.server_cert.write_bytes(server_cert.public_bytes(pem))
    pki.client_cert.write_bytes(client_cert.public_bytes(pem))
    _write_key(server_key, pki.server_key)
    _write_key(client_key, pki.client_key)
    return pki


class TlsBroker:
    """mosquitto with one TLS listener (client certificate and password required) and one
    plaintext listener for observers; both on loopback."""

    def __init__(self, directory: Path, pki: Pki, users: dict[str, str]) -> None:
        self.directory = directory
        self.pki = pki
        self.tls_port = free_loopback_port()
        self.plain_port = free_loopback_port()
        self.users = users
        self.log_file = directory / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> TlsBroker:
        passwords = self.directory / "passwd"
        passwords.write_text("")
        for user, password in self.users.items():
            subprocess.run(
                ["mosquitto_passwd", "-b", str(passwords), user, password],
                check=True,
                capture_output=True,
            )
        config = self.directory / "mosquitto.conf"
        lines = [
            "per_listener_settings true",
            f"log_dest file {self.log_file}",
            "log_type all",
            f"listener {self.tls_port} 127.0.0.1",
            f"cafile {self.pki.ca_file}",
            f"certfile {self.pki.server_cert}",
            f"keyfile {self.pki.server_key}",
            "require_certificate true",
            "tls_version tlsv1.2",
            f"password_file {passwords}",
            "allow_anonymous false",
            f"listener {self.plain_port} 127.0.0.1",
            "allow_anonymous true",
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")
        config.write_text("\n".join(lines) + "\n")
        self._process = subprocess.Popen(
            [find_mosquitto(), "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import socket
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.plain_port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.02)
        else:
            raise RuntimeError(f"TLS mosquitto did not start: {self.log_file.read_text()}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=5)
