"""The Dovecot SASL backend: its line protocol without a socket, then against a real Dovecot."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from components import Dovecot, dovecot_password_hash, free_port

from gateway import config
from gateway.store import Store
from gateway.submission.auth import AuthOutcome, StoreAuthenticator, authenticator_from
from gateway.submission.dovecot_auth import (
    DovecotAuthenticator,
    DovecotClient,
    DovecotProtocolError,
    SocketAddress,
    dovecot_login,
    escape,
    parse_line,
    unescape,
)

HANDSHAKE = b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t7\nCUID\t1\nCOOKIE\tab12\nDONE\n"

# --- the protocol, sans I/O ----------------------------------------------------------------------


def ready_client() -> DovecotClient:
    client = DovecotClient()
    assert client.feed(HANDSHAKE) is None and client.ready
    return client


def test_auth_line_sends_plain_with_service_client_address_and_secured() -> None:
    line = ready_client().auth("alice", "s3cret", "192.0.2.1").decode()
    assert line.endswith("\n")
    command, request_id, mechanism, *options = line[:-1].split("\t")
    assert (command, request_id, mechanism) == ("AUTH", "1", "PLAIN")
    assert options[:-1] == ["service=smtp", "nologin", "secured", "rip=192.0.2.1"]
    assert base64.b64decode(options[-1].removeprefix("resp=")) == b"\0alice\0s3cret"


def test_handshake_announces_version_1_and_our_pid() -> None:
    assert DovecotClient.handshake(4242) == b"VERSION\t1\t2\nCPID\t4242\n"


def test_ok_gives_the_user_and_fail_a_bad_password() -> None:
    client = ready_client()
    client.auth("alice", "pw", None)
    reply = client.feed(b"OK\t1\tuser=alice@example.ac.uk\toriginal_user=ALICE\n")
    assert reply is not None and reply.outcome is AuthOutcome.OK and reply.user == "alice@example.ac.uk"
    client = ready_client()
    client.auth("alice", "pw", None)
    reply = client.feed(b"FAIL\t1\tuser=alice\treason=Password mismatch\n")
    assert reply is not None and reply.outcome is AuthOutcome.BAD_CREDENTIALS and reply.reason == "Password mismatch"


@pytest.mark.parametrize("flag", [b"temp", b"code=temp_fail"])
def test_fail_flagged_temporary_is_unavailable_not_a_wrong_password(flag: bytes) -> None:
    client = ready_client()
    client.auth("alice", "pw", None)
    reply = client.feed(b"FAIL\t1\tuser=alice\t" + flag + b"\n")
    assert reply is not None and reply.outcome is AuthOutcome.UNAVAILABLE


def test_a_reply_split_across_reads_is_assembled() -> None:
    client = DovecotClient()
    for i in range(len(HANDSHAKE)):
        assert client.feed(HANDSHAKE[i : i + 1]) is None
    client.auth("alice", "pw", None)
    assert client.feed(b"OK\t1\tus") is None
    reply = client.feed(b"er=alice\n")
    assert reply is not None and reply.user == "alice"


def test_tab_escaping_round_trips_and_is_applied_to_values() -> None:
    for value in ["plain", "a\tb", "\x01", "x\ny\rz\0"]:
        assert unescape(escape(value)) == value
        assert "\t" not in escape(value) and "\n" not in escape(value)
    assert parse_line(b"FAIL\t1\tuser=ali\x01tce\treason=a\x01lb").options == {"user": "ali\tce", "reason": "a\nb"}
    assert "rip=a\x01tb" in ready_client().auth("x", "y", "a\tb").decode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\n", "malformed command"),
        (b"ok\t1\n", "malformed command"),
        (b"VERSION\t1\n", "VERSION needs 2"),
        (b"VERSION\t2\t0\n", "protocol version 2"),
        (b"MECH\n", "MECH needs 1"),
        (b"\xff\xfe\n", "not UTF-8"),
        (b"VERSION\t1\t2\nMECH\tLOGIN\nDONE\n", "does not offer PLAIN"),
        (b"OK\t1\tuser=alice\n", "request we did not make"),
        (b"A" * 20000, "longer than"),
    ],
)
def test_malformed_server_lines_are_protocol_errors(data: bytes, message: str) -> None:
    with pytest.raises(DovecotProtocolError, match=message):
        DovecotClient().feed(data)


@pytest.mark.parametrize(
    "answer", [b"OK\t2\tuser=alice\n", b"OK\t1\n", b"OK\t1\tuser=\n", b"CONT\t1\tAAAA\n", b"FAIL\n"]
)
def test_answers_that_do_not_fit_our_request_are_protocol_errors(answer: bytes) -> None:
    client = ready_client()
    client.auth("alice", "pw", None)
    with pytest.raises(DovecotProtocolError):
        client.feed(answer)


def test_login_mapping_lowercases_and_strips_only_our_domains() -> None:
    ours = frozenset({"example.ac.uk"})
    assert dovecot_login("Alice@Example.ac.uk", ours) == "alice"
    assert dovecot_login("alice@elsewhere.org", ours) == "alice@elsewhere.org"
    assert dovecot_login("Bob", ours) == "bob"
    assert dovecot_login("carol@example.ac.uk", frozenset()) == "carol@example.ac.uk"


def test_socket_addresses_are_written_as_postfix_writes_them() -> None:
    assert SocketAddress.parse("inet:127.0.0.1:12345") == SocketAddress(host="127.0.0.1", port=12345)
    assert SocketAddress.parse("inet:[::1]:12345") == SocketAddress(host="::1", port=12345)
    assert SocketAddress.parse("/run/dovecot/auth-client") == SocketAddress(path="/run/dovecot/auth-client")
    assert SocketAddress.parse("unix:/run/x") == SocketAddress(path="/run/x")
    for bad in ["inet:localhost", "relative/path", "inet:h:99999"]:
        with pytest.raises(ValueError, match="inet:host:port"):
            SocketAddress.parse(bad)


# --- configuration and the factory ---------------------------------------------------------------


def test_auth_section_chooses_the_backend(tmp_path: Path, store: Store) -> None:
    text = '[site]\ndomains = ["example.ac.uk"]\n[auth]\nbackend = "dovecot"\n'
    text += 'dovecot_socket = "inet:127.0.0.1:12345"\nstrip_domain = true\ntimeout = 3\n'
    backend = authenticator_from(config.parse(tmp_path / "a.toml", text), store)
    assert isinstance(backend, DovecotAuthenticator)
    assert backend.address == SocketAddress(host="127.0.0.1", port=12345)
    assert backend.strip_domains == {"example.ac.uk"} and backend.timeout == 3.0
    assert isinstance(authenticator_from(config.parse(tmp_path / "a.toml", ""), store), StoreAuthenticator)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[auth]\nbackend = "ldap"\n', r'\[auth\] backend must be "store" or "dovecot"'),
        ('[auth]\nbackend = "dovecot"\ndovecot_socket = "auth-client"\n', r"\[auth\] dovecot_socket: .* neither"),
        ("[auth]\ntimeout = 0\n", r"\[auth\] timeout must be a positive number"),
    ],
)
def test_bad_auth_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.parse(tmp_path / "a.toml", text)


# --- against a real Dovecot ----------------------------------------------------------------------

# Dovecot's auth penalty delays further failures from one client address: each test uses its own.
USERS = {"alice": "{PLAIN}wonderland"}


def authenticate(
    backend: DovecotAuthenticator, user: str, password: str, client: str | None
) -> tuple[AuthOutcome, str | None]:
    result = asyncio.run(backend.authenticate(user, password, client))
    return result.outcome, result.login


@pytest.fixture
def running(dovecot: Callable[..., Dovecot]) -> Dovecot:
    return dovecot(users={**USERS, "bob@example.ac.uk": dovecot_password_hash("builder")})


def test_right_password_over_inet_and_unix_sockets(running: Dovecot) -> None:
    inet = DovecotAuthenticator(SocketAddress(host="127.0.0.1", port=running.port))
    assert authenticate(inet, "alice", "wonderland", "192.0.2.1") == (AuthOutcome.OK, "alice")
    unix = DovecotAuthenticator(SocketAddress(path=str(running.socket_path)))
    assert authenticate(unix, "alice", "wonderland", "192.0.2.1") == (AuthOutcome.OK, "alice")


def test_sha512_crypt_user_with_a_domain_maps_to_the_gateway_login(running: Dovecot) -> None:
    backend = DovecotAuthenticator(
        SocketAddress(host="127.0.0.1", port=running.port), strip_domains=frozenset({"example.ac.uk"})
    )
    assert authenticate(backend, "Bob@Example.ac.uk", "builder", "192.0.2.2") == (AuthOutcome.OK, "bob")


def test_wrong_password_is_bad_credentials(running: Dovecot) -> None:
    backend = DovecotAuthenticator(SocketAddress(host="127.0.0.1", port=running.port))
    assert authenticate(backend, "alice", "looking-glass", "192.0.2.3") == (AuthOutcome.BAD_CREDENTIALS, None)


def test_unknown_user_is_bad_credentials(running: Dovecot) -> None:
    backend = DovecotAuthenticator(SocketAddress(path=str(running.socket_path)))
    assert authenticate(backend, "mallory", "wonderland", "192.0.2.4") == (AuthOutcome.BAD_CREDENTIALS, None)


def test_dovecot_backend_failure_is_unavailable(dovecot: Callable[..., Dovecot]) -> None:
    """checkpassword's exit 111 means "temporary problem": Dovecot answers FAIL flagged temporary."""
    directory = Path(tempfile.mkdtemp(prefix="antiforgery-checkpassword-"))
    try:
        directory.chmod(0o755)  # Dovecot's auth worker runs the script
        script = directory / "checkpassword"
        script.write_text("#!/bin/sh\nexit 111\n")
        script.chmod(0o755)
        running = dovecot(passdb=f"driver = checkpassword\n  args = {script}")
        backend = DovecotAuthenticator(SocketAddress(host="127.0.0.1", port=running.port))
        assert authenticate(backend, "alice", "wonderland", "192.0.2.5") == (AuthOutcome.UNAVAILABLE, None)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_dovecot_down_is_unavailable(tmp_path: Path) -> None:
    nobody = DovecotAuthenticator(SocketAddress(host="127.0.0.1", port=free_port()))
    assert authenticate(nobody, "alice", "wonderland", "192.0.2.6") == (AuthOutcome.UNAVAILABLE, None)
    missing = DovecotAuthenticator(SocketAddress(path=str(tmp_path / "auth-client")))
    assert authenticate(missing, "alice", "wonderland", "192.0.2.6") == (AuthOutcome.UNAVAILABLE, None)


def test_silent_server_is_unavailable_after_the_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        backend = DovecotAuthenticator(SocketAddress(host="127.0.0.1", port=port), timeout=0.5)
        assert authenticate(backend, "alice", "wonderland", None) == (AuthOutcome.UNAVAILABLE, None)


def test_empty_or_nul_credentials_never_reach_dovecot() -> None:
    backend = DovecotAuthenticator(SocketAddress(host="127.0.0.1", port=1))
    for user, password in [("", "x"), ("alice", ""), ("alice\0bob", "x"), ("alice", "a\0b")]:
        assert authenticate(backend, user, password, None) == (AuthOutcome.BAD_CREDENTIALS, None)
