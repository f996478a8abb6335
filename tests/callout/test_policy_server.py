"""The Postfix policy adapter and the service behind it, over a real socket on a real store."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from service_harness import KEYRING, LineClient, RunningService

from callout import policy_server
from callout.decision import Rules
from gateway.store import EventKind, Mode, Store
from signed_sender import Policy, sign


def ask(client: LineClient, **attributes: str) -> str:
    body = {"request": "smtpd_access_policy", "protocol_state": "RCPT", **attributes}
    client.send("".join(f"{k}={v}\n" for k, v in body.items()).encode() + b"\n")
    reply = client.read_until(b"\n\n").decode()
    assert reply.startswith("action=")
    return reply.removeprefix("action=")


@pytest.fixture
def policy(running_service: RunningService) -> LineClient:
    store = running_service.store
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    store.add_user("carol", "carol@example.ac.uk", mode=Mode.TESTING)
    store.add_user("bob", "bob@example.ac.uk")
    store.add_alias("webmaster@dept.example.ac.uk", ["alice"])
    running_service.call(running_service.service.refresh())
    port = running_service.listen("policy", policy_server.session_factory(running_service.service))
    client = LineClient(port)
    yield client
    client.close()


def test_forged_sender_gets_550_with_enhanced_code_and_reason(policy: LineClient) -> None:
    action = ask(policy, sender="alice@example.ac.uk", recipient="x@other.org", instance="a1")
    assert action.startswith("550 5.7.1 alice@example.ac.uk is protected against forgery")


def test_signed_sender_and_unprotected_users_get_dunno(policy: LineClient) -> None:
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    assert ask(policy, sender=signed, recipient="x@other.org") == "DUNNO"
    assert ask(policy, sender="bob@example.ac.uk", recipient="x@other.org") == "DUNNO"
    assert ask(policy, sender="someone@other.org", recipient="alice@example.ac.uk") == "DUNNO"


def test_alias_of_opted_in_user_is_protected(policy: LineClient) -> None:
    assert ask(policy, sender="webmaster@dept.example.ac.uk", recipient="x@other.org").startswith("550 5.7.1")


def test_bounce_to_unsigned_address_rejected_and_to_signed_accepted(policy: LineClient) -> None:
    assert ask(policy, sender="", recipient="alice@example.ac.uk").startswith("550 5.7.1 bounce to")
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    assert ask(policy, sender="", recipient=signed) == "DUNNO"


def test_testing_mode_prepends_the_warning_once_per_message(policy: LineClient) -> None:
    first = ask(policy, sender="carol@example.ac.uk", recipient="a@other.org", instance="m1")
    second = ask(policy, sender="carol@example.ac.uk", recipient="b@other.org", instance="m1")
    other = ask(policy, sender="carol@example.ac.uk", recipient="a@other.org", instance="m2")
    assert first == "PREPEND X-Antiforgery-Warning: sender carol@example.ac.uk failed the forgery check (unsigned)"
    assert second == "DUNNO" and other == first


def test_pipelined_requests_on_one_connection_are_answered_in_order(policy: LineClient) -> None:
    one = b"request=smtpd_access_policy\nsender=alice@example.ac.uk\nrecipient=x@y.org\n\n"
    two = b"request=smtpd_access_policy\nsender=bob@example.ac.uk\nrecipient=x@y.org\n\n"
    policy.send(one + two)
    assert policy.read_until(b"\n\n").startswith(b"action=550")
    assert policy.read_until(b"\n\n") == b"action=DUNNO"


def test_other_request_types_get_dunno(policy: LineClient) -> None:
    policy.send(b"request=junk\nsender=alice@example.ac.uk\n\n")
    assert policy.read_until(b"\n\n") == b"action=DUNNO"


def test_garbage_closes_the_connection(policy: LineClient) -> None:
    policy.send(b"this is not the policy protocol\n")
    assert policy.closed_by_server()


def test_rejects_and_warnings_are_recorded_as_events(policy: LineClient, running_service: RunningService) -> None:
    ask(policy, sender="alice@example.ac.uk", recipient="x@other.org", client_address="192.0.2.9")
    ask(policy, sender="carol@example.ac.uk", recipient="x@other.org", instance="w")
    deadline = time.time() + 5
    while time.time() < deadline and len(running_service.store.list_events()) < 2:
        time.sleep(0.05)
    events = {e.kind: e for e in running_service.store.list_events()}
    assert events[EventKind.REJECT].address == "alice@example.ac.uk"
    assert events[EventKind.REJECT].client == "192.0.2.9" and events[EventKind.REJECT].reason == "unsigned"
    assert events[EventKind.WARN].address == "carol@example.ac.uk"


def test_a_change_in_the_store_is_seen_within_two_seconds(policy: LineClient, running_service: RunningService) -> None:
    assert ask(policy, sender="bob@example.ac.uk", recipient="x@other.org") == "DUNNO"
    running_service.store.set_mode("bob", Mode.FULL)
    changed = time.time()
    while ask(policy, sender="bob@example.ac.uk", recipient="x@other.org") == "DUNNO":
        assert time.time() - changed < 2.0, "the change was not seen within 2 seconds"
        time.sleep(0.05)
    signed = sign("bob@example.ac.uk", KEYRING, time.time())
    tomorrow = dt.datetime.fromtimestamp(time.time() + 86400, dt.UTC)
    running_service.store.blacklist_add(signed.lower(), "bob@example.ac.uk", "leaked", tomorrow)
    changed = time.time()
    while ask(policy, sender=signed, recipient="x@other.org") == "DUNNO":
        assert time.time() - changed < 2.0, "the blacklisting was not seen within 2 seconds"
        time.sleep(0.05)


def test_unreachable_store_at_start_defers_never_guesses() -> None:
    store = Store.open("postgresql+psycopg://nobody@127.0.0.1:1/none", check_schema=False)
    running = RunningService(store, Rules(keyring=KEYRING, policy=Policy())).start()
    try:
        client = LineClient(running.listen("policy", policy_server.session_factory(running.service)))
        assert ask(client, sender="alice@example.ac.uk", recipient="x@y.org").startswith("DEFER_IF_PERMIT 4.3.0")
        assert ask(client, sender="", recipient="alice@example.ac.uk").startswith("DEFER_IF_PERMIT 4.3.0")
        client.close()
    finally:
        running.stop()


def test_store_lost_after_start_keeps_serving_the_last_snapshot(store_url: str) -> None:
    Store.upgrade(store_url)
    store = Store.open(store_url)
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    running = RunningService(store, Rules(keyring=KEYRING, policy=Policy())).start()
    try:
        client = LineClient(running.listen("policy", policy_server.session_factory(running.service)))
        # Point the service at a dead database: refreshes now fail, answers must stay right.
        running.service.store = Store.open("postgresql+psycopg://nobody@127.0.0.1:1/none", check_schema=False)
        time.sleep(0.5)
        assert ask(client, sender="alice@example.ac.uk", recipient="x@y.org").startswith("550 5.7.1")
        assert running.call(running.service.refresh()) is False
        client.close()
    finally:
        running.service.store.close()
        running.service.store = store
        running.stop()


def test_a_slow_spf_lookup_at_data_holds_up_no_other_request(running_service: RunningService) -> None:
    # pyspf asks DNS synchronously, for seconds when a sender's domain wants it so (the SPF hint).
    released = threading.Event()

    def slow_spf(ip: str, sender: str, helo: str) -> str:
        released.wait(5)
        return "pass"

    session = policy_server.session_factory(running_service.service, "mail.example.ac.uk", slow_spf)
    port = running_service.listen("policy", session)
    data, other = LineClient(port), LineClient(port)
    try:
        data.send(
            b"request=smtpd_access_policy\nprotocol_state=DATA\nsender=bob@other.org\n"
            b"recipient=x@example.ac.uk\nclient_address=192.0.2.7\nhelo_name=mx.other.org\n\n"
        )
        time.sleep(0.2)  # the DATA request is in its SPF lookup
        other.sock.settimeout(2)
        assert ask(other, sender="someone@other.org", recipient="x@example.ac.uk") == "DUNNO"
        released.set()
        assert data.read_until(b"\n\n").decode() == (
            "action=PREPEND Authentication-Results: mail.example.ac.uk; x-signed-sender=none "
            "smtp.mailfrom=bob@other.org; spf=pass smtp.mailfrom=bob@other.org"
        )
    finally:
        released.set()
        data.close()
        other.close()
