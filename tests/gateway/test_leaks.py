"""`gateway.leaks.blacklist_leak`: the one rule for blacklisting a leaked tag, for CLI and web."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.leaks import LeakRefused, blacklist_leak
from gateway.store import Store
from signed_sender import Key, Keyring, Policy, sign, sign_fixed

KEYRING = Keyring([Key(0, b"s" * 32)], 0)
POLICY = Policy()
NOW = 1_790_000_000


def test_a_leaked_tag_is_blacklisted_until_it_expires(store: Store) -> None:
    leaked = sign("Alice@example.ac.uk", KEYRING, NOW, POLICY)
    report = blacklist_leak(store, leaked, KEYRING, NOW + 60, POLICY, "posted to a forum")
    assert report.blacklisted and report.signed_address == leaked.lower()
    assert report.base_address == "Alice@example.ac.uk"
    assert report.expires_at is not None and report.expires_at.timestamp() >= NOW + POLICY.max_age - 3600
    assert store.is_blacklisted(leaked)


def test_an_expired_tag_is_reported_but_not_stored(store: Store) -> None:
    old = sign("alice@example.ac.uk", KEYRING, NOW - 30 * 86400, POLICY)
    report = blacklist_leak(store, old, KEYRING, NOW, POLICY, "old")
    assert not report.blacklisted and store.blacklist_list() == []


@pytest.mark.parametrize("address", ["alice@example.ac.uk", "not an address"])
def test_an_address_without_a_tag_is_refused(store: Store, address: str) -> None:
    with pytest.raises(LeakRefused, match="carries no tag"):
        blacklist_leak(store, address, KEYRING, NOW, POLICY, "x")


def _with_another_last_mac_character(signed: str) -> str:
    local, _, domain = signed.partition("@")
    return f"{local[:-1]}{'b' if local[-1] == 'a' else 'a'}@{domain}"


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (_with_another_last_mac_character, "bad_mac"),
        (lambda signed: sign("alice@example.ac.uk", Keyring([Key(1, b"x" * 32)], 1), NOW, POLICY), "unknown_key"),
        (lambda signed: sign("alice@example.ac.uk", KEYRING, NOW + 60 * 86400 * 365, POLICY), "from_future"),
    ],
)
def test_a_tag_this_service_did_not_make_is_refused_not_stored(store: Store, forge: Any, reason: str) -> None:
    """Anyone could otherwise store tags that mean nothing, each until its forged time stamp expires."""
    forged = forge(sign("alice@example.ac.uk", KEYRING, NOW, POLICY))
    with pytest.raises(LeakRefused, match=f"not made by this service \\({reason}\\)"):
        blacklist_leak(store, forged, KEYRING, NOW, POLICY, "x")
    assert store.blacklist_list() == []


def test_a_fixed_tag_must_be_revoked_instead(store: Store) -> None:
    fixed = sign_fixed("alice@example.ac.uk", 7, KEYRING, POLICY)
    with pytest.raises(LeakRefused, match="revoke the fixed tag"):
        blacklist_leak(store, fixed, KEYRING, NOW, POLICY, "x")


def test_with_an_owner_only_that_users_addresses_and_aliases_are_accepted(store: Store) -> None:
    store.add_user("alice", "alice@example.ac.uk")
    store.add_user("bob", "bob@example.ac.uk")
    store.add_alias("web@dept.example.ac.uk", ["alice"])
    store.add_alias("team@dept.example.ac.uk", ["alice", "bob"])
    for address in ("alice@example.ac.uk", "web@dept.example.ac.uk"):
        assert blacklist_leak(store, sign(address, KEYRING, NOW, POLICY), KEYRING, NOW, POLICY, "x", owner="alice")
    for address in ("bob@example.ac.uk", "team@dept.example.ac.uk", "nobody@example.ac.uk"):
        with pytest.raises(LeakRefused, match="not one of your addresses"):
            blacklist_leak(store, sign(address, KEYRING, NOW, POLICY), KEYRING, NOW, POLICY, "x", owner="alice")
    assert len(store.blacklist_list()) == 2
