"""STARTTLS for the submission proxy (RFC 3207): the server context, and a self-signed pair for tests.

Passwords cross the submission port, so AUTH is offered only inside TLS (RFC 4954 section 4,
design invariant 7). The context refuses TLS below 1.2 (RFC 8996 deprecates 1.0 and 1.1) and
asks for no client certificate: users prove who they are with AUTH, not with certificates.

`make_self_signed` is what `antiforgery init --self-signed-cert` writes: good for tests and for a
first start, never for users, whose clients would (rightly) warn about an unknown issuer.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class TLSConfigError(ValueError):
    """The certificate or key cannot be loaded; the message names the file."""


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server-side context for STARTTLS with the configured certificate chain and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    try:
        context.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as exc:
        raise TLSConfigError(f"{exc.filename}: no such certificate or key file") from None
    except (ssl.SSLError, OSError) as exc:
        raise TLSConfigError(f"{cert_file}, {key_file}: cannot load the certificate and key ({exc})") from None
    return context


def make_self_signed(cert_file: Path, key_file: Path, hostname: str, now: dt.datetime, days: int = 825) -> None:
    """Write a self-signed certificate for `hostname` (and loopback) and its key (mode 0600).

    ECDSA P-256: small and accepted by every current TLS stack. The key file is created with
    O_EXCL at mode 0600, so it is never readable by others, not even for a moment.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    alt_names: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost")]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
