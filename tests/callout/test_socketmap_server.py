"""The Postfix socketmap adapter over a real socket on a real store: the sign map and the verify map."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from adapter_support import NetstringClient, unreachable_service
from service_harness import KEYRING, RunningService

from callout import socketmap_server
from callout.serve import adapters
from gateway.config import parse
from gateway.store import Mode, Store
from signed_sender import Reason, sign, sign_prvs, verify

LONG = "l" * 60 + "@example.ac.uk"  # fits the store, but not with a tag (64-octet local part)


@pytest.fixture
def port(store: Store, request: pytest.FixtureRequest) -> int:
    """The directory first, then the service: its first load sees it all, and no refresh woken by
    a NOTIFY of one of these writes can race (and outlive) an explicit one."""
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    store.add_address("alice", "a.smith@example.ac.uk")
    store.add_user("carol", "carol@example.ac.uk", mode=Mode.TESTING)
    store.add_user("bob", "bob@example.ac.uk")
    store.add_user("long", LONG, mode=Mode.FULL)
    store.add_alias("webmaster@dept.example.ac.uk", ["alice"])
    store.add_alias("team@dept.example.ac.uk", ["alice", "x@elsewhere.org"])
    running_service: RunningService = request.getfixturevalue("running_service")
    return running_service.listen("socketmap", socketmap_server.session_factory(running_service.service))


@pytest.fixture
def client(port: int) -> Iterator[NetstringClient]:
    connection = NetstringClient(port)
    yield connection
    connection.close()


def signed_value(reply: str) -> str:
    assert reply.startswith("OK "), reply
    return reply.removeprefix("OK ")


def assert_signs(client: NetstringClient, address: str) -> None:
    signed = signed_value(client.lookup("sign", address))
    assert verify(signed, KEYRING, time.time()).reason is Reason.VALID
    assert signed.lower().startswith(address.lower().partition("@")[0] + "=")
    assert signed.lower().endswith("@" + address.lower().partition("@")[2])


# --- sign ----------------------------------------------------------------------------------------


def test_users_in_full_and_testing_mode_are_signed(client: NetstringClient) -> None:
    assert_signs(client, "alice@example.ac.uk")
    assert_signs(client, "carol@example.ac.uk")


def test_extra_addresses_and_single_target_aliases_are_signed(client: NetstringClient) -> None:
    assert_signs(client, "a.smith@example.ac.uk")
    assert_signs(client, "webmaster@dept.example.ac.uk")


def test_users_not_opted_in_unknown_and_multi_target_aliases_are_not_found(client: NetstringClient) -> None:
    for address in ("bob@example.ac.uk", "nobody@example.ac.uk", "someone@other.org", "team@dept.example.ac.uk"):
        assert client.lookup("sign", address) == "NOTFOUND "


def test_keys_and_map_names_in_any_case_are_signed(client: NetstringClient) -> None:
    signed = signed_value(client.lookup("SIGN", "Alice@Example.AC.UK"))
    assert signed.startswith("Alice=") and signed.endswith("@Example.AC.UK")
    assert verify(signed, KEYRING, time.time()).reason is Reason.VALID


def test_already_tagged_senders_are_never_signed_twice(client: NetstringClient) -> None:
    now = time.time()
    for tagged in (
        sign("alice@example.ac.uk", KEYRING, now),
        sign("alice@example.ac.uk", KEYRING, now).upper(),
        sign_prvs("alice@example.ac.uk", KEYRING, now),
        "alice=sqqqqqqqqqqqqqqq@example.ac.uk",  # tag-like but forged: still not signed again
    ):
        assert client.lookup("sign", tagged) == "NOTFOUND ", tagged


def test_too_long_to_sign_is_not_found_and_logged(client: NetstringClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="antiforgery.sign"):
        assert client.lookup("sign", LONG) == "NOTFOUND "
    assert any("over the limit of 64" in record.getMessage() for record in caplog.records)


def test_partial_keys_are_never_signed(client: NetstringClient) -> None:
    for key in ("@example.ac.uk", "alice", "alice@", "example.ac.uk", "", "<>"):
        assert client.lookup("sign", key) == "NOTFOUND ", key


def test_every_sender_the_verify_map_rejects_the_sign_map_signs(client: NetstringClient) -> None:
    """Signing and verifying share one notion of protection, including address extensions."""
    candidates = ["alice@example.ac.uk", "ALICE@example.ac.uk", "alice=list@example.ac.uk", "a.smith@example.ac.uk"]
    candidates += ["webmaster@dept.example.ac.uk", "bob@example.ac.uk", "team@dept.example.ac.uk", "x@other.org"]
    for sender in candidates:
        rejected = client.lookup("verify", sender).startswith("OK 550")
        reply = client.lookup("sign", sender)
        assert reply.startswith("OK ") == rejected, (sender, reply)
        if rejected:
            assert client.lookup("verify", signed_value(reply)) == "NOTFOUND "


# --- verify --------------------------------------------------------------------------------------


def test_forged_sender_gets_a_550_access_action(client: NetstringClient) -> None:
    reply = client.lookup("verify", "alice@example.ac.uk")
    assert reply.startswith("OK 550 5.7.1 alice@example.ac.uk is protected against forgery")
    assert client.lookup("verify", "Webmaster@Dept.Example.AC.UK").startswith("OK 550 5.7.1 ")


def test_signed_and_unprotected_senders_are_not_found(client: NetstringClient) -> None:
    now = time.time()
    for sender in (sign("alice@example.ac.uk", KEYRING, now), "bob@example.ac.uk", "someone@other.org", "<>"):
        assert client.lookup("verify", sender) == "NOTFOUND ", sender
    assert client.lookup("verify", sign("alice@example.ac.uk", KEYRING, now).upper()) == "NOTFOUND "


def test_testing_mode_sender_gets_a_prepend_action(client: NetstringClient) -> None:
    assert client.lookup("verify", "carol@example.ac.uk") == (
        "OK PREPEND X-Antiforgery-Warning: sender carol@example.ac.uk failed the forgery check (unsigned)"
    )


def test_unloaded_directory_defers_verify_and_fails_sign_temporarily_never_a_guess() -> None:
    running = unreachable_service()
    try:
        assert running.service.snapshot is None
        client = NetstringClient(running.listen("socketmap", socketmap_server.session_factory(running.service)))
        assert client.lookup("verify", "alice@example.ac.uk").startswith("OK DEFER_IF_PERMIT 4.3.0 forgery check")
        assert client.lookup("sign", "alice@example.ac.uk").startswith("TEMP ")
        client.close()
    finally:
        running.stop()


# --- protocol ------------------------------------------------------------------------------------


def test_unknown_map_and_request_without_key_are_permanent_errors(client: NetstringClient) -> None:
    assert client.lookup("virtual", "alice@example.ac.uk") == "PERM unknown map"
    client.send(b"4:sign,")
    assert client.reply().startswith("PERM ")


def test_malformed_netstring_closes_the_connection(port: int) -> None:
    for garbage in (b"sign alice@example.ac.uk\n", b"5:sign x,", b"99999999:"):
        client = NetstringClient(port)
        client.send(garbage)
        assert client.closed_by_server(), garbage
        client.close()


def test_pipelined_requests_are_answered_in_order_on_one_connection(client: NetstringClient) -> None:
    requests = [b"verify alice@example.ac.uk", b"sign bob@example.ac.uk", b"sign alice@example.ac.uk", b"nope x"]
    client.send(b"".join(b"%d:%s," % (len(r), r) for r in requests))
    replies = [client.reply() for _ in requests]
    assert replies[0].startswith("OK 550 ") and replies[1] == "NOTFOUND "
    assert replies[2].startswith("OK alice=") and replies[3] == "PERM unknown map"


def test_split_netstrings_are_reassembled(client: NetstringClient) -> None:
    request = b"26:verify alice@example.ac.uk,"
    for i in range(len(request)):
        client.send(request[i : i + 1])
    assert client.reply().startswith("OK 550 ")


def test_real_postfix_client_postmap_queries_both_maps(port: int, tmp_path: Path, require_component) -> None:  # type: ignore[no-untyped-def]
    postmap = shutil.which("postmap") or "/usr/sbin/postmap"
    if not Path(postmap).exists():
        require_component("Postfix", "postmap is missing (Debian package postfix)")
    (tmp_path / "main.cf").write_text("compatibility_level = 3.6\n")

    def query(key: str, name: str) -> tuple[int, str]:
        table = f"socketmap:inet:127.0.0.1:{port}:{name}"
        result = subprocess.run([postmap, "-c", str(tmp_path), "-q", key, table], capture_output=True, text=True)
        return result.returncode, result.stdout.strip()

    code, signed = query("Alice@Example.AC.UK", "sign")
    assert code == 0 and verify(signed, KEYRING, time.time()).reason is Reason.VALID
    assert query("bob@example.ac.uk", "sign")[0] == 1  # not found
    code, action = query("alice@example.ac.uk", "verify")
    assert code == 0 and action.startswith("550 5.7.1 alice@example.ac.uk is protected")
    assert query(signed, "verify")[0] == 1


def test_serve_starts_socketmap_readsocket_and_http_unless_their_address_is_empty(
    running_service: RunningService,
) -> None:
    site = Path("/etc/antiforgery/antiforgery.toml")
    defaults = adapters(parse(site, ""), running_service.service)
    assert {name: defaults[name][0] for name in ("socketmap", "readsocket", "http")} == {
        "socketmap": "127.0.0.1:10041",
        "readsocket": "127.0.0.1:10042",
        "http": "127.0.0.1:10080",
    }
    off = parse(site, '[verification]\nsocketmap_listen = ""\nreadsocket_listen = ""\nhttp_listen = ""\n')
    assert not {"socketmap", "readsocket", "http"} & set(adapters(off, running_service.service))
