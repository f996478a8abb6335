"""DKIM signing of submitted mail, verified with dkimpy's own `dkim.verify` against the test public key."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from proxy_harness import RunningProxy, add_users

from gateway.store import Store
from gateway.submission.dkim_sign import DkimKeyError, DkimSigner, load_key

StartProxy = Callable[..., RunningProxy]
MESSAGE = (
    "From: Alice <alice@example.ac.uk>\r\nTo: bob@other.org\r\nSubject: signed\r\n"
    "Date: Mon, 23 Nov 2026 09:00:00 +0000\r\nMessage-ID: <m1@example.ac.uk>\r\n\r\nHello, Bob.\r\n"
)


def write_key(directory: Path, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, mode: int = 0o600) -> Path:
    path = directory / "dkim.pem"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    os.chmod(path, mode)
    return path


def dns_record(key: rsa.RSAPrivateKey) -> bytes:
    """The TXT record a site would publish (RFC 6376 section 3.6.1)."""
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def delivered(sink: Any) -> bytes:
    """The message as the next hop got it, with CRLF line ends again (smtp-sink writes LF)."""
    [captured] = sink.messages(1)
    return captured.replace("\n", "\r\n").encode()


def test_signature_made_after_received_verifies(
    store: Store, smtp_sink: Any, start_proxy: StartProxy, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(65537, 2048)
    signer = DkimSigner.from_entries([("example.ac.uk", "sel2026", write_key(tmp_path, key))])
    add_users(store)
    proxy = start_proxy(store, smtp_sink.port, dkim=signer)
    with proxy.connect() as client:
        client.sendmail("alice@example.ac.uk", ["bob@other.org"], MESSAGE)
    message = delivered(smtp_sink)
    lookups: list[bytes] = []

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        lookups.append(name)
        return dns_record(key) if name == b"sel2026._domainkey.example.ac.uk." else b""

    assert dkim.verify(message, dnsfunc=dnsfunc)
    assert lookups == [b"sel2026._domainkey.example.ac.uk."]
    assert message.index(b"DKIM-Signature:") < message.index(b"(antiforgery) with ESMTPSA")  # on top of ours
    assert not dkim.verify(message.replace(b"Hello, Bob.", b"Hello, Eve."), dnsfunc=dnsfunc)


def test_no_signature_for_a_from_the_user_does_not_own_or_a_domain_without_key(
    sqlite_store: Store, smtp_sink: Any, start_proxy: StartProxy, tmp_path: Path
) -> None:
    key_file = write_key(tmp_path, rsa.generate_private_key(65537, 1024))
    signer = DkimSigner.from_entries([("example.ac.uk", "s", key_file)])
    add_users(sqlite_store)
    proxy = start_proxy(sqlite_store, smtp_sink.port, dkim=signer)
    with proxy.connect() as client:
        client.sendmail("alice@example.ac.uk", ["x@other.org"], MESSAGE.replace("alice@example", "bob@example"))
        client.sendmail("alice@example.ac.uk", ["y@other.org"], MESSAGE.replace("alice@example.ac.uk", "a@other.org"))
    messages = smtp_sink.messages(2)
    assert len(messages) == 2 and not any("DKIM-Signature" in m for m in messages)


def test_the_nearest_parent_domain_with_a_key_signs(tmp_path: Path) -> None:
    signer = DkimSigner([load_key("example.ac.uk", "s", write_key(tmp_path, rsa.generate_private_key(65537, 1024)))])
    assert signer.keys["example.ac.uk"] is signer.key_for("alice@Dept.Example.ac.uk")
    assert signer.key_for("x@other.org") is None and signer.key_for("x@ac.uk") is None
    assert "BEGIN" not in repr(signer.keys["example.ac.uk"])  # a traceback never shows the key


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = write_key(tmp_path, rsa.generate_private_key(65537, 1024), mode=0o640)
    with pytest.raises(DkimKeyError, match="accessible to group or others"):
        load_key("example.ac.uk", "s", path)


def test_only_rsa_keys_of_1024_bits_or_more(tmp_path: Path) -> None:
    with pytest.raises(DkimKeyError, match="must be RSA"):
        load_key("example.ac.uk", "s", write_key(tmp_path, ed25519.Ed25519PrivateKey.generate()))
    small = tmp_path / "small.pem"  # cryptography will not even make one: openssl will
    subprocess.run(["openssl", "genrsa", "-out", str(small), "512"], check=True, capture_output=True)
    small.chmod(0o600)
    with pytest.raises(DkimKeyError, match="RFC 8301 requires at least 1024"):
        load_key("example.ac.uk", "s", small)
