"""Optional DKIM signatures (RFC 6376) on submitted mail, one key per domain, with dkimpy.

A signature says "this domain takes responsibility for this message", and receivers apply it to
the domain of the From: header (DMARC, RFC 7489 section 3.1). So the proxy signs with the key of
the From: address's domain (or of its nearest parent with a key, which relaxed alignment accepts),
and only when that From: address is one the authenticated user may send as (the same rule as the
envelope sender, `plan.owns`): our key must not vouch for a From: the user does not own. A message
without exactly one From: address is not signed, as RFC 6376 section 5.4 requires From: in every
signature.

The signature is made last, after our Received: header is added, and goes on top; dkimpy signs its
recommended header list (not Received:, which later hops may reorder) with relaxed/simple
canonicalisation, which survives the header rewrapping MTAs do. Keys are PEM files, refused if
group or others can read them: whoever holds one can sign as the domain. RSA only (rsa-sha256, at
least 1024 bits, RFC 8301): every verifier must support it, while Ed25519 (RFC 8463) is meant to
be used beside RSA, not instead, and dkimpy would need PyNaCl for it, a dependency for no gain.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

log = logging.getLogger("antiforgery.submission")


class DkimKeyError(ValueError):
    """A DKIM key file cannot be used; the message names the file."""


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    private: bytes = b""  # PKCS#1 PEM, as dkimpy takes it

    def __repr__(self) -> str:  # never show the key, not even in a traceback
        return f"DkimKey({self.domain!r}, {self.selector!r})"


def load_key(domain: str, selector: str, path: Path) -> DkimKey:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise DkimKeyError(f"{path}: cannot open DKIM key: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise DkimKeyError(f"{path}: DKIM key is accessible to group or others; run 'chmod 600' on it")
        data = handle.read()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise DkimKeyError(f"{path}: not an unencrypted PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimKeyError(f"{path}: DKIM keys must be RSA (rsa-sha256), not {type(key).__name__}")
    if key.key_size < 1024:
        raise DkimKeyError(f"{path}: RSA key of {key.key_size} bits; RFC 8301 requires at least 1024")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return DkimKey(domain, selector, pem)


def header_from(message: bytes) -> str | None:
    """The one address of the From: header, or None if there is not exactly one."""
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(message)
    values = headers.get_all("From") or []
    if len(values) != 1:
        return None
    addresses = [a for _, a in email.utils.getaddresses([str(values[0])]) if a]
    return addresses[0] if len(addresses) == 1 and "@" in addresses[0] else None


class DkimSigner:
    def __init__(self, keys: list[DkimKey]) -> None:
        self.keys = {key.domain: key for key in keys}

    @classmethod
    def from_entries(cls, entries: list[tuple[str, str, Path]]) -> DkimSigner:
        return cls([load_key(domain, selector, path) for domain, selector, path in entries])

    def key_for(self, address: str) -> DkimKey | None:
        """The key of the address's domain or of its nearest parent domain that has one."""
        labels = address.rpartition("@")[2].lower().rstrip(".").split(".")
        for i in range(len(labels) - 1):
            key = self.keys.get(".".join(labels[i:]))
            if key is not None:
                return key
        return None

    def signature(self, message: bytes, from_address: str) -> bytes | None:
        """The DKIM-Signature header field (folded, CRLF) to put on top, or None to leave it unsigned."""
        key = self.key_for(from_address)
        if key is None:
            return None
        try:
            header = dkim.sign(
                message,
                key.selector.encode("ascii"),
                key.domain.encode("ascii"),
                key.private,
                signature_algorithm=b"rsa-sha256",
                linesep=b"\r\n",
            )
        except dkim.DKIMException as exc:
            log.warning("not DKIM-signed for %s: %s", key.domain, exc)
            return None
        return bytes(header)
