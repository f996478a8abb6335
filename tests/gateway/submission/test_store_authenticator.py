"""The store authenticator: right password, wrong password, unknown login, store down."""

from __future__ import annotations

import asyncio

import pytest

from gateway import passwords
from gateway.store import Store
from gateway.submission.auth import AuthOutcome, CredentialCache, StoreAuthenticator


def test_store_passwords(store: Store) -> None:
    store.add_user("alice", "alice@example.ac.uk", password_hash=passwords.hash_password("correct horse"))
    store.add_user("bob", "bob@example.ac.uk")  # no password: may not log in with one
    auth = StoreAuthenticator(store)

    def outcome(user: str, password: str) -> AuthOutcome:
        return asyncio.run(auth.authenticate(user, password, "192.0.2.1")).outcome

    assert asyncio.run(auth.authenticate("ALICE", "correct horse", None)).login == "alice"
    assert outcome("alice", "wrong") is AuthOutcome.BAD_CREDENTIALS
    assert outcome("nobody", "correct horse") is AuthOutcome.BAD_CREDENTIALS
    assert outcome("bob", "anything") is AuthOutcome.BAD_CREDENTIALS
    assert outcome("alice", "") is AuthOutcome.BAD_CREDENTIALS


def test_store_down_is_unavailable_not_a_wrong_password() -> None:
    dead = Store.open("postgresql+psycopg://nobody@127.0.0.1:1/none", check_schema=False)
    try:
        result = asyncio.run(StoreAuthenticator(dead).authenticate("alice", "pw", None))
        assert result.outcome is AuthOutcome.UNAVAILABLE
    finally:
        dead.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_verified_login_is_remembered_without_rehashing_until_it_expires(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add_user("alice", "alice@example.ac.uk", password_hash=passwords.hash_password("correct horse"))
    clock = Clock()
    auth = StoreAuthenticator(store, CredentialCache(ttl=300, size=10, clock=clock))
    hashes = []
    real_verify = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda h, p: hashes.append(p) or real_verify(h, p))

    def outcome(user: str, password: str) -> AuthOutcome:
        return asyncio.run(auth.authenticate(user, password, "192.0.2.1")).outcome

    assert outcome("alice", "correct horse") is AuthOutcome.OK
    assert outcome("ALICE", "correct horse") is AuthOutcome.OK
    assert hashes == ["correct horse"]  # the second login did not hash
    assert outcome("alice", "wrong") is AuthOutcome.BAD_CREDENTIALS  # never from the cache
    assert outcome("alice", "wrong") is AuthOutcome.BAD_CREDENTIALS
    assert hashes == ["correct horse", "wrong", "wrong"]  # failures always pay the hash
    clock.now += 301
    assert outcome("alice", "correct horse") is AuthOutcome.OK
    assert hashes[-1] == "correct horse" and len(hashes) == 4  # expired: hashed again


def test_a_changed_password_is_not_let_in_from_the_cache(store: Store) -> None:
    store.add_user("alice", "alice@example.ac.uk", password_hash=passwords.hash_password("old secret"))
    auth = StoreAuthenticator(store, CredentialCache(ttl=300, size=10))

    def outcome(password: str) -> AuthOutcome:
        return asyncio.run(auth.authenticate("alice", password, None)).outcome

    assert outcome("old secret") is AuthOutcome.OK
    store.set_password_hash("alice", passwords.hash_password("new secret"))
    assert outcome("old secret") is AuthOutcome.BAD_CREDENTIALS
    assert outcome("new secret") is AuthOutcome.OK


def test_the_cache_keeps_only_the_newest_logins() -> None:
    cache = CredentialCache(ttl=300, size=2)
    for login in ("a", "b", "c"):
        cache.remember(login, "hash", "pw")
    assert not cache.hit("a", "hash", "pw")
    assert cache.hit("b", "hash", "pw") and cache.hit("c", "hash", "pw")
    assert not cache.hit("c", "other hash", "pw") and not cache.hit("c", "hash", "other")
