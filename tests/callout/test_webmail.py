"""POST /v1/sign for a trusted webmail: over a real socket, on SQLite and PostgreSQL."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

import pytest
from adapter_support import unreachable_service
from service_harness import KEYRING, RunningService

from callout import http_server
from callout.webmail import authorised
from gateway import keyfile
from gateway.keyfile import KeyFileError
from gateway.store import Mode, Store
from signed_sender import Policy, verify

TOKEN = "0123456789abcdef0123456789abcdef-webmail"


@pytest.fixture
def port(store: Store, request: pytest.FixtureRequest) -> int:
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    store.add_user("bob", "bob@example.ac.uk", mode=Mode.FULL)
    store.add_user("dave", "dave@example.ac.uk", mode=Mode.OFF)
    store.add_fixed_tag("alice", "lists@other.org")
    running: RunningService = request.getfixturevalue("running_service")
    return running.listen("http", http_server.session_factory(running.service, TOKEN.encode()))


def sign_call(
    port: int, payload: Any, token: str | None = TOKEN, method: str = "POST"
) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        connection.request(method, "/v1/sign", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def test_opted_in_user_gets_one_signature_for_every_recipient(port: int) -> None:
    payload = {"login": "alice", "sender": "alice@example.ac.uk", "recipients": ["x@y.org", "z@other.org"]}
    status, _, body = sign_call(port, payload)
    assert status == 200 and body["signed"] is True
    senders = body["senders"]
    assert set(senders) == {"x@y.org", "z@other.org"}
    assert senders["x@y.org"] == senders["z@other.org"] != "alice@example.ac.uk"
    assert senders["x@y.org"].startswith("alice=") and senders["x@y.org"].endswith("@example.ac.uk")
    assert verify(senders["x@y.org"], KEYRING, time.time(), Policy()).ok


def test_recipient_with_a_fixed_tag_gets_the_fixed_address(port: int) -> None:
    payload = {"login": "alice", "sender": "alice@example.ac.uk", "recipients": ["x@y.org", "lists@other.org"]}
    _, _, body = sign_call(port, payload)
    fixed, timed = body["senders"]["lists@other.org"], body["senders"]["x@y.org"]
    assert fixed != timed and verify(fixed, KEYRING, time.time(), Policy()).ok
    _, _, again = sign_call(port, payload)
    assert again["senders"]["lists@other.org"] == fixed  # fixed: the same for every message


def test_user_not_opted_in_gets_the_sender_unchanged(port: int) -> None:
    status, _, body = sign_call(port, {"login": "dave", "sender": "dave@example.ac.uk", "recipients": ["x@y.org"]})
    assert status == 200 and body == {"senders": {"x@y.org": "dave@example.ac.uk"}, "signed": False}


def test_sender_the_user_does_not_own_is_403_with_the_reason(port: int) -> None:
    status, _, body = sign_call(port, {"login": "alice", "sender": "bob@example.ac.uk", "recipients": ["x@y.org"]})
    assert status == 403
    assert body == {
        "error": "alice may not send as bob@example.ac.uk; use your own address alice@example.ac.uk",
        "code": 553,
        "enhanced": "5.7.1",
    }


def test_unknown_login_is_503_try_again_not_a_signature(port: int) -> None:
    status, _, body = sign_call(port, {"login": "eve", "sender": "eve@example.ac.uk", "recipients": ["x@y.org"]})
    assert status == 503 and "not in the directory" in body["error"] and body["code"] == 451


@pytest.mark.parametrize("token", [None, "", "wrong-token-wrong-token-wrong-token", TOKEN + "x", TOKEN[:-1]])
def test_missing_or_wrong_token_is_401_with_a_challenge(port: int, token: str | None) -> None:
    status, headers, body = sign_call(
        port, {"login": "alice", "sender": "alice@example.ac.uk", "recipients": ["x@y.org"]}, token
    )
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="antiforgery"'
    assert "Bearer" in body["error"] and "senders" not in body


def test_bearer_scheme_is_case_insensitive_and_other_schemes_are_refused() -> None:
    token = TOKEN.encode()
    assert authorised(f"bearer {TOKEN}", token) and authorised(f"BEARER  {TOKEN} ", token)
    assert not authorised(f"Basic {TOKEN}", token) and not authorised(TOKEN, token)
    assert not authorised("Bearer caf\u00e9", token)


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"{nope", "not valid JSON"),
        (b"[]", "JSON object"),
        ({"login": "alice", "sender": "alice@example.ac.uk"}, "recipients is required"),
        ({"login": "alice", "sender": "alice@example.ac.uk", "recipients": []}, "list of 1 to"),
        ({"login": "alice", "sender": "alice@example.ac.uk", "recipients": "x@y.org"}, "list of 1 to"),
        ({"login": "alice", "sender": "alice@example.ac.uk", "recipients": [3]}, "must be a string"),
        ({"login": "alice", "sender": "alice@example.ac.uk", "recipients": ["nobody"]}, "not an address"),
        ({"login": "", "sender": "alice@example.ac.uk", "recipients": ["x@y.org"]}, "login must not be empty"),
        ({"login": "alice", "sender": "a\nb@c", "recipients": ["x@y.org"]}, "control characters"),
        ({"login": "alice", "sender": "alice@example.ac.uk", "recipients": ["x@y.org"], "cc": []}, "unknown field"),
    ],
)
def test_malformed_sign_requests_are_400_naming_the_field(port: int, payload: Any, words: str) -> None:
    status, _, body = sign_call(port, payload)
    assert status == 400 and words in body["error"]


def test_only_post_is_allowed(port: int) -> None:
    status, headers, _ = sign_call(port, b"", method="GET")
    assert status == 405 and headers["Allow"] == "POST"


def test_without_a_configured_token_the_route_does_not_exist(running_service: RunningService) -> None:
    port = running_service.listen("http", http_server.session_factory(running_service.service))
    status, _, body = sign_call(port, {"login": "alice", "sender": "alice@example.ac.uk", "recipients": ["x@y.org"]})
    assert status == 404 and "no such resource" in body["error"]


def test_unloaded_directory_is_503() -> None:
    running = unreachable_service()
    try:
        port = running.listen("http", http_server.session_factory(running.service, TOKEN.encode()))
        payload = {"login": "alice", "sender": "alice@example.ac.uk", "recipients": ["x@y.org"]}
        status, _, body = sign_call(port, payload)
        assert status == 503 and "try again later" in body["error"]
    finally:
        running.stop()


# --- the token file ------------------------------------------------------------------------------


def test_token_file_must_be_private_and_long_enough(tmp_path: Path) -> None:
    path = tmp_path / "webmail.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="accessible to group or others"):
        keyfile.load_token(path)
    path.chmod(0o600)
    assert keyfile.load_token(path) == TOKEN.encode()
    path.write_text("short\n")
    with pytest.raises(KeyFileError, match="at least 32 printable"):
        keyfile.load_token(path)
    with pytest.raises(KeyFileError, match="no token file"):
        keyfile.load_token(tmp_path / "missing")


def test_serve_reads_the_configured_token_file_relative_to_the_config(tmp_path: Path) -> None:
    from callout.serve import adapters
    from gateway import config

    (tmp_path / "webmail.token").write_text(TOKEN)
    (tmp_path / "webmail.token").chmod(0o600)
    loaded = config.parse(tmp_path / "a.toml", '[verification]\nwebmail_token_file = "webmail.token"\n')
    assert loaded.verification.webmail_token_file == str(tmp_path.resolve() / "webmail.token")
    running = unreachable_service()
    try:
        http = adapters(loaded, running.service)["http"][1]
        assert callable(http)
        (tmp_path / "webmail.token").chmod(0o644)
        with pytest.raises(KeyFileError, match="chmod 600"):
            adapters(loaded, running.service)
    finally:
        running.stop()
